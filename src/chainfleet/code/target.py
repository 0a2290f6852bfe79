"""The Python door's target: ``my_chain.py:article`` or ``package.module:article``, loaded and
checked before any call.

``chainfleet run``, ``compare`` and ``resume`` take a target where a YAML file would be: a
Python file and a function in it (``my_chain.py:article``) or an importable module and a
function (``mychains.content:article``). :func:`load_target` imports it and
:func:`check_function` checks it is the shape of a chain: an ``async def`` of two parameters,
the item and ``fleet``. Each problem is one line (exit 2 before any call) naming the file, the
function and what is wrong:

- the file does not exist or does not import (its error and line);
- it has no such function (with a did-you-mean);
- the function is not async, or does not take (item, fleet).

Example::

    fn = load_target("examples/own_chain.py:article")
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.redact import clip

__all__ = ["check_function", "is_target", "load_pipeline", "load_target", "resolved", "target_file"]


def is_target(text: str) -> bool:
    """Whether a ``run`` argument names a Python chain rather than a pipeline file."""
    head, sep, attr = text.rpartition(":")
    if not sep or not head or not attr.isidentifier():
        return False
    if head.endswith(".py"):
        return True
    return not head.endswith((".yaml", ".yml")) and all(part.isidentifier() for part in head.split("."))


def load_pipeline(text: str) -> Pipeline:
    """What ``chainfleet run`` runs: a pipeline file, or a Python target as a code pipeline."""
    if is_target(text):
        return Pipeline.from_function(load_target(text))
    return Pipeline.from_yaml(text)


def target_file(text: str) -> str:
    """The file a run's target lives in (a pipeline file, or a Python target's ``.py``; a
    module target has none here: its text is returned), for fingerprints and resume."""
    head, _, _ = text.rpartition(":")
    return head if is_target(text) and head.endswith(".py") else text


def resolved(text: str) -> str:
    """``text`` with its file made absolute (a resume may start elsewhere)."""
    if not is_target(text):
        return str(Path(text).resolve())
    head, _, attr = text.rpartition(":")
    return f"{Path(head).resolve()}:{attr}" if head.endswith(".py") else text


def load_target(text: str) -> Callable[..., Any]:
    """The function ``text`` names, checked (``ConfigError`` naming the problem otherwise)."""
    head, _, attr = text.rpartition(":")
    if head.endswith(".py"):
        module = _import_file(Path(head))
        where = head
    else:
        module = _import_module(head)
        where = head
    fn = getattr(module, attr, None)
    if fn is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        hint = difflib.get_close_matches(attr, names, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"no function {attr!r} in it{did}", where=where)
    check_function(fn, where=where, name=attr)
    return fn  # type: ignore[no-any-return]


def check_function(fn: Any, *, where: str, name: str | None = None) -> None:
    """Raise ``ConfigError`` unless ``fn`` is ``async def fn(item, fleet)``."""
    name = name or getattr(fn, "__name__", None) or repr(fn)
    if not callable(fn):
        raise ConfigError(f"{name!r} is not a function (it is {type(fn).__name__})", where=where)
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
    if not inspect.iscoroutinefunction(fn) and not inspect.iscoroutinefunction(call):
        raise ConfigError(
            f"{name!r} is not an async function: write `async def {name}(item, fleet)`", where=where
        )
    problem = _arity_problem(fn)
    if problem:
        raise ConfigError(f"{name!r} {problem}: a chain takes two, the item and fleet", where=where)


def _arity_problem(fn: Callable[..., Any]) -> str | None:
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    required = [p for p in positional if p.default is p.empty]
    kw_required = [p for p in parameters if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
    if kw_required:
        return f"needs keyword argument {kw_required[0].name!r}"
    if len(required) > 2:
        return f"takes {len(required)} arguments"
    if len(positional) < 2 and not varargs:
        return f"takes {len(positional)} argument{'' if len(positional) == 1 else 's'}"
    return None


def _import_file(path: Path) -> Any:
    """Import a Python file as a module (its folder first on ``sys.path``, for its own imports)."""
    if not path.is_file():
        raise ConfigError("no such file", where=str(path))
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else None
    name = name or f"chainfleet_chain_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError("not a Python file", where=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error is theirs, said in one line
        del sys.modules[name]
        said, line = _said(exc, path)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"cannot import it: {said}", where=where) from None
    return module


def _import_module(name: str) -> Any:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except Exception as exc:
        said, _ = _said(exc, None)
        raise ConfigError(f"cannot import module {name!r}: {said}", where=name) from None


def _said(exc: BaseException, path: Path | None) -> tuple[str, int | None]:
    """An import error in one line (its type and message), and the line of the user's file."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}", exc.lineno
    frames = list(traceback.extract_tb(exc.__traceback__))
    if path is not None:
        frames = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    line = frames[-1].lineno if frames else None
    return f"{type(exc).__name__}: {clip(exc, 300)}", line
