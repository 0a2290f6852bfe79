"""The rows of the run store as values: a call's attempt, a stage result found again, a try of a
gated stage, an item's outcome (what results.jsonl holds), and the small decoders the store
reads them back with. Kept apart from :mod:`chainfleet.store.runstore` (the SQLite side) so each reads
in one go; import them from either."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CallRow",
    "ItemRecord",
    "RevisionRow",
    "StageHit",
    "add_try",
    "decode_json_dict",
    "decode_output",
    "decode_revision",
]


@dataclass(frozen=True)
class CallRow:
    """One attempt of one call, as the timeline draws it. Times are seconds from the run's start."""

    index: int
    item_id: str
    stage: str
    attempt: int
    queued: float
    started: float
    ended: float
    status: str
    limiter_wait: float = 0.0
    cooldown_wait: float = 0.0
    backoff: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None


@dataclass(frozen=True)
class StageHit:
    """A stage result found in the store (resume) or the cache."""

    output: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class RevisionRow:
    """One try of a gated or contracted stage: its output, and (once judged) its gate results."""

    index: int
    item_id: str
    stage: str
    revision: int
    key: str | None
    output: str
    is_json: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    repairs: int = 0
    feedback: str = ""
    #: each check's result as a dict (name, kind, passed, reason, score), None until gated
    gates: list[dict[str, Any]] | None = None
    #: on the stage's last try: passed, accepted or failed
    outcome: str | None = None


@dataclass
class ItemRecord:
    """One item's outcome as stored: what ``results.jsonl`` holds for it."""

    index: int
    id: str
    input: dict[str, Any]
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    attempts: int = 0
    seconds: float = 0.0
    quality: dict[str, Any] | None = None
    #: per gated or contracted stage: outcome, revisions, repairs, each try's checks
    gates: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Its line of results.jsonl: each output once, by stage (the final one is the last
        stage's)."""
        return {
            "id": self.id,
            "input": self.input,
            "status": self.status,
            "outputs": self.outputs,
            "error": self.error,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 6),
            "quality": self.quality,
            "gates": self.gates or None,
        }


def decode_json_dict(text: str | None) -> dict[str, Any]:
    """A JSON object kept as text; ``{}`` for none, for another JSON value, or for bad JSON."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def decode_revision(row: tuple[Any, ...]) -> RevisionRow:
    """A row of ``revisions`` (every column but ``run_id``, in table order) as a value."""
    index, item_id, stage, revision, key, output = row[:6]
    is_json, tokens_in, tokens_out, repairs, feedback, gates, outcome = row[6:]
    return RevisionRow(
        index=index,
        item_id=item_id,
        stage=stage,
        revision=revision,
        key=key,
        output=output,
        is_json=bool(is_json),
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        repairs=repairs,
        feedback=feedback,
        gates=json.loads(gates) if gates else None,
        outcome=outcome,
    )


def decode_output(text: str, is_json: int) -> Any:
    """A stage output as results.jsonl shows it: a structured one as its JSON value (its text
    if that does not parse), any other as text."""
    if not is_json:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def add_try(gates: dict[str, Any], row: RevisionRow) -> None:
    """Fold one try into an item's ``gates`` entry for results.jsonl."""
    entry = gates.setdefault(row.stage, {"revisions": 0, "repairs": 0})
    entry["revisions"] = max(entry["revisions"], row.revision)
    entry["repairs"] += row.repairs
    if row.gates is not None:
        passed = all(g.get("passed") for g in row.gates)
        try_ = {"revision": row.revision, "passed": passed, "checks": row.gates}
        entry.setdefault("tries", []).append(try_)
        entry["checks"] = {g["name"]: g.get("passed") for g in row.gates}
    if row.outcome is not None:
        entry["outcome"] = row.outcome
