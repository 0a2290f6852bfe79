"""Where a stage's output waits for a person: the ``review:`` field of a stage.

``review:`` is one of:

- ``always``: every output of the stage is reviewed;
- ``on_gate_fail``: only an output its quality gate refuses (instead of failing the item);
- ``{sample: 0.05}``: a share of the items, chosen by a hash of (item id, stage), so the same
  items are chosen at any concurrency, in any order, on any machine.

Example::

    rule = ReviewRule.parse({"sample": 0.1})
    rule.wants("item-7", "edit", gate_failed=False)   # True for about one item in ten
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ReviewRule"]


@dataclass(frozen=True)
class ReviewRule:
    """A parsed ``review:`` setting."""

    mode: Literal["always", "on_gate_fail", "sample"]
    rate: float = 1.0

    @classmethod
    def parse(cls, value: Any) -> ReviewRule:
        """Read ``always``, ``on_gate_fail`` or ``{sample: F}`` (0 < F <= 1); raise ``ValueError``."""
        if isinstance(value, ReviewRule):
            return value
        if value in ("always", "on_gate_fail"):
            return cls(mode=value)
        if isinstance(value, dict) and set(value) == {"sample"}:
            rate = value["sample"]
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
                raise ValueError(f"sample is a share of the items, 0 < F <= 1 (got {rate!r})")
            return cls(mode="sample", rate=float(rate))
        raise ValueError(f"must be 'always', 'on_gate_fail' or {{sample: F}} (got {value!r})")

    def wants(self, item_id: str, stage: str, *, gate_failed: bool) -> str | None:
        """Why this item's output of ``stage`` waits for a person, or None when it goes on."""
        if self.mode == "always":
            return "always"
        if self.mode == "on_gate_fail":
            return "gate failed" if gate_failed else None
        return f"sample {self.rate:g}" if sample_unit(item_id, stage) < self.rate else None

    def to_data(self) -> Any:
        """The setting as a pipeline file writes it."""
        return {"sample": self.rate} if self.mode == "sample" else self.mode

    def __str__(self) -> str:
        return f"sample: {self.rate:g}" if self.mode == "sample" else self.mode


def sample_unit(item_id: str, stage: str) -> float:
    """A number in [0, 1) fixed by (item id, stage): the same on every run and machine."""
    digest = hashlib.sha256(f"{item_id}\x00{stage}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
