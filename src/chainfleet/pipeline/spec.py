"""Pipelines: what a chain is, loaded from YAML or built in Python, checked before any call.

A :class:`Pipeline` is an ordered list of :class:`~chainfleet.pipeline.stage.Stage` objects and
the settings it runs with (:mod:`chainfleet.pipeline.settings`). Each stage is one LLM call or a
tool step, and sees ``id``, the item's fields, and every earlier stage's output by its name.

Everything that can be checked before a model is called is checked when a pipeline is built, and
each problem is one line naming the file (and YAML line), the stage and the field
(:mod:`chainfleet.pipeline.explain`): unknown keys, duplicate stage names, template syntax, a
template naming a later stage or reading a property an earlier stage's schema does not have, an
unknown model provider. All the problems found are raised together. Once the input is known,
:meth:`Pipeline.check_fields` checks that every variable a template reads is provided.

A pipeline built in Python may name a provider of its own that the run is handed
(``providers={"agent": MyProvider()}``): such a name, unknown but no typo of a known one, is kept
for :meth:`Pipeline.check_providers`, which the run calls with the names it was given. A file
(:meth:`Pipeline.from_yaml`) is checked at once, but for the names its ``providers=`` lists.

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

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from chainfleet.errors import ConfigError, PipelineError
from chainfleet.pipeline.contracts import strict_schema, template_paths, unknown_property
from chainfleet.pipeline.explain import explain, located, relocate
from chainfleet.pipeline.gates import JudgeCheck
from chainfleet.pipeline.imports import beside
from chainfleet.pipeline.routes import RouteSettings
from chainfleet.pipeline.settings import (
    BatchSettings,
    ModelLimits,
    OtelSettings,
    PriceSettings,
    ProviderSettings,
    SimSettings,
    UnknownProvider,
    parse_model,
    provider_kinds,
)
from chainfleet.pipeline.stage import REVISION_VARIABLES, Stage
from chainfleet.pipeline.templates import SANDBOX, private_names, variables
from chainfleet.redact import clip, listed

__all__ = ["Pipeline"]


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
    #: named lists of targets a model name may stand for (see chainfleet.pipeline.routes)
    routes: dict[str, RouteSettings] = {}
    concurrency: int = Field(5, ge=1)
    #: seconds before a call to a real provider counts as timed out (a retryable error)
    timeout: float = Field(120.0, gt=0)
    input: str = "input"
    #: "batch": every LLM stage goes through the provider's batch API (see BatchSettings)
    mode: Literal["online", "batch"] = "online"
    batch: BatchSettings = BatchSettings()
    #: OpenTelemetry traces of every run (``otel: true``, or its settings; see OtelSettings)
    otel: OtelSettings | None = None
    stages: list[Stage] = Field(min_length=1)
    #: templates render in Jinja2's sandbox; ``false`` trusts them with Python's internals
    sandbox: bool = True
    #: the user's own chain (issue 20): ``async def fn(item, fleet)`` run once per item instead
    #: of the stages (see :meth:`from_function` and :mod:`chainfleet.code`); never from YAML
    work: Any = Field(None, exclude=True)

    #: where the pipeline came from (a file path) and its YAML tree, for messages with lines
    _source: str | None = PrivateAttr(None)
    _root: Any = PrivateAttr(None)
    #: unknown model providers, kept until a run says which providers it brings: (name, reason, loc)
    #: (a lambda, not ``list``: pydantic reads the factory's signature on every instance, and a
    #: builtin's costs a tokenizer regular expression compiled once per process, ~20 ms)
    _unknown: list[tuple[str, str, tuple[Any, ...]]] = PrivateAttr(default_factory=lambda: [])

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _explain(exc, data, None, None) from None

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("otel", mode="before")
    @classmethod
    def _otel_flag(cls, value: Any) -> Any:
        """``otel: true`` is tracing with the defaults; ``otel: false`` is none."""
        if value is True:
            return OtelSettings()
        return None if value is False else value

    @field_validator("work")
    @classmethod
    def _check_work(cls, value: Any) -> Any:
        if value is not None and not callable(value):
            raise ValueError("is a Python function given with Pipeline.from_function, not a YAML key")
        return value

    def model_post_init(self, __context: Any) -> None:
        """Every check that needs the whole pipeline; all problems found are raised together."""
        problems: list[ConfigError] = []

        def attempt(check: Callable[..., None], *args: Any) -> None:
            try:
                check(*args)
            except PipelineError as exc:
                problems.append(exc)

        attempt(self._check_sandbox)
        for name in self.routes:
            attempt(self._check_route, name)
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
            attempt(self._check_agent, index, stage)
        if problems:  # with other problems, an unknown provider is said now too
            unknown: list[ConfigError] = [self._error(r, loc) for _, r, loc in self._unknown]
            error = ConfigError.gather([*problems, *unknown])
            error.after_parsing = True  # type: ignore[attr-defined]  # (see _second_round)
            raise error

    def check_providers(self, given: Collection[str] = ()) -> None:
        """Raise the unknown model providers found at load, but for the names in ``given`` (the
        providers a run was handed from Python): one ``PipelineError`` naming each place."""
        problems: list[ConfigError] = [self._error(r, loc) for n, r, loc in self._unknown if n not in given]
        if problems:
            raise ConfigError.gather(problems)

    def _parse_model(self, spec: str, loc: tuple[Any, ...], prefix: str = "") -> None:
        """``spec`` is a model or a route's name; an unknown provider is kept for
        :meth:`check_providers` (a run may bring it from Python)."""
        try:
            self.check_model_name(spec)
        except UnknownProvider as exc:
            if exc.near is not None:  # a typo of a known name: said now, with its hint
                raise self._error(f"{prefix}{exc}", loc) from exc
            self._unknown.append((exc.provider, f"{prefix}{exc}", loc))
        except ValueError as exc:
            raise self._error(f"{prefix}{exc}", loc) from exc

    def _check_name_use(self, index: int, stage: Stage, seen: set[str]) -> None:
        if stage.name in seen:
            raise self._error(f"duplicate stage name {stage.name!r}", ("stages", index, "name"))
        if stage.name == self.input:
            raise self._error(
                f"stage name {stage.name!r} is also the input field's name (input: {self.input})",
                ("stages", index, "name"),
            )

    def _check_route(self, name: str) -> None:
        """A route's name is no provider's; each target names a known provider."""
        if name in self.providers or name in provider_kinds() or ":" in name:
            what = "has a colon" if ":" in name else "is also a provider's name"
            raise self._error(
                f"route name {name!r} {what}: a model name would be ambiguous; rename the route",
                ("routes", name),
            )
        for index, target in enumerate(self.routes[name].targets):
            try:
                parse_model(target.model, self.providers)
            except ValueError as exc:
                at = ("routes", name, "targets", index, "model")
                raise self._error(f"route {name!r}: {exc}", at) from exc

    def check_model_name(self, spec: str) -> None:
        """Raise ``ValueError`` unless ``spec`` is a model (``PROVIDER:MODEL``) or a route's name."""
        if spec in self.routes:
            return
        near = difflib.get_close_matches(spec, list(self.routes), n=1) if ":" not in spec else []
        if near:
            raise ValueError(
                f"model {spec!r} is neither a model nor a route (did you mean the route {near[0]!r}?)"
            )
        parse_model(spec, [*self.providers, *self.routes])

    def route(self, spec: str) -> RouteSettings | None:
        """The route ``spec`` names, or None when it is a model."""
        return self.routes.get(spec)

    def targets_of(self, spec: str) -> list[str]:
        """The models a model name stands for: a route's targets' (in order, once each), else itself."""
        route = self.routes.get(spec)
        return list(dict.fromkeys(t.model for t in route.targets)) if route else [spec]

    def _check_model(self, index: int, stage: Stage) -> None:
        if not stage.is_tool:
            where = ("stages", index, "model") if stage.model else ("model",)
            self._parse_model(stage.model or self.model, where)

    def _check_agent(self, index: int, stage: Stage) -> None:
        """An agent stage runs on a provider that speaks tool calls (sim, OpenAI's or
        Anthropic's format); in batch mode, on one whose batch API carries them (the same three:
        OpenAI's batches over /v1/chat/completions with tools, Anthropic's message batches with
        tools, the sim's). Any other kind is exit 2, naming the stage and the mode."""
        if not stage.is_agent:
            return
        batch = (stage.mode or self.mode) == "batch"
        try:
            specs = self.targets_of(self.model_for(stage))
            models = [parse_model(spec, self.providers, any_provider=True)[0] for spec in specs]
        except ValueError:
            return  # said by _check_model
        for provider in models:
            settings = self.providers.get(provider)
            kind = settings.kind if settings is not None else provider
            if kind not in ("sim", "openai", "anthropic"):
                loc = ("stages", index, "model") if stage.model else ("model",)
                if batch:
                    reason = (
                        f"agent stage {stage.name!r} (tools:, mode: batch) needs a batch API that "
                        f"carries tool calls; provider kind {kind!r} has none (use sim, openai or "
                        "anthropic, or `mode: online` with a model that can call tools)"
                    )
                else:
                    reason = (
                        f"agent stage {stage.name!r} (tools:) needs a model that can call tools; "
                        f"provider kind {kind!r} cannot (use sim, openai or anthropic)"
                    )
                raise self._error(reason, loc)

    def _check_order(self, index: int, stage: Stage, field: str) -> None:
        """A template names only earlier stages (the first such name is the problem)."""
        template = getattr(stage, field)
        if template is None:
            return
        later = {s.name for s in self.stages[index:]} - {self.input}  # (that clash is said once)
        names = variables(template)
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
                self._parse_model(spec, (*at, "gate", number, "judge", "model"), "judge: ")
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
            for name, path in template_paths(SANDBOX.parse(template)):
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
        provider, _ = parse_model(self.targets_of(spec)[0], self.providers, any_provider=True)
        settings = self.providers.get(provider)
        return settings.structured if settings is not None else "json_schema"

    def structured_mode(self, stage: Stage) -> str:
        """How ``stage``'s model is asked for its schema: strict (OpenAI json_schema), tool
        (Anthropic), json_object, prompt, or sim (the simulated model reads the schema)."""
        first = self.targets_of(self.model_for(stage))[0]
        provider, _ = parse_model(first, self.providers, any_provider=True)
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
        sandbox), in any of a stage's templates (prompt, system, a gate's rubric, terms or
        ``when:``); with ``sandbox: false``, compile them all outside it instead."""
        for index, stage in enumerate(self.stages):
            if not self.sandbox:
                stage.trust_templates()
                continue
            for loc, tree in stage.templates():
                private = private_names(tree)
                if private:
                    raise self._error(
                        f"uses {private[0]!r}, which the template sandbox refuses (private "
                        "attributes lead out of it); set `sandbox: false` only for a pipeline "
                        "you trust as code",
                        ("stages", index, *loc),
                    )

    def _error(self, reason: str, loc: tuple[Any, ...]) -> PipelineError:
        return located(reason, loc, self._source, self._root, [s.name for s in self.stages])

    def problem(self, reason: str, loc: tuple[Any, ...]) -> PipelineError:
        """A problem found after loading (e.g. an MCP server's listing) at ``loc``, placed like
        the pipeline's own: ``file:line: stage 'x' (stages[i]), field 'f': reason``."""
        return self._error(reason, loc)

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, providers: Collection[str] = ()) -> Pipeline:
        """Load and validate a pipeline file. Every problem is a ``PipelineError`` naming it.

        ``providers``: names of providers the run will be handed from Python, which the file
        may name though nothing else knows them."""
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
        pipeline = cls.from_dict(data, source=str(path), _yaml_root=root)
        pipeline.check_providers(providers)
        return pipeline

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | None = None, _yaml_root: Any = None
    ) -> Pipeline:
        """Validate a pipeline given as plain data (what a YAML file holds)."""
        _check_top_keys(data, source, _yaml_root)
        with beside(Path(source).parent if source else None):
            return cls._validate_placed(data, source, _yaml_root)

    @classmethod
    def _validate_placed(cls, data: Mapping[str, Any], source: str | None, root: Any) -> Pipeline:
        try:
            pipeline: Pipeline = cls.model_validate(data)
        except ValidationError as exc:
            explained = _explain(exc, data, source, root)
            cls._second_round(explained, data, source, root)
            raise explained from None
        except PipelineError as exc:
            if getattr(exc, "loc", None) is None:
                raise
            error = relocate(exc, data, source, root)
            if not getattr(exc, "after_parsing", False):
                cls._second_round(error, data, source, root)
            raise error from None
        pipeline._source = source
        pipeline._root = root
        return pipeline

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        input: str | None = None,
        output: Any = None,
        **settings: Any,
    ) -> Pipeline:
        """A pipeline whose work is the user's own chain ``fn``: ``async def fn(item, fleet)``,
        run once per item with its calls through chainfleet (:mod:`chainfleet.code`). Its one
        stage, named ``name`` (default: the function's), holds the function's return value,
        checked against ``output`` (a JSON Schema or a pydantic model) when given. ``input`` is
        the field a line of a text input becomes (default: the first parameter's name)."""
        label = name or getattr(fn, "__name__", "") or "chain"
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", label):
            label = "chain"
        field = input or _first_parameter(fn) or "input"
        if field == label:
            field = "input"
        stage = Stage(name=label, tool=fn, output=output)
        return cls(name=label, input=field, work=fn, stages=[stage], **settings)

    @classmethod
    def _second_round(
        cls, error: ConfigError, data: Mapping[str, Any], source: str | None, root: Any
    ) -> None:
        """Check the rest of a file whose keys or values were refused, so that one run names
        every problem: the file is validated again without the refused keys (a stage left with
        neither prompt nor tool gets an empty prompt), and what that finds (a template naming a
        later stage, a schema read, an unknown provider) joins ``error``. The pipeline it
        builds is kept as ``error.partial``, for the checks that need the input
        (:meth:`check_fields`): a template typo such as ``{{ wirte }}`` is one of them."""
        locs = [getattr(p, "loc", None) for p in (error, *error.more)]
        for _ in range(3):  # a round's own problems are taken out too, for the next one
            cleaned = _without(data, locs)
            if cleaned is None:
                return
            try:
                partial: Pipeline = cls.model_validate(cleaned)
                break
            except PipelineError as exc:
                if not getattr(exc, "after_parsing", False):
                    return
                ConfigError.gather([error, relocate(exc, data, source, root)])
                locs += [getattr(p, "loc", None) for p in (exc, *exc.more)]
            except ValidationError:
                return
        else:
            return
        partial._source, partial._root = source, root
        error.partial = partial  # type: ignore[attr-defined]
        try:
            partial.check_providers()
        except ConfigError as exc:
            ConfigError.gather([error, exc])

    def with_model(self, model: str) -> Pipeline:
        """A copy whose LLM stages all use ``model`` (each stage's own ``model:`` dropped).

        The copy keeps the file it came from and its YAML lines, for messages. Raises
        ``PipelineError`` when ``model`` names an unknown provider or cannot serve a stage.
        """
        data = self.model_dump(exclude={"stages"})
        stages = [s.model_copy(update={"model": None}) for s in self.stages]
        # a code pipeline keeps its function: ``model`` is then the model its calls are sent to
        data.update(model=model, stages=stages, work=self.work)
        copy: Pipeline = Pipeline.model_validate(data)
        copy._source, copy._root = self._source, self._root
        return copy

    # -- questions the runner asks ---------------------------------------------------------------

    @property
    def model_override(self) -> tuple[str, str] | None:
        """A code pipeline's ``--model``: (provider, model name) every call of that provider's
        API is sent to (:class:`~chainfleet.code.gateway.Gateway`); None when not set."""
        if self.work is None or "model" not in self.model_fields_set:
            return None
        provider, _, name = self.model.partition(":")
        return provider, name

    def model_for(self, stage: Stage) -> str:
        return stage.model or self.model

    def models_used(self) -> list[str]:
        """Every model the pipeline calls, in order, once each: the stages' (``@batch`` for a
        batch stage, priced as such) and their judges', a route's targets for a route."""
        if self.work is not None:  # the user's own chain: its calls' model, when --model sets it
            return [self.model] if self.model_override is not None else []
        used: dict[str, None] = {}
        for stage in self.stages:
            if not stage.is_tool:
                for model in self.targets_of(self.model_for(stage)):
                    used[model + ("@batch" if self.batched(stage) else "")] = None
            for check in stage.checks:
                if isinstance(check, JudgeCheck):
                    judge = check.model or (self.model if stage.is_tool else self.model_for(stage))
                    used.update(dict.fromkeys(self.targets_of(judge)))
        return list(used)

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
                names = variables(source)
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
                    f"({listed(sorted(fields)) or 'none'}) nor an earlier stage "
                    f"({', '.join(earlier) or 'none'}){did}",
                    ("stages", index, field),
                )
            )
        if problems:
            raise ConfigError.gather(problems)


