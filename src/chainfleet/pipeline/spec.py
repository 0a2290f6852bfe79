"""Stages and pipelines: what a chain is, loaded from YAML or built in Python, checked before any call.

A :class:`Pipeline` is an ordered list of :class:`Stage` objects. Each stage is either one LLM call
(a Jinja2 ``prompt`` template, optional ``system`` template, ``model``, ``max_tokens``,
``temperature``) or a *tool step*: a plain async Python function that receives the same context a
template would. A stage sees ``id``, the item's fields, and every earlier stage's output by its
name.

Everything that can be checked before a model is called is checked here, and each problem is one
line naming the file (and YAML line), the stage and the field: unknown keys, duplicate stage
names, template syntax, a template naming a later stage or a variable nothing provides, and an
unknown model provider.

Example::

    pipeline = Pipeline.from_yaml("examples/content.yaml")
    pipeline = Pipeline(
        input="topic",
        stages=[
            Stage(name="research", prompt="Research {{ topic }}."),
            Stage(name="write", prompt="Write an article on {{ topic }} from:\\n{{ research }}"),
        ],
    )
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from chainfleet.errors import ConfigError, InvalidOutput, PipelineError
from chainfleet.pipeline.contracts import Contract, strict_schema, template_paths, unknown_property
from chainfleet.pipeline.gates import Check, JudgeCheck, SpecError, parse_gate
from chainfleet.pipeline.review_rules import ReviewRule
from chainfleet.redact import clip

__all__ = [
    "BatchSettings",
    "Gate",
    "ModelLimits",
    "Pipeline",
    "ProviderSettings",
    "SimSettings",
    "Stage",
    "ToolFn",
    "add_provider_kind",
    "parse_model",
    "provider_kinds",
]

#: a tool step: ``async def web_search(context) -> str``
ToolFn = Callable[[Mapping[str, Any]], Awaitable[str]]
#: a quality gate: returns ``None`` when the output passes, else the reason it fails
Gate = Callable[[str], "str | None"]

BUILTIN_PROVIDERS = ("sim", "openai", "anthropic")
#: the entry point group installed packages declare provider kinds in (see chainfleet.providers.registry)
PROVIDER_GROUP = "chainfleet.providers"
#: kinds registered in Python: chainfleet.providers.registry.register adds each here
_REGISTERED_KINDS: set[str] = set()
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: the folder a ``schema_file`` is relative to while a pipeline file loads
_SCHEMA_BASE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("schema_base", default=None)
#: template variables every LLM stage has: a revision's gate feedback and the output it revises
REVISION_VARIABLES = ("feedback", "previous")
#: templates render sandboxed (no private attributes, no unsafe calls) unless ``sandbox: false``
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_OPEN_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimSettings(_Settings):
    """The built-in simulated model: latency per call, its jitter, injected failures, seed.

    ``fail_on`` lists texts: a call whose prompt contains one of them always fails with a
    simulated 500, to rehearse what a run does with an item that cannot succeed.
    ``invalid_output_rate`` makes that share of structured replies (a stage with ``output:``)
    malformed or off-schema, decided by (seed, prompt), to rehearse repairs.
    """

    latency: float = Field(1.0, ge=0)
    jitter: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    fail_on: tuple[str, ...] = ()
    #: the share of structured replies that come back malformed or off-schema (to rehearse repairs)
    invalid_output_rate: float = Field(0.0, ge=0, le=1)


class ProviderSettings(_Settings):
    """A named endpoint, e.g. a local OpenAI-compatible server. The key is read from the env.

    ``kind`` is ``openai``, ``anthropic`` or a kind an installed package registers.
    """

    kind: str
    base_url: str | None = None
    api_key_env: str | None = None
    #: how a stage with an ``output:`` schema asks this server for JSON: natively
    #: (``json_schema``: OpenAI's strict response_format, Anthropic's forced tool call), as
    #: ``json_object`` mode with the schema in the prompt, or by the ``prompt`` alone
    structured: Literal["json_schema", "json_object", "prompt"] = "json_schema"

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if value in ("openai", "anthropic"):  # known without reading installed packages' metadata
            return value
        kinds = [kind for kind in provider_kinds() if kind != "sim"]
        if value not in kinds:
            hint = difflib.get_close_matches(value, kinds, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            listed = ", ".join(repr(kind) for kind in kinds)
            raise ValueError(
                f"unknown provider kind {clip(repr(value), 80)}{did}; "
                f"a named endpoint's kind is one of {listed}"
            )
        return value


class ModelLimits(_Settings):
    """Requests and tokens per minute allowed for one model."""

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)


class PriceSettings(_Settings):
    """US dollars per million tokens, overriding the built-in price table."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class BatchSettings(_Settings):
    """How batch mode (``mode: batch``) forms and watches provider batch jobs.

    ``window``: seconds a chunk keeps collecting requests after its first one; ``poll`` and
    ``poll_max``: the first wait between status checks and its cap (it grows 1.5x a check);
    ``max_requests``: a chunk cap below the provider's own; ``concurrency``: the chains in flight
    in batch mode (they wait cheaply); ``sim_delay``: how long the built-in ``sim`` takes to finish
    a batch.
    """

    window: float = Field(1.0, ge=0)
    poll: float = Field(2.0, gt=0)
    poll_max: float = Field(60.0, gt=0)
    max_requests: int | None = Field(None, ge=1)
    concurrency: int = Field(10_000, ge=1)
    sim_delay: float = Field(1.0, ge=0)


