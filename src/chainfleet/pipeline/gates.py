"""Quality gates: the checks a stage's output must pass before the next stage sees it.

A stage's ``gate:`` is a list of checks, each a mapping with one kind and an optional ``name``::

    gate:
      - min_words: 300
      - must_include: ["{{ topic }}"]
      - regex: "^# "
      - when: "facts | length >= 3"            # on a structured output's fields
      - check: mypackage.checks:no_dates       # returns None to pass, else the reason
      - judge: {model: sim, rubric: "Clear and accurate", threshold: 7}
        name: judge

Each check gives a :class:`CheckResult` (passed or not, and why). The rules are pure functions
of the output and the item; ``when:``, a judge's ``rubric`` and the templates in ``must_include``
compile and render like a stage's prompt (:mod:`chainfleet.pipeline.templates`: sandboxed,
never ``eval``). A judge is a model call returning a structured
``{score, feedback}``: the stage makes it, through the same limiter, retries and cache as any
call, and the judge's feedback is what a revision is told.

Everything that can be wrong in a check is found when the pipeline loads: a ``GateSpecError``
carries the place inside ``gate:`` so the message names the file's line.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.nodes

from chainfleet.pipeline.imports import import_object
from chainfleet.pipeline.templates import (
    SANDBOX,
    compile_expression,
    compile_template,
    expression_tree,
    render,
)

__all__ = [
    "JUDGE_SCHEMA",
    "CallableCheck",
    "Check",
    "CheckResult",
    "GateSpecError",
    "JudgeCheck",
    "SpecError",
    "feedback_of",
    "parse_gate",
    "words",
]

#: what a judge model answers
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 10},
        "feedback": {"type": "string"},
    },
    "required": ["score", "feedback"],
    "additionalProperties": False,
}


class SpecError(ValueError):
    """A pipeline value that is wrong at a place below its field, e.g. ``gate[1].judge.model``.

    ``loc`` continues the field's location so the message can name the YAML line.
    """

    def __init__(self, message: str, loc: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


GateSpecError = SpecError


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome on one output."""

    name: str
    kind: str
    passed: bool
    reason: str | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "passed": self.passed}
        if self.reason:
            data["reason"] = self.reason
        if self.score is not None:
            data["score"] = self.score
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            passed=bool(data["passed"]),
            reason=data.get("reason"),
            score=data.get("score"),
        )


def words(text: str) -> int:
    return len(text.split())


def as_text(output: Any) -> str:
    """The text a rule reads: the output itself, or a structured output as JSON."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


class Check:
    """One rule of a gate. ``evaluate`` returns None to pass, else the reason."""

    kind = "check"

    def __init__(self, value: Any = None, name: str | None = None) -> None:
        self.name = name or self.kind

    def result(self, output: Any, context: Mapping[str, Any]) -> CheckResult:
        reason = self.evaluate(output, context)
        return CheckResult(self.name, self.kind, passed=not reason, reason=reason or None)

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        raise NotImplementedError

    def templates(self) -> list[tuple[tuple[Any, ...], jinja2.nodes.Node]]:
        """The check's templates, parsed, each with its place below the check (for load checks)."""
        return []

    def trust(self) -> None:
        """Compile the templates outside the sandbox (``sandbox: false``: trusted as code)."""


class MinWords(Check):
    kind = "min_words"

    def __init__(self, value: Any, name: str | None = None) -> None:
        super().__init__(value, name)
        self.limit = _count(value)

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        n = words(as_text(output))
        return None if n >= self.limit else f"{n} words, fewer than the {self.limit} required"


class MaxWords(MinWords):
    kind = "max_words"

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        n = words(as_text(output))
        return None if n <= self.limit else f"{n} words, more than the {self.limit} allowed"


