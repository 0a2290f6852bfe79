"""Bring your own chain: a research -> write -> edit chain as plain async Python.

This is code you may already have: the official openai SDK, a web search, a loop that sends the
draft back to the editor until it passes your own checks. chainfleet runs it over many topics
at once, with your rate limits, retries, a journal of every call (a crash or Ctrl-C resumes
without paying twice), review and an honest report. The only changes: the function takes
``fleet`` and gets its client from it, and the search goes through ``fleet.step``.

Rehearse it offline against the built-in sim-server (no key, no cost)::

    chainfleet sim-server --port 8765 &
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sim \\
      chainfleet run examples/own_chain.py:article -i examples/topics.txt -c 10 --out runs/own

Then for real: drop ``OPENAI_BASE_URL``, give your key, and add ``--rpm``/``--tpm`` for your
tier (or let chainfleet learn them from the headers). From Python::

    import chainfleet
    from own_chain import article

    chainfleet.run(article, ["tea", "coffee"], concurrency=10, out="runs/own")
"""

from __future__ import annotations

import os
import re
from typing import Any

import chainfleet

MODEL = os.environ.get("OWN_CHAIN_MODEL", "gpt-4o-mini")
#: how many times the editor may send the draft back
MAX_ROUNDS = 3


def search(topic: str) -> list[dict[str, str]]:
    """A stand-in for a web search: a side effect that is not a model call. Through
    ``fleet.step`` it runs once per topic, even when the chain runs again after a crash."""
    words = topic.lower().split() or ["topic"]
    return [
        {"title": f"{topic}: an overview", "url": f"https://example.org/{'-'.join(words)}"},
        {"title": f"The history of {topic}", "url": f"https://example.org/history/{words[0]}"},
        {"title": f"{topic} in numbers", "url": f"https://example.org/data/{words[-1]}"},
    ]


def problems(text: str, topic: str) -> list[str]:
    """Your own checks, in plain Python: what the editor must fix."""
    found = []
    if len(text.split()) < 150:
        found.append("it is under 150 words")
    if topic.split()[0].lower() not in text.lower():
        found.append(f"it never names {topic!r}")
    if re.search(r"\bas an ai\b", text, re.IGNORECASE):
        found.append("it talks about itself")
    return found


async def ask(client: Any, system: str, prompt: str, max_tokens: int = 800) -> str:
    reply = await client.chat.completions.create(
        model=MODEL,
        max_tokens=max_tokens,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
    )
    return reply.choices[0].message.content or ""


async def article(topic: str, fleet: chainfleet.Fleet) -> dict[str, Any]:
    """One topic through research, writing and editing; the return value is the item's output."""
    client = fleet.openai()  # AsyncOpenAI from the environment, its HTTP through chainfleet
    sources = await fleet.step("search", search, topic)
    listed = "\n".join(f"- {s['title']} ({s['url']})" for s in sources)

    with fleet.stage("research"):
        notes = await ask(client, "You are a meticulous research agent.", f"Research {topic}.\n{listed}")
    with fleet.stage("write"):
        draft = await ask(
            client, "You are a clear, engaging writer.", f"Write an article on {topic}:\n{notes}"
        )
    with fleet.stage("edit"):
        rounds = 0
        feedback: list[str] = []
        while True:
            rounds += 1
            note = "\nFix these problems: " + "; ".join(feedback) if feedback else ""
            edited = await ask(
                client, "You are a strict editor.", f"Edit this article on {topic}:{note}\n{draft}"
            )
            feedback = problems(edited, topic)
            if not feedback or rounds >= MAX_ROUNDS:
                break
            draft = edited
    return {"article": edited, "sources": [s["url"] for s in sources], "rounds": rounds, "open": feedback}
