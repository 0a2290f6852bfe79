"""The one way a pipeline's templates compile and render: prompts, systems, gate templates.

Every template of a pipeline (a stage's ``prompt`` and ``system``, a judge's ``rubric``, the
terms of ``must_include`` and ``must_not_include``, a ``when:`` expression) is compiled here, in
Jinja2's sandbox (:data:`SANDBOX`): no private attributes, no unsafe calls, and a variable
nothing provides is an error rather than an empty string. A pipeline that sets
``sandbox: false`` is trusted as code, and its templates compile in :data:`OPEN` instead. Either
way a trailing newline is kept and nothing is HTML-escaped: the text goes to a model, not a page.

Neither environment has a loader: a template cannot read another file, so ``{% include %}``,
``{% extends %}`` and ``{% import %}`` are refused when the template compiles, not when it first
renders. The pipeline checks templates before any call: their syntax and tags
(:func:`compile_template`), the names they read (:func:`variables`), and attributes that lead out
of the sandbox (:func:`private_names`)::

    variables("Write on {{ topic }} from {{ research.facts }}")   # {'topic', 'research'}

At run time :func:`render` turns any failure of a template (a missing variable, the sandbox's
refusal, a division by zero) into ``InvalidRequest``: that item fails, the run goes on.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from chainfleet.errors import InvalidRequest
from chainfleet.redact import clip

__all__ = [
    "OPEN",
    "SANDBOX",
    "compile_expression",
    "compile_template",
    "expression_tree",
    "private_names",
    "render",
    "variables",
]

#: templates render sandboxed (no private attributes, no unsafe calls) unless ``sandbox: false``
SANDBOX = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
#: for a pipeline with ``sandbox: false``, trusted as code
OPEN = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
#: tags that read another template: there is no loader, so each is refused when it compiles
_LOADING = {
    jinja2.nodes.Include: "include",
    jinja2.nodes.Extends: "extends",
    jinja2.nodes.Import: "import",
    jinja2.nodes.FromImport: "from ... import",
}


def compile_template(source: str, *, trusted: bool = False) -> jinja2.Template:
    """``source`` compiled in the sandbox (in :data:`OPEN` when ``trusted``).

    A syntax error, or a tag that would load another template, is a ``ValueError`` naming its line.
    """
    env = OPEN if trusted else SANDBOX
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on its line {exc.lineno}: {exc.message}") from exc
    for node in tree.find_all(tuple(_LOADING)):
        raise ValueError(
            f"{{% {_LOADING[type(node)]} %}} on the template's line {node.lineno}: templates cannot "
            "read other files (write the text into the pipeline instead)"
        )
    template = env.from_string(tree)
    parts = _plain_parts(tree, env)
    if parts is not None:
        _PLAIN[template] = parts
    return template


#: templates that are only text and ``{{ name }}`` (most prompts), as (text, name) pairs:
#: :func:`render` joins them itself, which gives Jinja2's output (``str`` of each value, no
#: escaping) in a tenth of its time; Jinja2 builds a context per render (~15 us a call)
_PLAIN: weakref.WeakKeyDictionary[jinja2.Template, tuple[tuple[str, str | None], ...]] = (
    weakref.WeakKeyDictionary()
)
#: names Jinja2 gives a meaning of its own inside a template: never taken from the context here
_SPECIAL = frozenset({"self", "loop", "caller", "varargs", "kwargs", "super"})


def _plain_parts(
    tree: jinja2.nodes.Template, env: jinja2.Environment
) -> tuple[tuple[str, str | None], ...] | None:
    """``tree`` as (text, name) pairs when it holds only text and plain ``{{ name }}``; else None."""
    parts: list[tuple[str, str | None]] = []
    for node in tree.body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                parts.append((child.data, None))
            elif (
                isinstance(child, jinja2.nodes.Name)
                and child.ctx == "load"
                and child.name not in _SPECIAL
                and child.name not in env.globals
            ):
                parts.append(("", child.name))
            else:
                return None
    return tuple(parts)


def expression_tree(source: str) -> jinja2.nodes.Template:
    """A ``when:`` expression parsed as a template that assigns it, for the load checks."""
    expr = Parser(SANDBOX, source, state="variable").parse_expression()
    return jinja2.nodes.Template([jinja2.nodes.Assign(jinja2.nodes.Name("result", "store"), expr)], lineno=1)


def compile_expression(source: str, *, trusted: bool = False) -> jinja2.environment.TemplateExpression:
    """A ``when:`` expression compiled in the sandbox; a syntax error is a ``ValueError``."""
    env = OPEN if trusted else SANDBOX
    try:
        return env.compile_expression(source, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"does not parse: {exc.message}") from exc


def render(
    template: jinja2.Template, context: Mapping[str, Any], *, field: str, stage: str | None = None
) -> str:
    """``template`` rendered for one item; any failure is ``InvalidRequest`` naming ``field``."""
    parts = _PLAIN.get(template)
    if parts is not None:
        try:
            return "".join([text if name is None else str(context[name]) for text, name in parts])
        except Exception:  # noqa: S110 - a missing name or a failing __str__: Jinja2 says what
            pass
    try:
        return template.render(context)
    except jinja2.UndefinedError as exc:
        raise InvalidRequest(f"{field} template: {exc.message}", stage=stage) from exc
    except SecurityError as exc:
        raise InvalidRequest(f"{field} template: the sandbox refused it: {clip(exc)}", stage=stage) from exc
    except Exception as exc:  # the item's data met the template: that item fails, not the run
        raise InvalidRequest(
            f"{field} template failed for this item: {type(exc).__name__}: {clip(exc)}", stage=stage
        ) from exc


def variables(source: str) -> set[str]:
    """The names a template reads that it does not set itself (its inputs)."""
    return jinja2.meta.find_undeclared_variables(SANDBOX.parse(source))


def private_names(tree: jinja2.nodes.Node) -> list[str]:
    """Attribute and item names starting with ``_`` anywhere in a template."""
    found = [node.attr for node in tree.find_all(jinja2.nodes.Getattr) if node.attr.startswith("_")]
    for node in tree.find_all(jinja2.nodes.Getitem):
        if isinstance(node.arg, jinja2.nodes.Const) and str(node.arg.value).startswith("_"):
            found.append(str(node.arg.value))
    return found