class MustInclude(Check):
    """Terms (or templates such as ``{{ topic }}``) that must appear, case-insensitively."""

    kind = "must_include"
    present = True

    def __init__(self, value: Any, name: str | None = None) -> None:
        super().__init__(value, name)
        terms = [value] if isinstance(value, str) else value
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) for t in terms):
            raise SpecError("a list of terms (or templates like '{{ topic }}')")
        self.terms = [(t, _template(t, (i,))) for i, t in enumerate(terms)]

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        text = as_text(output).lower()
        wrong = []
        for i, (_, template) in enumerate(self.terms):
            term = render(template, context, field=f"gate {self.name!r} {self.kind}[{i}]")
            if (term.lower() in text) != self.present:
                wrong.append(term)
        if not wrong:
            return None
        listed = ", ".join(repr(t) for t in wrong)
        return f"does not mention {listed}" if self.present else f"mentions {listed}"

    def templates(self) -> list[tuple[tuple[Any, ...], jinja2.nodes.Node]]:
        return [((i,), SANDBOX.parse(source)) for i, (source, _) in enumerate(self.terms)]

    def trust(self) -> None:
        self.terms = [(t, compile_template(t, trusted=True)) for t, _ in self.terms]


class MustNotInclude(MustInclude):
    kind = "must_not_include"
    present = False


class Regex(Check):
    kind = "regex"

    def __init__(self, value: Any, name: str | None = None) -> None:
        super().__init__(value, name)
        if not isinstance(value, str):
            raise SpecError("a regular expression (a string)")
        try:
            self.pattern = re.compile(value, re.MULTILINE)
        except re.error as exc:
            raise SpecError(f"not a regular expression: {exc}") from None

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        if self.pattern.search(as_text(output)):
            return None
        return f"does not match /{self.pattern.pattern}/"


class When(Check):
    """A condition on the output, a sandboxed Jinja2 expression: ``facts | length >= 3``.

    It sees a structured output's fields by name, the whole output as ``output``, and the
    item's context (its fields and earlier stages).
    """

    kind = "when"

    def __init__(self, value: Any, name: str | None = None) -> None:
        super().__init__(value, name)
        if not isinstance(value, str) or not value.strip():
            raise SpecError("an expression, e.g. 'facts | length >= 3'")
        self.source = value
        try:
            self.expression = compile_expression(value)
        except ValueError as exc:
            raise SpecError(str(exc)) from None

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        variables = {**context, "output": output}
        if isinstance(output, Mapping):
            variables.update(output)
        try:
            value = self.expression(**variables)
        except Exception as exc:  # the expression met data it cannot handle: the output fails
            return f"{self.source!r} could not be evaluated: {exc}"
        return None if value else f"{self.source!r} is false"

    def templates(self) -> list[tuple[tuple[Any, ...], jinja2.nodes.Node]]:
        return [((), expression_tree(self.source))]

    def trust(self) -> None:
        self.expression = compile_expression(self.source, trusted=True)


class CallableCheck(Check):
    """``check: package.module:function`` (or, in Python, the function): None passes."""

    kind = "check"

    def __init__(self, value: Any, name: str | None = None) -> None:
        if isinstance(value, str):
            try:
                value = import_object(value)
            except ValueError as exc:
                raise SpecError(str(exc)) from None
        if not callable(value):
            raise SpecError("a function: check(output) -> None or a reason")
        if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(
            getattr(value, "__call__", None)  # noqa: B004 - async callable objects too
        ):
            name = getattr(value, "__name__", None) or type(value).__name__
            raise SpecError(
                f"{name!r} is 'async def', and a check is never awaited: give a plain function, "
                "not 'async def': check(output) -> None or a reason"
            )
        self.function: Callable[[Any], Any] = value
        super().__init__(value, name or getattr(value, "__name__", None) or "check")

    def verdict(self, reason: Any) -> CheckResult:
        """The result of the function's answer (the run calls the function itself, so that an
        exception it raises fails only its item)."""
        return CheckResult(self.name, self.kind, passed=not reason, reason=str(reason) if reason else None)

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        return self.verdict(self.function(output)).reason


