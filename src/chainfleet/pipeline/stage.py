"""A stage: one step of a chain, either an LLM call or a tool step, checked as it is built.

A stage is one LLM call (a Jinja2 ``prompt`` template, optional ``system`` template, ``model``,
``max_tokens``, ``temperature``) or a *tool step*: a plain async Python function (:data:`ToolFn`)
that receives the same context a template would. A stage sees ``id``, the item's fields, and
every earlier stage's output by its name; an LLM stage also sees ``{{ feedback }}`` and
``{{ previous }}`` when a failed gate sends it round again (:data:`REVISION_VARIABLES`).

What a stage can check alone is checked here: its name, its templates' syntax, that a tool is an
async function, its gate, its output contract. What needs the whole chain (names of earlier
stages, the model's provider) is :class:`~chainfleet.pipeline.spec.Pipeline`'s to check::

    Stage(name="write", prompt="Write an article on {{ topic }} from:\\n{{ research }}",
          gate=[{"min_words": 300}], on_fail="revise")
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import jinja2
import jinja2.nodes
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_serializer,
    field_validator,
    model_validator,
)

from chainfleet.errors import InvalidOutput
from chainfleet.pipeline.contracts import Contract
from chainfleet.pipeline.gates import CallableCheck, Check, JudgeCheck, SpecError, parse_gate
from chainfleet.pipeline.imports import import_object, pipeline_folder
from chainfleet.pipeline.review_rules import ReviewRule
from chainfleet.pipeline.templates import SANDBOX, compile_template, render, variables
from chainfleet.pipeline.tools import FunctionTool, ToolSettings
from chainfleet.pipeline.usercode import CheckError, call_user

__all__ = ["REVISION_VARIABLES", "Gate", "Stage", "ToolFn"]

#: a tool step: ``async def web_search(context) -> str``
ToolFn = Callable[[Mapping[str, Any]], Awaitable[str]]
#: a quality gate: returns ``None`` when the output passes, else the reason it fails
Gate = Callable[[str], "str | None"]
#: template variables every LLM stage has: a revision's gate feedback and the output it revises
REVISION_VARIABLES = ("feedback", "previous")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    #: an agent: the tools the model may call, turn after turn (see chainfleet.pipeline.tools)
    tools: list[ToolSettings] | None = None
    #: an agent's budgets per item: model turns, and tool calls in all (``then`` says what
    #: reaching one does: fail the item, or accept the last answer)
    max_turns: int = Field(10, ge=1)
    max_tool_calls: int | None = Field(None, ge=1)
    #: and tokens (sent and received, all its turns together): a turn that would start at or
    #: past this many is not made (None: no token budget)
    max_tokens_total: int | None = Field(None, ge=1)
    #: an agent's tool calls of one turn run at most this many at once
    parallel_tools: int = Field(4, ge=1)

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
            compile_template(value)
        return value

    @field_validator("tool")
    @classmethod
    def _check_tool(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            raise ValueError("a tool step is one async function; an agent lists its tools under 'tools:'")
        if isinstance(value, str):
            value = import_object(value)
        if not inspect.iscoroutinefunction(value) and not inspect.iscoroutinefunction(
            getattr(value, "__call__", None)  # noqa: B004 - async callable objects count too
        ):
            raise ValueError("must be an async function: async def step(context) -> str")
        return value

    @field_validator("gate")
    @classmethod
    def _check_gate(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = import_object(value)
        if value is not None and not callable(value) and not isinstance(value, list | tuple):
            raise ValueError("must be a function: gate(output) -> None or a reason; or a list of checks")
        parse_gate(value)  # a SpecError names the check that is wrong
        return value

    @field_validator("output")
    @classmethod
    def _check_output(cls, value: Any) -> Any:
        if value is None:
            return None
        return Contract.from_value(value, base=pipeline_folder())

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
        if self.tools is not None and self.tool is not None:
            reason = "an agent stage (tools:) is a model with a 'prompt', not a 'tool' step"
            raise SpecError(reason, ("tools",))
        if (self.prompt is None) == (self.tool is None):
            raise ValueError("a stage needs exactly one of 'prompt' (an LLM call) or 'tool'")
        self._check_tool_names()
        self._prompt_t = compile_template(self.prompt) if self.prompt is not None else None
        self._system_t = compile_template(self.system) if self.system is not None else None
        self._checks = parse_gate(self.gate)
        used: set[str] = set()
        for source in (self.prompt, self.system):
            if source is not None:
                used |= variables(source)
        self._uses_feedback = "feedback" in used
        if self.revise is not None and self.on_fail not in (None, "revise"):
            raise SpecError(f"revise: needs on_fail: revise (on_fail is {self.on_fail!r})", ("revise",))
        if self.on_fail == "revise" and self.is_tool and self.revise in (None, self.name):
            raise SpecError("a tool step cannot revise itself: name an earlier LLM stage", ("on_fail",))
        return self

    def _check_tool_names(self) -> None:
        """Two function tools of one agent cannot share a name (the model names the one it calls)."""
        seen: set[str] = set()
        for index, entry in enumerate(self.tools or ()):
            tool = entry.function_tool
            if tool is None:
                continue
            if tool.name in seen:
                raise SpecError(
                    f"two tools are named {tool.name!r}: give one a 'name:'", ("tools", index, "function")
                )
            seen.add(tool.name)

    @property
    def is_agent(self) -> bool:
        """Whether the stage is an agent: a model that may call ``tools`` in a loop."""
        return self.tools is not None

    @property
    def function_tools(self) -> list[FunctionTool]:
        """The agent's Python function tools, in the order written."""
        found = [t.function_tool for t in self.tools or ()]
        return [t for t in found if t is not None]

    @property
    def contract(self) -> Contract | None:
        return self.output if isinstance(self.output, Contract) else None

    @property
    def checks(self) -> tuple[Check, ...]:
        return self.__pydantic_private__["_checks"]  # type: ignore[index,no-any-return]

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
        """Render (system, prompt) for one item. Any failure (a missing variable, the sandbox's
        refusal, an error in the template's arithmetic) raises ``InvalidRequest``: the item fails."""
        # pydantic's __getattr__ finds a private attribute in ~1 us; its dict, read once, at once
        private = self.__pydantic_private__
        assert private is not None and private["_prompt_t"] is not None, "render() is for LLM stages"
        prompt = render(private["_prompt_t"], context, field="prompt", stage=self.name)
        system = None
        if private["_system_t"] is not None:
            system = render(private["_system_t"], context, field="system", stage=self.name)
        return system, prompt

    def templates(self) -> list[tuple[tuple[Any, ...], jinja2.nodes.Node]]:
        """Every template of the stage, parsed, with its place in the stage: ``("prompt",)``,
        ``("gate", 1, "judge", "rubric")``, ... (the pipeline checks them all alike)."""
        found: list[tuple[tuple[Any, ...], jinja2.nodes.Node]] = [
            ((field,), SANDBOX.parse(source))
            for field, source in (("prompt", self.prompt), ("system", self.system))
            if source is not None
        ]
        for index, check in enumerate(self._checks):
            found += [(("gate", index, check.kind, *loc), tree) for loc, tree in check.templates()]
        return found

    def trust_templates(self) -> None:
        """Compile the templates outside the sandbox (``sandbox: false``: trusted as code)."""
        if self.prompt is not None:
            self._prompt_t = compile_template(self.prompt, trusted=True)
        if self.system is not None:
            self._system_t = compile_template(self.system, trusted=True)
        for check in self._checks:
            check.trust()

    def check_output(self, output: Any, context: Mapping[str, Any] | None = None) -> None:
        """Apply the stage's rule checks (not a judge: that is a call); raise ``InvalidOutput``
        naming the first that fails, or :class:`~chainfleet.pipeline.usercode.CheckError` when
        a ``check:`` function raises (called through
        :func:`~chainfleet.pipeline.usercode.call_user`)."""
        for check in self._checks:
            if isinstance(check, JudgeCheck):
                continue
            if isinstance(check, CallableCheck):  # the user's code: what it raises is this output's failure
                what = f"gate check {check.name!r}"
                reason = call_user(check.function, output, stage=self.name, what=what, error=CheckError)
                result = check.verdict(reason)
            else:
                result = check.result(output, context or {})
            if not result.passed:
                label = "quality gate" if check.name == "gate" else f"quality gate {check.name!r}"
                raise InvalidOutput(f"{label}: {result.reason}", stage=self.name)
