"""Loading a pipeline's YAML without letting the file take the machine down.

PyYAML's ``SafeLoader`` constructs no Python objects beyond plain data, but it still follows
aliases without limit (a 540-byte "billion laughs" file expands to gigabytes) and composes
nested nodes by recursion (a file nested ~500 levels deep raises ``RecursionError``). The
limits here, checked while the node graph is composed and before anything is constructed:

- at most :data:`MAX_BYTES` of text, :data:`MAX_DEPTH` levels of nesting, :data:`MAX_ALIASES`
  aliases (``*name``), and :data:`MAX_NODES` nodes once every alias is expanded;
- a key given twice in one mapping is an error (PyYAML silently keeps the last).

Each limit is one ``yaml.YAMLError`` with the line it was hit on. PyYAML has no setting for
any of these (only a recursion limit it does not check), so they are counted here by hand.
"""

from __future__ import annotations

from typing import Any

import yaml

from chainfleet.redact import clip

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "LimitExceeded", "load_limited"]

MAX_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 100_000


class LimitExceeded(yaml.YAMLError):
    """The file passes one of the limits (``problem_mark``: where, when known)."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark  # as PyYAML's own errors: ``.line`` is 0-based


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def _next_event(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise LimitExceeded(f"more than {MAX_ALIASES} aliases (*name)", _mark(self._next_event()))
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise LimitExceeded(f"nested more than {MAX_DEPTH} levels deep", _mark(self._next_event()))
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {clip(repr(key), 80)} is given twice (first on line {seen[key]})",
                    key_node.start_mark,
                )
            if isinstance(key, str):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _mark(event: Any) -> Any:
    return getattr(event, "start_mark", None)


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Nodes once every alias is expanded, counted on the shared graph (never expanded)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a cycle (possible only through aliases) counts once
    size = 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, memo) + _expanded_size(value, memo)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            size += _expanded_size(item, memo)
    memo[id(node)] = size = min(size, MAX_NODES + 1)
    return size


def load_limited(text: str) -> tuple[Any, Any]:
    """``(data, root node)`` of one YAML document, within the limits; raises ``yaml.YAMLError``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise LimitExceeded(f"larger than {MAX_BYTES:,} bytes")
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        if _expanded_size(root, {}) > MAX_NODES:
            raise LimitExceeded(f"more than {MAX_NODES:,} values once its aliases are expanded")
        return loader.construct_document(root), root
    finally:
        loader.dispose()
