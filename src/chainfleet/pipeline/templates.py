"""The Jinja2 environments a stage's ``prompt`` and ``system`` templates compile in.

Templates render in Jinja2's sandbox (:data:`SANDBOX`): no private attributes, no unsafe calls,
and a variable nothing provides is an error rather than an empty string. A pipeline that sets
``sandbox: false`` is trusted as code, and its templates compile in :data:`OPEN` instead. Either
way a trailing newline is kept and nothing is HTML-escaped: the text goes to a model, not a page.

The pipeline checks templates before any call: their syntax (:func:`compile_template`), the
names they read (:func:`variables`), and attributes that lead out of the sandbox
(:func:`private_names`)::

    variables("Write on {{ topic }} from {{ research.facts }}")   # {'topic', 'research'}
"""

from __future__ import annotations

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["OPEN", "SANDBOX", "compile_template", "private_names", "variables"]

#: templates render sandboxed (no private attributes, no unsafe calls) unless ``sandbox: false``
SANDBOX = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
#: for a pipeline with ``sandbox: false``, trusted as code
OPEN = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def compile_template(source: str) -> jinja2.Template:
    """``source`` compiled in the sandbox; a syntax error is a ``ValueError`` naming its line."""
    try:
        return SANDBOX.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on its line {exc.lineno}: {exc.message}") from exc


def variables(source: str) -> set[str]:
    """The names a template reads that it does not set itself (its inputs)."""
    return jinja2.meta.find_undeclared_variables(SANDBOX.parse(source))


def private_names(tree: jinja2.nodes.Template) -> list[str]:
    """Attribute and item names starting with ``_`` anywhere in a template."""
    found = [node.attr for node in tree.find_all(jinja2.nodes.Getattr) if node.attr.startswith("_")]
    for node in tree.find_all(jinja2.nodes.Getitem):
        if isinstance(node.arg, jinja2.nodes.Const) and str(node.arg.value).startswith("_"):
            found.append(str(node.arg.value))
    return found
