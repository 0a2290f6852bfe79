"""Where a problem in a pipeline is: one line naming the file, its YAML line, the stage and field.

Every problem a pipeline has is found before any model is called, and each one is reported as
a :class:`~chainfleet.errors.PipelineError` whose ``where`` a user can jump to in an editor::

    content.yaml:12: stage 'write' (stages[1]), field 'prompt': uses {{ reserch }}, ...

A problem is first known by its *location*, a path into the pipeline's data such as
``("stages", 1, "prompt")`` (pydantic's ``loc``). :func:`place` turns a location into that
``where``, finding the line in the YAML node tree the file was composed into
(:func:`yaml_line`); a pipeline built in Python has no tree, and its ``where`` names the stage
and field alone. :func:`explain` rewrites pydantic's validation errors in the same terms, and
:func:`relocate` places the problems the pipeline's own checks found.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

from chainfleet.errors import ConfigError, PipelineError
from chainfleet.pipeline.gates import SpecError
from chainfleet.redact import clip

__all__ = ["explain", "located", "place", "relocate", "stage_names", "yaml_line"]

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def located(
    reason: str, loc: tuple[Any, ...], source: str | None, root: Any, names: list[Any]
) -> PipelineError:
    """A ``PipelineError`` for ``reason`` at ``loc``, placed (``where``) and keeping ``loc``."""
    error = PipelineError(reason, where=place(source, root, loc, names))
    error.loc = loc
    return error


def stage_names(data: Mapping[str, Any]) -> list[Any]:
    """The stage names in a pipeline's plain data, by index (``None`` where a stage has none)."""
    stages = data.get("stages")
    listed = stages if isinstance(stages, list) else []
    return [s.get("name") if isinstance(s, Mapping) else None for s in listed]


def explain(
    exc: ValidationError,
    data: Mapping[str, Any],
    source: str | None,
    root: Any,
    *,
    pipeline_keys: Collection[str],
    stage_keys: Collection[str],
) -> PipelineError:
    """Turn every pydantic error into one line naming the YAML line, stage and field; the
    first carries the others (``PipelineError.more``). The keys a pipeline and a stage accept
    give an unknown key its "did you mean"."""
    names = stage_names(data)
    keys = (list(pipeline_keys), list(stage_keys))
    # gather says each line once: a union's branches can repeat the same complaint
    first = PipelineError.gather([_explain_one(error, source, root, names, keys) for error in exc.errors()])
    assert isinstance(first, PipelineError)
    return first


def _explain_one(
    error: Any, source: str | None, root: Any, names: list[Any], keys: tuple[list[str], list[str]]
) -> PipelineError:
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):
        loc = (*loc, *cause.loc)
    in_stage = len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int)
    rest = loc[2:] if in_stage else loc
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = keys[1] if in_stage and len(rest) == 1 else keys[0]
        hint = difflib.get_close_matches(str(rest[-1])[:100], known, n=1) if rest else []
        message = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    elif kind == "missing":
        message = "is required"
    elif kind == "too_short" and loc == ("stages",):
        message = "a pipeline needs at least one stage"
    elif kind in ("dict_type", "model_type", "model_attributes_type") and in_stage and not rest:
        message = "a stage is a mapping with a 'name' and a 'prompt' (or a 'tool')"
    elif kind in _RANGE_ERRORS or kind.endswith("_parsing") or kind.endswith("_type"):
        message += f" (got {clip(repr(error.get('input')))})"
    return located(message, loc, source, root, names)


def relocate(exc: PipelineError, data: Mapping[str, Any], source: str | None, root: Any) -> ConfigError:
    """``exc`` and the problems it carries, each with a location placed in ``source``'s lines."""
    names = stage_names(data)
    placed: list[ConfigError] = []
    for problem in (exc, *exc.more):
        at = getattr(problem, "loc", None)
        placed.append(problem if at is None else located(problem.reason, at, source, root, names))
    return ConfigError.gather(placed, left_off=exc.left_off)


def place(source: str | None, root: Any, loc: tuple[Any, ...], names: list[Any]) -> str:
    """``file:line: stage 'x' (stages[i]), field 'f'`` for a location in a pipeline."""
    line = yaml_line(root, loc) if root is not None else None
    where = (source or "pipeline") + (f":{line}" if line else "")
    parts: list[str] = []
    rest = loc
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        index = loc[1]
        name = names[index] if index < len(names) else None
        parts.append(f"stage {clip(repr(name), 80)} (stages[{index}])" if name else f"stages[{index}]")
        rest = loc[2:]
    if rest:
        parts.append(f"field {clip(repr('.'.join(str(p) for p in rest)), 120)}")
    return f"{where}: {', '.join(parts)}" if parts else where


def yaml_line(root: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based YAML line of the node at ``loc``, or of its nearest parent that exists."""
    import yaml

    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                break
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
