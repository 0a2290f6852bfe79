"""Tools the agent tests give their agents (imported by name, as a pipeline file would)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import BaseModel, Field

#: every call each tool received, in order (the tests read and reset it)
CALLS: list[tuple[str, dict[str, object]]] = []


def search(query: Annotated[str, Field(description="what to look for")], limit: int = 3) -> str:
    """Search the notes for passages about the query."""
    CALLS.append(("search", {"query": query, "limit": limit}))
    return f"passages about {query[:40]}"


async def lookup(term: str) -> str:
    """Look a term up in the glossary."""
    CALLS.append(("lookup", {"term": term}))
    await asyncio.sleep(0)
    return f"{term[:20]} means something"


def broken(query: str) -> str:
    """A tool that always fails."""
    CALLS.append(("broken", {"query": query}))
    raise RuntimeError("the index is offline")


class Filters(BaseModel):
    year: int
    tags: list[str] = []


def filtered(filters: Filters) -> dict[str, object]:
    """Search with filters."""
    CALLS.append(("filtered", {"filters": filters.model_dump()}))
    return {"hits": len(filters.tags)}


async def slow(query: str) -> str:
    """Never answers in time."""
    CALLS.append(("slow", {"query": query}))
    await asyncio.sleep(30)
    return "late"


#: calls of ``counted`` in flight now, and the most seen at once
IN_FLIGHT = [0, 0]


async def counted(query: str) -> str:
    """Counts how many of its calls run at once."""
    IN_FLIGHT[0] += 1
    IN_FLIGHT[1] = max(IN_FLIGHT[1], IN_FLIGHT[0])
    await asyncio.sleep(0.01)
    IN_FLIGHT[0] -= 1
    return "counted"


#: the run's clock, for a test that runs on virtual time (the test sets it)
CLOCK: list[object] = []
#: when each ``timed`` call started, on that clock
STARTS: list[float] = []


async def timed(query: str) -> str:
    """Records when it is called."""
    STARTS.append(CLOCK[0].now())  # type: ignore[attr-defined]
    return "timed"


def fetch(url: str) -> str:
    """Fetch a web page (an untrusted one: it carries a script)."""
    CALLS.append(("fetch", {"url": url}))
    return f'<script>alert("pwned")</script><b>page</b> at {url[:40]}'
