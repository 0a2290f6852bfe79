"""A user's own Python objects named in a pipeline, found beside the pipeline file.

A pipeline names code as ``package.module:attr``: a tool step (``tool: tools:web_search``), a
gate function, a ``check:`` in a gate list. :func:`import_object` imports the module and returns
the attribute, and every failure is one ``ValueError`` a user can act on.

While a pipeline file loads, :func:`beside` records its folder, so that two things written
relative to the file work wherever the command runs from: a ``schema_file`` (read through
:func:`pipeline_folder`) and a module that lies next to the file but nowhere on ``sys.path``
(``tools.py`` or ``tools/`` beside ``content.yaml``). That folder is appended to ``sys.path``, so
it is searched after everything else and never shadows an installed module::

    with beside(Path("examples")):
        search = import_object("tools:web_search")   # examples/tools.py, if not installed
"""

from __future__ import annotations

import contextvars
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["beside", "import_object", "pipeline_folder"]

#: the folder of the pipeline file being loaded (a contextvar, not pydantic's validation
#: context: Pipeline's own __init__ drops that)
_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("pipeline_folder", default=None)


@contextmanager
def beside(folder: Path | None) -> Iterator[None]:
    """Within the block, relative schema files and imports are looked up in ``folder`` too."""
    token = _FOLDER.set(folder)
    try:
        yield
    finally:
        _FOLDER.reset(token)


def pipeline_folder() -> Path | None:
    """The folder of the pipeline file being loaded (``None`` for one built in Python)."""
    return _FOLDER.get()


def import_object(spec: str) -> Any:
    """The object ``"package.module:attr"`` names; ``ValueError`` saying what is wrong if none."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not 'package.module:function'")
    try:
        module = _import_beside_pipeline(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no {attr!r}") from exc


def _import_beside_pipeline(module_name: str) -> Any:
    """Import ``module_name``; when it is found nowhere on ``sys.path`` but lies next to the
    pipeline file, from that folder, which is then searched after everything else."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.partition(".")[0]
        base = _FOLDER.get()
        if exc.name != top or base is None:
            raise
        folder = str(base.resolve())
        if not ((base / f"{top}.py").is_file() or (base / top).is_dir()) or folder in sys.path:
            raise
        sys.path.append(folder)
        return importlib.import_module(module_name)