class JudgeCheck(Check):
    """``judge: {model, rubric, threshold}``: a model scores the output 0-10 and says why.

    The stage makes the call (it owns limits, retries, the cache and the store); this class
    makes the request's text and reads the verdict.
    """

    kind = "judge"

    def __init__(self, value: Any, name: str | None = None) -> None:
        super().__init__(value, name)
        if not isinstance(value, Mapping):
            raise SpecError("a mapping: {model: MODEL, rubric: TEXT, threshold: N}")
        unknown = set(value) - {"model", "rubric", "threshold", "max_tokens"}
        if unknown:
            raise SpecError(f"unknown key {sorted(unknown)[0]!r}", (sorted(unknown)[0],))
        rubric = value.get("rubric")
        if not isinstance(rubric, str) or not rubric.strip():
            raise SpecError("a rubric (text saying what a good output is) is required", ("rubric",))
        threshold = value.get("threshold", 7)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 10:
            raise SpecError("a number from 0 to 10", ("threshold",))
        model = value.get("model")
        if model is not None and not isinstance(model, str):
            raise SpecError("a model string such as sim or openai:gpt-4o-mini", ("model",))
        self.model: str | None = model
        self.rubric = _template(rubric, ("rubric",))
        self.rubric_source = rubric
        self.threshold = float(threshold)
        self.max_tokens = int(value.get("max_tokens", 300))

    def prompt(self, output: Any, context: Mapping[str, Any]) -> str:
        rubric = render(self.rubric, context, field=f"gate {self.name!r} judge rubric")
        return (
            f"Judge the text below against this rubric: {rubric}\n"
            "Give a score from 0 (useless) to 10 (excellent) and, in one or two sentences, "
            "feedback saying what would make it better.\n\nText:\n" + as_text(output)
        )

    def verdict(self, answer: Mapping[str, Any]) -> CheckResult:
        score = float(answer["score"])
        feedback = str(answer.get("feedback") or "").strip()
        passed = score >= self.threshold
        reason = None if passed else f"score {score:g} below {self.threshold:g}: {feedback}".rstrip(": ")
        return CheckResult(self.name, self.kind, passed=passed, reason=reason, score=score)

    def evaluate(self, output: Any, context: Mapping[str, Any]) -> str | None:
        raise TypeError("a judge is a model call: the stage makes it")

    def templates(self) -> list[tuple[tuple[Any, ...], jinja2.nodes.Node]]:
        return [(("rubric",), SANDBOX.parse(self.rubric_source))]

    def trust(self) -> None:
        self.rubric = compile_template(self.rubric_source, trusted=True)


_KINDS: dict[str, type[Check]] = {
    "min_words": MinWords,
    "max_words": MaxWords,
    "must_include": MustInclude,
    "must_not_include": MustNotInclude,
    "regex": Regex,
    "when": When,
    "check": CallableCheck,
    "judge": JudgeCheck,
}


def parse_gate(value: Any) -> tuple[Check, ...]:
    """The checks of ``gate:``: a list of ``{KIND: VALUE, name: NAME}`` mappings (or, in
    Python, functions). Raises ``SpecError`` whose ``loc`` is the place in the list."""
    if value is None:
        return ()
    if callable(value) or isinstance(value, str):  # the Python gate=, or "module:function"
        return (CallableCheck(value, "gate"),)
    if not isinstance(value, Sequence):
        raise SpecError("a list of checks, e.g. [{min_words: 300}, {judge: {...}}]")
    checks = [_check(entry, i) for i, entry in enumerate(value)]
    names = [c.name for c in checks]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise SpecError(f"two checks are named {name!r}: give one a name:", (i,))
    return tuple(checks)


def _check(entry: Any, index: int) -> Check:
    if callable(entry):
        return CallableCheck(entry)
    if not isinstance(entry, Mapping):
        raise SpecError("a check is a mapping with one kind, e.g. {min_words: 300}", (index,))
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise SpecError("a check's name is text", (index, "name"))
    kinds = [k for k in entry if k != "name"]
    if len(kinds) != 1:
        listed = ", ".join(_KINDS)
        raise SpecError(f"a check has exactly one kind ({listed}); got {kinds or 'none'}", (index,))
    kind = kinds[0]
    if kind not in _KINDS:
        hint = difflib.get_close_matches(str(kind), _KINDS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SpecError(f"unknown check kind {kind!r}{did}; known: {', '.join(_KINDS)}", (index, kind))
    try:
        return _KINDS[kind](entry[kind], name)
    except SpecError as exc:
        raise SpecError(f"{kind}: {exc}", (index, kind, *exc.loc)) from None


def feedback_of(results: Sequence[CheckResult]) -> str:
    """What a revision is told: every failed check, one line each."""
    return "\n".join(f"- {r.name}: {r.reason}" for r in results if not r.passed)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"a whole number of words (got {value!r})")
    return value


def _template(source: str, loc: tuple[Any, ...]) -> jinja2.Template:
    try:
        return compile_template(source)
    except ValueError as exc:
        raise SpecError(str(exc), loc) from None
