"""Functions the agent settings tests name as tools."""

from __future__ import annotations

import socket
from typing import Annotated

from pydantic import BaseModel, Field


def search(query: Annotated[str, Field(description="what to look for")], limit: int = 3) -> str:
    """Search the corpus for passages."""
    return query


async def fetch_page(url: str, idempotency_key: str = "") -> str:
    """Fetch one page."""
    return url


class Query(BaseModel):
    text: str
    year: int | None = None


def structured(query: Query) -> str:
    """Search with a structured query."""
    return query.text


def takes_a_socket(sock: socket.socket) -> str:
    return ""


def untyped(query) -> str:  # type: ignore[no-untyped-def]
    return str(query)