def _first_parameter(fn: Callable[..., Any]) -> str | None:
    """The name of ``fn``'s first parameter, unless it takes the whole item (a dict)."""
    import inspect

    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    first = parameters[0]
    annotation = str(first.annotation).lower()
    if any(word in annotation for word in ("dict", "mapping")):
        return None
    return first.name


#: what stands for a refused named endpoint or route in the second round (see _without)
STUBS: dict[str, Any] = {"providers": {"kind": "openai"}, "routes": {"targets": ["sim"]}}


def _without(data: Mapping[str, Any], locs: list[Any]) -> dict[str, Any] | None:
    """``data`` without the keys at ``locs`` (a top-level key, or a stage's key); None when a
    problem is somewhere this cannot take out (the stages list itself)."""
    cleaned = dict(data)
    stages = cleaned.get("stages")
    if not isinstance(stages, list):
        return None
    stages = cleaned["stages"] = [dict(s) if isinstance(s, Mapping) else s for s in stages]
    for loc in locs:
        if not loc:
            return None
        named = cleaned.get(str(loc[0]))
        if loc[0] in STUBS and len(loc) >= 2 and isinstance(named, Mapping):
            # a named endpoint or route whose settings were refused keeps its name (as a stub),
            # so the stages using it are not said to name an unknown one
            cleaned[str(loc[0])] = {**named, str(loc[1]): STUBS[str(loc[0])]}
        elif loc[0] != "stages":
            cleaned.pop(str(loc[0]), None)
        elif len(loc) >= 3 and isinstance(loc[1], int) and isinstance(stages[loc[1]], dict):
            stages[loc[1]].pop(str(loc[2]), None)
        else:
            return None
    for stage in stages:
        if isinstance(stage, dict) and "prompt" not in stage and "tool" not in stage:
            stage["prompt"] = ""  # its prompt was the refused key: the other stages still read it
    return cleaned


def _check_top_keys(data: Mapping[str, Any], source: str | None, root: Any) -> None:
    """A top-level key that is not a string (``1: x``, a lone ``?``) is one clear error: pydantic
    would raise ``TypeError`` (found by the fuzz tests)."""
    for number, key in enumerate(data):
        if not isinstance(key, str):
            node = root.value[number][0] if getattr(root, "value", None) else None
            line = f":{node.start_mark.line + 1}" if node is not None else ""
            raise PipelineError(
                f"key {clip(repr(key))} is not a name: a pipeline's keys are words such as name, "
                "model, input and stages",
                where=f"{source or 'the pipeline'}{line}",
            )


def _explain(exc: ValidationError, data: Mapping[str, Any], source: str | None, root: Any) -> PipelineError:
    """pydantic's errors as lines naming the file, YAML line, stage and field."""
    return explain(
        exc, data, source, root, pipeline_keys=Pipeline.model_fields, stage_keys=Stage.model_fields
    )
