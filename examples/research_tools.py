"""The research agent's own tool: ``search`` over the offline corpus beside this file.

examples/research_agent.yaml names it as ``function: research_tools:search``; chainfleet finds
this module beside the pipeline file and makes the tool's JSON Schema from the signature below
(the ``Field`` descriptions and bounds included) and its description from the docstring.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field

CORPUS = Path(__file__).with_name("corpus.jsonl")
_WORD = re.compile(r"[a-z0-9]{3,}")
_COMMON = {"the", "and", "for", "with", "that", "this", "are", "from", "its", "has", "have", "what", "how"}


@functools.cache
def _passages() -> list[tuple[str, str, frozenset[str]]]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]
    return [(row["id"], row["text"], _words(row["text"])) for row in rows]


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower())) - _COMMON


def search(
    query: Annotated[str, Field(description="What to look for, in a few words")],
    limit: Annotated[int, Field(ge=1, le=5, description="How many passages to return")] = 3,
) -> str:
    """Search the offline research corpus (300 short passages) and return the best matches,
    one a line, each with its passage id to cite."""
    wanted = _words(query)
    scored = sorted(
        ((len(wanted & words), pid, text) for pid, text, words in _passages()),
        key=lambda hit: (-hit[0], hit[1]),
    )
    hits = [f"[{pid}] {text}" for score, pid, text in scored[:limit] if score > 0]
    return "\n".join(hits) if hits else f"no passage matches {query!r}"