class Stage(BaseModel):
    """One step of a chain: an LLM call (``prompt``) or a tool step (``tool``).

    ``output`` is the stage's contract: a JSON Schema (inline, ``{schema_file: PATH}``, or a
    pydantic model class). A reply that does not parse or validate is asked again with the
    validator's message, up to ``max_repairs`` times, then fails the item (``invalid_output``).

    ``gate`` is a list of checks (see :mod:`chainfleet.pipeline.gates`) or a function of the output
    returning ``None`` when it is acceptable, else the reason. ``on_fail`` says what a failed
    gate does: ``fail`` the item (the default), ``accept`` the output and flag it, or
    ``revise``: run again from stage ``revise`` (default: this one) with ``{{ feedback }}`` and
    ``{{ previous }}``, up to ``max_revisions`` times, then ``then`` (fail or accept).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    model: str | None = None
    system: str | None = None
    prompt: str | None = None
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    tool: Any = None
    output: Any = None
    max_repairs: int = Field(2, ge=0)
    gate: Any = None
    on_fail: Literal["revise", "fail", "accept"] | None = None
    revise: str | None = None
    max_revisions: int = Field(2, ge=0)
    then: Literal["fail", "accept"] = "fail"
    #: where a person reviews this stage's output: always, on_gate_fail, {sample: F} (issue 10)
    review: ReviewRule | None = None
    #: "batch": this stage's calls go through the provider's batch API (None: the pipeline's mode)
    mode: Literal["online", "batch"] | None = None

    _prompt_t: jinja2.Template | None = PrivateAttr(None)
    _system_t: jinja2.Template | None = PrivateAttr(None)
    _checks: tuple[Check, ...] = PrivateAttr(())
    _uses_feedback: bool = PrivateAttr(False)

    # No __init__ override here: pydantic would call it for every nested stage of a Pipeline
    # too, losing the stage's index. A Stage built alone raises pydantic's ValidationError.

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a plain identifier (letters, digits, _), used in templates")
        if value == "id":
            raise ValueError("'id' is reserved for the item's id")
        if value in REVISION_VARIABLES:
            raise ValueError(f"{value!r} is reserved: every LLM stage's templates have {{{{ {value} }}}}")
        return value

    @field_validator("prompt", "system")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            _compile(value)
        return value

    @field_validator("tool")
    @classmethod
    def _check_tool(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = _import_object(value)
        if not inspect.iscoroutinefunction(value) and not inspect.iscoroutinefunction(
            getattr(value, "__call__", None)  # noqa: B004 - async callable objects count too
        ):
            raise ValueError("must be an async function: async def step(context) -> str")
        return value

    @field_validator("gate")
    @classmethod
    def _check_gate(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _import_object(value)
        if value is not None and not callable(value) and not isinstance(value, list | tuple):
            raise ValueError("must be a function: gate(output) -> None or a reason; or a list of checks")
        parse_gate(value)  # a SpecError names the check that is wrong
        return value

    @field_validator("output")
    @classmethod
    def _check_output(cls, value: Any) -> Any:
        if value is None:
            return None
        return Contract.from_value(value, base=_SCHEMA_BASE.get())

    @field_serializer("output")
    def _dump_output(self, value: Any) -> Any:
        """A contract as its JSON Schema (a schema file's content inline), so a dumped pipeline
        loads again."""
        return value.schema if isinstance(value, Contract) else value

    @field_validator("review", mode="before")
    @classmethod
    def _check_review(cls, value: Any) -> ReviewRule | None:
        return None if value is None else ReviewRule.parse(value)

    @field_serializer("review")
    def _dump_review(self, value: ReviewRule | None) -> Any:
        return None if value is None else value.to_data()

    @model_validator(mode="after")
    def _check_kind(self) -> Stage:
        if (self.prompt is None) == (self.tool is None):
            raise ValueError("a stage needs exactly one of 'prompt' (an LLM call) or 'tool'")
        self._prompt_t = _compile(self.prompt) if self.prompt is not None else None
        self._system_t = _compile(self.system) if self.system is not None else None
        self._checks = parse_gate(self.gate)
        used: set[str] = set()
        for source in (self.prompt, self.system):
            if source is not None:
                used |= jinja2.meta.find_undeclared_variables(_ENV.parse(source))
        self._uses_feedback = "feedback" in used
        if self.revise is not None and self.on_fail not in (None, "revise"):
            raise SpecError(f"revise: needs on_fail: revise (on_fail is {self.on_fail!r})", ("revise",))
        if self.on_fail == "revise" and self.is_tool and self.revise in (None, self.name):
            raise SpecError("a tool step cannot revise itself: name an earlier LLM stage", ("on_fail",))
        return self

    @property
    def contract(self) -> Contract | None:
        return self.output if isinstance(self.output, Contract) else None

    @property
    def checks(self) -> tuple[Check, ...]:
        return self._checks

    @property
    def uses_feedback(self) -> bool:
        """Whether the templates show ``{{ feedback }}`` (else a revision appends it)."""
        return self._uses_feedback

    @property
    def failure_action(self) -> str:
        """What a failed gate does: revise, fail or accept."""
        if self.on_fail is not None:
            return self.on_fail
        return "revise" if self.revise is not None else "fail"

    @property
    def revise_from(self) -> str:
        """The stage a revision starts again from (this one unless ``revise:`` names another)."""
        return self.revise or self.name

    @property
    def is_tool(self) -> bool:
        return self.tool is not None

    def render(self, context: Mapping[str, Any]) -> tuple[str | None, str]:
        """Render (system, prompt) for one item. A missing variable raises ``InvalidRequest``."""
        from chainfleet.errors import InvalidRequest

        assert self._prompt_t is not None, "render() is for LLM stages"
        try:
            prompt = self._prompt_t.render(context)
            system = self._system_t.render(context) if self._system_t is not None else None
        except jinja2.UndefinedError as exc:
            raise InvalidRequest(f"template: {exc.message}", stage=self.name) from exc
        except SecurityError as exc:
            raise InvalidRequest(f"template: the sandbox refused it: {clip(exc)}", stage=self.name) from exc
        return system, prompt

    def check_output(self, output: Any, context: Mapping[str, Any] | None = None) -> None:
        """Apply the stage's rule checks (not a judge: that is a call); raise ``InvalidOutput``
        naming the first that fails."""
        for check in self._checks:
            if isinstance(check, JudgeCheck):
                continue
            result = check.result(output, context or {})
            if not result.passed:
                label = "quality gate" if check.name == "gate" else f"quality gate {check.name!r}"
                raise InvalidOutput(f"{label}: {result.reason}", stage=self.name)


def _private_names(tree: jinja2.nodes.Template) -> list[str]:
    """Attribute and item names starting with ``_`` anywhere in a template."""
    found = [node.attr for node in tree.find_all(jinja2.nodes.Getattr) if node.attr.startswith("_")]
    for node in tree.find_all(jinja2.nodes.Getitem):
        if isinstance(node.arg, jinja2.nodes.Const) and str(node.arg.value).startswith("_"):
            found.append(str(node.arg.value))
    return found


def _compile(source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on its line {exc.lineno}: {exc.message}") from exc


def _import_object(spec: str) -> Any:
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
    pipeline file (``tools.py`` or ``tools/`` beside ``content.yaml``), from that folder, which
    is then searched after everything else (it never shadows an installed module)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.partition(".")[0]
        base = _SCHEMA_BASE.get()
        if exc.name != top or base is None:
            raise
        folder = str(base.resolve())
        if not ((base / f"{top}.py").is_file() or (base / top).is_dir()) or folder in sys.path:
            raise
        sys.path.append(folder)
        return importlib.import_module(module_name)


def provider_kinds() -> list[str]:
    """Every kind a model string or a ``providers:`` entry may name: the built-ins, then kinds
    registered in Python and kinds installed packages declare (read from their metadata; nothing
    of theirs is imported until a run makes one)."""
    extra = (_REGISTERED_KINDS | _installed_kinds()) - set(BUILTIN_PROVIDERS)
    return [*BUILTIN_PROVIDERS, *sorted(extra)]


def add_provider_kind(kind: str) -> None:
    """Let model strings and ``providers:`` entries name ``kind`` (the provider registry calls
    this for every kind it registers)."""
    _REGISTERED_KINDS.add(kind)


@functools.cache
def _installed_kinds() -> frozenset[str]:
    return frozenset(entry.name for entry in importlib.metadata.entry_points(group=PROVIDER_GROUP))


def parse_model(spec: str, named: Collection[str] = ()) -> tuple[str, str]:
    """Split ``"openai:gpt-4o-mini"`` into ``("openai", "gpt-4o-mini")``; ``"sim"`` is ``("sim", "sim")``.

    Raises ``ValueError`` for an unknown provider; ``named`` are the pipeline's own endpoints.
    """
    provider, sep, model = spec.partition(":")
    if not sep:
        if provider == "sim":
            return "sim", "sim"
        raise ValueError(
            f"model {spec!r} has no provider: write PROVIDER:MODEL, e.g. openai:{spec} "
            f"(providers: {', '.join([*provider_kinds(), *named])})"
        )
    if provider not in BUILTIN_PROVIDERS and provider not in named and provider not in provider_kinds():
        known = [*provider_kinds(), *named]
        hint = difflib.get_close_matches(provider, known, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"unknown model provider {provider!r}{did}; known: {', '.join(known)}")
    if not model:
        raise ValueError(f"model {spec!r} names no model after the colon")
    return provider, model


class Pipeline(BaseModel):
    """An ordered chain of stages and the settings it runs with.

    Build it in Python or load it with :meth:`from_yaml`. Validation happens on construction;
    :meth:`check_fields` checks the templates against an input's field names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = "pipeline"
    model: str = "sim"
    sim: SimSettings = SimSettings()
    providers: dict[str, ProviderSettings] = {}
    limits: dict[str, ModelLimits] = {}
    prices: dict[str, PriceSettings] = {}
    concurrency: int = Field(5, ge=1)
    #: seconds before a call to a real provider counts as timed out (a retryable error)
    timeout: float = Field(120.0, gt=0)
    input: str = "input"
    #: "batch": every LLM stage goes through the provider's batch API (see BatchSettings)
    mode: Literal["online", "batch"] = "online"
    batch: BatchSettings = BatchSettings()
    stages: list[Stage] = Field(min_length=1)
    #: templates render in Jinja2's sandbox; ``false`` trusts them with Python's internals
    sandbox: bool = True

    #: where the pipeline came from (a file path) and its YAML tree, for messages with lines
    _source: str | None = PrivateAttr(None)
    _root: Any = PrivateAttr(None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _explain(exc, data, None, None) from None

    @property
    def source(self) -> str | None:
        return self._source

    def model_post_init(self, __context: Any) -> None:
        """Every check that needs the whole pipeline; all problems found are raised together."""
        problems: list[ConfigError] = []

        def attempt(check: Callable[..., None], *args: Any) -> None:
            try:
                check(*args)
            except PipelineError as exc:
                problems.append(exc)

        attempt(self._check_sandbox)
        seen: set[str] = set()
        for index, stage in enumerate(self.stages):  # names first: templates refer to them
            attempt(self._check_name_use, index, stage, seen)
            seen.add(stage.name)
        for index, stage in enumerate(self.stages):
            attempt(self._check_model, index, stage)
            for field in ("prompt", "system"):
                attempt(self._check_order, index, stage, field)
            attempt(self._check_gate_settings, index, stage)
            attempt(self._check_schema_reads, index, stage)
        if problems:
            raise ConfigError.gather(problems)

    def _check_name_use(self, index: int, stage: Stage, seen: set[str]) -> None:
        if stage.name in seen:
            raise self._error(f"duplicate stage name {stage.name!r}", ("stages", index, "name"))
        if stage.name == self.input:
            raise self._error(
                f"stage name {stage.name!r} is also the input field's name (input: {self.input})",
                ("stages", index, "name"),
            )

    def _check_model(self, index: int, stage: Stage) -> None:
        if stage.is_tool:
            return
        try:
            parse_model(stage.model or self.model, self.providers)
        except ValueError as exc:
            raise self._error(str(exc), ("stages", index, "model") if stage.model else ("model",)) from exc

    def _check_order(self, index: int, stage: Stage, field: str) -> None:
        """A template names only earlier stages (the first such name is the problem)."""
        template = getattr(stage, field)
        if template is None:
            return
        later = {s.name for s in self.stages[index:]} - {self.input}  # (that clash is said once)
        names = jinja2.meta.find_undeclared_variables(_ENV.parse(template))
        for var in sorted(names & later):
            when = "itself" if var == stage.name else "a later stage"
            raise self._error(
                f"uses {{{{ {var} }}}}, which is {when}: a stage sees only earlier stages",
                ("stages", index, field),
            )

    def _check_gate_settings(self, index: int, stage: Stage) -> None:
        """``revise:`` names this or an earlier stage; a judge's model exists; a schema sent to
        OpenAI's strict mode can be adapted to it."""
        at = ("stages", index)
        names = [s.name for s in self.stages]
        if stage.revise is not None and stage.revise not in names[: index + 1]:
            later = stage.revise in names
            hint = difflib.get_close_matches(stage.revise, names[: index + 1], n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint and not later else ""
            what = "a later stage" if later else "no stage"
            raise self._error(
                f"revise: {stage.revise!r} is {what}{did}: a revision starts again from this stage "
                "or an earlier one",
                (*at, "revise"),
            )
        for number, check in enumerate(stage.checks):
            if isinstance(check, JudgeCheck):
                spec = check.model or (self.model if stage.is_tool else self.model_for(stage))
                try:
                    parse_model(spec, self.providers)
                except ValueError as exc:
                    raise self._error(f"judge: {exc}", (*at, "gate", number, "judge", "model")) from exc
        contract = stage.contract
        if contract is not None and not stage.is_tool and self.structured_mode(stage) == "strict":
            try:
                strict_schema(contract.schema)
            except ValueError as exc:
                raise self._error(
                    f"cannot ask {self.model_for(stage)} for this schema in strict mode: {exc} "
                    "(simplify the schema, or use a named provider with structured: json_object)",
                    (*at, "output"),
                ) from exc

    def _check_schema_reads(self, index: int, stage: Stage) -> None:
        """A template reading ``research.fact`` when research's schema has ``facts`` is an error."""
        contracts = {s.name: s.contract for s in self.stages[:index] if s.contract is not None}
        if not contracts:
            return
        for field in ("prompt", "system"):
            template = getattr(stage, field)
            if template is None:
                continue
            for name, path in template_paths(_ENV.parse(template)):
                contract = contracts.get(name)
                wrong = unknown_property(contract, path) if contract is not None else None
                if wrong is None:
                    continue
                part, known = wrong
                hint = difflib.get_close_matches(part, known, n=1)
                did = f"; did you mean {{{{ {name}.{hint[0]} }}}}?" if hint else ""
                raise self._error(
                    f"reads {name}.{part}, but the output schema of stage {name!r} has no property "
                    f"{part!r} (it has: {', '.join(known) or 'none'}){did}",
                    ("stages", index, field),
                )

    def structured_setting(self, spec: str) -> Literal["json_schema", "json_object", "prompt"]:
        """The ``structured:`` setting of model ``spec``'s provider (json_schema unless named)."""
        provider, _ = parse_model(spec, self.providers)
        settings = self.providers.get(provider)
        return settings.structured if settings is not None else "json_schema"

    def structured_mode(self, stage: Stage) -> str:
        """How ``stage``'s model is asked for its schema: strict (OpenAI json_schema), tool
        (Anthropic), json_object, prompt, or sim (the simulated model reads the schema)."""
        provider, _ = parse_model(self.model_for(stage), self.providers)
        if provider == "sim":
            return "sim"
        settings = self.providers.get(provider)
        kind = settings.kind if settings is not None else provider
        mode = self.structured_setting(self.model_for(stage))
        if mode != "json_schema":
            return mode
        return "strict" if kind == "openai" else "tool"

    def _check_sandbox(self) -> None:
        """Refuse, at load, a template that reaches for a private attribute (the way out of the
        sandbox); with ``sandbox: false``, compile the templates outside it instead."""
        for index, stage in enumerate(self.stages):
            for field in ("prompt", "system"):
                template = getattr(stage, field)
                if template is None:
                    continue
                if not self.sandbox:
                    setattr(stage, f"_{field}_t", _OPEN_ENV.from_string(template))
                    continue
                private = _private_names(_ENV.parse(template))
                if private:
                    raise self._error(
                        f"uses {private[0]!r}, which the template sandbox refuses (private "
                        "attributes lead out of it); set `sandbox: false` only for a pipeline "
                        "you trust as code",
                        ("stages", index, field),
                    )

    def _error(self, reason: str, loc: tuple[Any, ...]) -> PipelineError:
        names = [s.name for s in self.stages]
        error = PipelineError(reason, where=_where(self._source, self._root, loc, names))
        error.loc = loc
        return error

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Pipeline:
        """Load and validate a pipeline file. Every problem is a ``PipelineError`` naming it."""
        import yaml

        from chainfleet.pipeline.yamlsafe import LimitExceeded, load_limited

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise PipelineError(f"cannot read the pipeline file: {reason}", where=str(path)) from exc
        try:
            data, root = load_limited(text)  # limits on size, depth and aliases; unique keys
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            what = "not accepted" if isinstance(exc, LimitExceeded) else "not valid YAML"
            raise PipelineError(f"{what}: {clip(problem)}", where=where) from exc
        if not isinstance(data, dict):
            raise PipelineError("a pipeline file is a YAML mapping with a 'stages' list", where=str(path))
        return cls.from_dict(data, source=str(path), _yaml_root=root)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | None = None, _yaml_root: Any = None
    ) -> Pipeline:
        """Validate a pipeline given as plain data (what a YAML file holds)."""
        # (a contextvar, not pydantic's validation context: Pipeline's own __init__ drops that)
        token = _SCHEMA_BASE.set(Path(source).parent if source else None)
        try:
            pipeline = cls.model_validate(data)
        except ValidationError as exc:
            raise _explain(exc, data, source, _yaml_root) from None
        except PipelineError as exc:
            loc = getattr(exc, "loc", None)
            if loc is None:
                raise
            stages = data.get("stages")
            listed = stages if isinstance(stages, list) else []
            names = [s.get("name") if isinstance(s, Mapping) else None for s in listed]
            placed: list[ConfigError] = []
            for problem in (exc, *exc.more):
                at = getattr(problem, "loc", None)
                if at is None:
                    placed.append(problem)
                    continue
                error = PipelineError(problem.reason, where=_where(source, _yaml_root, at, names))
                error.loc = at
                placed.append(error)
            raise ConfigError.gather(placed, left_off=exc.left_off) from None
        finally:
            _SCHEMA_BASE.reset(token)
        pipeline._source = source
        pipeline._root = _yaml_root
        return pipeline

    # -- questions the runner asks ---------------------------------------------------------------

    def model_for(self, stage: Stage) -> str:
        return stage.model or self.model

    def batched(self, stage: Stage) -> bool:
        """Whether ``stage``'s calls go through a provider batch API (tool steps never do)."""
        return not stage.is_tool and (stage.mode or self.mode) == "batch"

    def input_fields_needed(self) -> dict[str, list[tuple[str, str]]]:
        """Variables no stage provides, so the input must: {variable: [(stage, field), ...]}."""
        needed: dict[str, list[tuple[str, str]]] = {}
        earlier: set[str] = {"id"}
        for stage in self.stages:
            for field in ("prompt", "system"):
                source = getattr(stage, field)
                if source is None:
                    continue
                names = jinja2.meta.find_undeclared_variables(_ENV.parse(source))
                for var in sorted(names - earlier - set(REVISION_VARIABLES)):
                    needed.setdefault(var, []).append((stage.name, field))
            earlier.add(stage.name)
        return needed

    def check_fields(
        self, fields: Collection[str] | None, *, input_name: str = "input", text_lines: bool = False
    ) -> None:
        """Check every template variable is an input field or an earlier stage.

        ``fields`` are the field names every item has (``None`` when unknown until the input
        is read, as for JSONL: then the input scan checks each line instead). ``text_lines``:
        the input is a text file, whose line becomes the field ``input:`` names, so a missing
        variable is most likely that field under another name: the message says how to name it.
        """
        if fields is None:
            return
        problems: list[ConfigError] = []
        for var, uses in self.input_fields_needed().items():
            if var in fields:
                continue
            stage, field = uses[0]
            index = next(i for i, s in enumerate(self.stages) if s.name == stage)
            earlier = [s.name for s in self.stages[:index]]
            hint = difflib.get_close_matches(var, [*fields, *earlier, "id"], n=1)
            did = f"; did you mean {{{{ {hint[0]} }}}}?" if hint else ""
            if text_lines and not hint:
                did = (
                    f"; each line of a text file becomes the field {self.input!r}: "
                    f"add `input: {var}` to the pipeline to call it {var!r}"
                )
            problems.append(
                self._error(
                    f"uses {{{{ {var} }}}}, which is neither a field of {input_name} "
                    f"({', '.join(sorted(fields)) or 'none'}) nor an earlier stage "
                    f"({', '.join(earlier) or 'none'}){did}",
                    ("stages", index, field),
                )
            )
        if problems:
            raise ConfigError.gather(problems)


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _explain(
    exc: ValidationError,
    data: Mapping[str, Any],
    source: str | None,
    root: Any,
    prefix: tuple[Any, ...] = (),
) -> PipelineError:
    """Turn every pydantic error into one line naming the YAML line, stage and field; the
    first carries the others (``PipelineError.more``)."""
    # gather says each line once: a union's branches can repeat the same complaint
    first = PipelineError.gather([_explain_one(error, data, source, root, prefix) for error in exc.errors()])
    assert isinstance(first, PipelineError)
    return first


def _explain_one(
    error: Any, data: Mapping[str, Any], source: str | None, root: Any, prefix: tuple[Any, ...]
) -> PipelineError:
    loc = (*prefix, *error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):
        loc = (*loc, *cause.loc)
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    names = [s.get("name") if isinstance(s, Mapping) else None for s in stages or []]
    in_stage = len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int)
    rest = loc[2:] if in_stage else loc
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        model: type[BaseModel] = Stage if in_stage and len(rest) == 1 else Pipeline
        known = list(model.model_fields)
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
    result = PipelineError(message, where=_where(source, root, loc, names))
    result.loc = loc
    return result


def _where(source: str | None, root: Any, loc: tuple[Any, ...], names: list[Any]) -> str:
    """``file:line: stage 'x' (stages[i]), field 'f'`` for a location in a pipeline."""
    line = _yaml_line(root, loc) if root is not None else None
    place = (source or "pipeline") + (f":{line}" if line else "")
    parts: list[str] = []
    rest = loc
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        index = loc[1]
        name = names[index] if index < len(names) else None
        parts.append(f"stage {clip(repr(name), 80)} (stages[{index}])" if name else f"stages[{index}]")
        rest = loc[2:]
    if rest:
        parts.append(f"field {clip(repr('.'.join(str(p) for p in rest)), 120)}")
    return f"{place}: {', '.join(parts)}" if parts else place


def _yaml_line(root: Any, loc: tuple[Any, ...]) -> int | None:
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
