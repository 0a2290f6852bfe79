"""Quality gates the review tests name in pipelines (``review_gates:no_lorem``)."""

from __future__ import annotations


def no_lorem(text: str) -> str | None:
    """Refuse placeholder text."""
    return "says lorem ipsum" if "lorem" in text.lower() else None


def cites_a_source(text: str) -> str | None:
    """Refuse an output without a 'Source:' line (the simulated model never writes one)."""
    return None if "Source:" in text else "no 'Source:' line"


def breaks_on_boom(text: str) -> str | None:
    """A check with a bug: it raises on outputs that say boom."""
    if "boom" in text:
        raise RuntimeError("the boom table is not loaded")
    return None
