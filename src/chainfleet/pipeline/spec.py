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
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from chainfleet.errors import ConfigError, PipelineError
from chainfleet.pipeline.contracts import strict_schema, template_paths, unknown_property
from chainfleet.pipeline.explain import explain, located, relocate
from chainfleet.pipeline.gates import JudgeCheck
from chainfleet.pipeline.imports import beside
from chainfleet.pipeline.settings import (
    BatchSettings,
    ModelLimits,
    PriceSettings,
    ProviderSettings,
    SimSettings,
    parse_model,
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
        _check_top_keys(data, source, _yaml_root)
        with beside(Path(source).parent if source else None):
            return cls._validate_placed(data, source, _yaml_root)

    @classmethod
    def _validate_placed(cls, data: Mapping[str, Any], source: str | None, root: Any) -> Pipeline:
        try:
            pipeline: Pipeline = cls.model_validate(data)
        except ValidationError as exc:
            raise _explain(exc, data, source, root) from None
        except PipelineError as exc:
            if getattr(exc, "loc", None) is None:
                raise
            raise relocate(exc, data, source, root) from None
        pipeline._source = source
        pipeline._root = root
        return pipeline

    def with_model(self, model: str) -> Pipeline:
        """A copy whose LLM stages all use ``model`` (each stage's own ``model:`` dropped).

        The copy keeps the file it came from and its YAML lines, for messages. Raises
        ``PipelineError`` when ``model`` names an unknown provider or cannot serve a stage.
        """
        data = self.model_dump(exclude={"stages"})
        stages = [s.model_copy(update={"model": None}) for s in self.stages]
        copy: Pipeline = Pipeline.model_validate({**data, "model": model, "stages": stages})
        copy._source, copy._root = self._source, self._root
        return copy

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
