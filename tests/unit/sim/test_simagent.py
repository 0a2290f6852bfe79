"""The simulated model playing agent: deterministic calls, schema-valid arguments, turns, answers."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from chainfleet.sim.agent import PlannedCall, answer, answer_prompt, next_turn, tool_turns_in
from chainfleet.sim.text import count_tokens

SEARCH = {
    "name": "search",
    "description": "Search a small corpus.",
    "parameters": {
        "type": "object",
        "properties": {
            "query": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
}
# what pydantic's TypeAdapter makes of `def fetch(url: str, kind: Literal["html", "text"] = "text")`
FETCH = {
    "name": "fetch",
    "description": "Fetch a page.",
    "parameters": {
        "properties": {
            "url": {"title": "Url", "type": "string"},
            "kind": {"default": "text", "enum": ["html", "text"], "title": "Kind", "type": "string"},
        },
        "required": ["url"],
        "title": "fetch",
        "type": "object",
    },
}
# mcp-server-time's convert_time, as its server lists it
CONVERT = {
    "name": "convert_time",
    "description": "Convert time between timezones",
    "parameters": {
        "type": "object",
        "properties": {
            "source_timezone": {"type": "string", "description": "Source IANA timezone name"},
            "time": {"type": "string", "description": "Time to convert in 24-hour format (HH:MM)"},
            "target_timezone": {"type": "string", "description": "Target IANA timezone name"},
            "flags": {"type": "array", "items": {"type": "boolean"}},
            "ratio": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "required": ["source_timezone", "time", "target_timezone"],
    },
}
NOW = {"name": "now", "description": "The time now.", "parameters": {}}
TOOLS = [SEARCH, FETCH, CONVERT, NOW]
PROMPTS = [f"Research {topic}." for topic in ("urban beekeeping", "tidal power", "coral reefs", "jazz")]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a researcher."}, {"role": "user", "content": text}]


def play(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    seed: int = 0,
    tool_turns: int | None = None,
    fail: str = "",
) -> list[list[PlannedCall]]:
    """Run the loop as an agent runner would: every call answered (``fail``: that tool errors)."""
    turns = []
    for _ in range(10):
        calls = next_turn(messages, tools, seed=seed, tool_turns=tool_turns)
        if not calls:
            return turns
        turns.append(calls)
        messages.append({"role": "assistant", "content": "", "tool_calls": [c.as_message() for c in calls]})
        for call in calls:
            error = call.name == fail
            content = f"{call.name} is down" if error else f"{call.name} found: bees like warm roofs."
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content, "is_error": error})
    raise AssertionError("the sim never answered")


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_same_conversation_gives_the_same_calls_ids_and_arguments(seed: int, prompt: str) -> None:
    first = play(user(prompt), TOOLS, seed=seed)
    again = play(user(prompt), TOOLS, seed=seed)
    assert first == again
    assert first, "with tools and no tool_turns the sim calls at least once"


def test_other_seeds_and_prompts_play_differently() -> None:
    plays = {repr(play(user(p), TOOLS, seed=s)) for p in PROMPTS for s in range(3)}
    assert len(plays) == len(PROMPTS) * 3


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("prompt", PROMPTS)
def test_arguments_are_valid_against_each_tools_schema(seed: int, prompt: str) -> None:
    schemas = {tool["name"]: tool["parameters"] or {"type": "object"} for tool in TOOLS}
    for calls in play(user(prompt), TOOLS, seed=seed):
        for call in calls:
            jsonschema.validate(call.arguments, schemas[call.name])
            assert isinstance(call.arguments, dict)


def test_ids_look_like_openai_call_ids_and_are_unique_in_a_conversation() -> None:
    ids = [c.id for p in PROMPTS for s in range(4) for turn in play(user(p), TOOLS, seed=s) for c in turn]
    assert all(i.startswith("call_") and len(i) == 29 for i in ids)
    assert len(set(ids)) == len(ids)


def test_calls_are_a_subset_of_the_tools_with_parallel_calls_sometimes() -> None:
    turns = [turn for p in PROMPTS for s in range(6) for turn in play(user(p), TOOLS, seed=s)]
    names = {c.name for turn in turns for c in turn}
    assert names <= {t["name"] for t in TOOLS}
    assert {len(turn) for turn in turns} == {1, 2}


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5])
def test_tool_turns_is_honoured_then_it_answers(turns: int) -> None:
    assert len(play(user(PROMPTS[0]), TOOLS, tool_turns=turns)) == turns


def test_tool_turns_come_from_the_prompt_else_one_to_three_by_seed() -> None:
    messages = user("Research tea. [[sim:tool_turns=4]]")
    assert tool_turns_in(messages) == 4
    assert len(play(messages, TOOLS)) == 4
    assert {len(play(user(p), TOOLS, seed=s)) for p in PROMPTS for s in range(8)} == {1, 2, 3}


def test_no_tools_means_an_answer() -> None:
    assert next_turn(user(PROMPTS[0]), [], seed=0) == []


def test_turns_count_again_after_an_answer() -> None:
    messages = user(PROMPTS[0])
    first = play(messages, TOOLS, tool_turns=1)
    messages += [{"role": "assistant", "content": "Done."}, {"role": "user", "content": "And more?"}]
    assert len(play(messages, TOOLS, tool_turns=1)) == 1
    assert first


def test_answer_prompt_holds_the_prompt_the_results_and_the_errors() -> None:
    messages = user(PROMPTS[0])
    turns = play(messages, [SEARCH, FETCH], seed=3, tool_turns=2, fail="fetch")
    prompt = answer_prompt(messages)
    assert prompt.startswith(PROMPTS[0])
    names = [c.name for turn in turns for c in turn]
    for name in names:
        if name == "fetch":
            assert "- fetch failed: fetch is down" in prompt
        else:
            assert "search found: bees like warm roofs." in prompt
            assert '"query"' in prompt
    assert answer_prompt(user(PROMPTS[0])) == PROMPTS[0]


def test_the_answer_uses_the_tool_results_and_shows_a_failure() -> None:
    messages = user(PROMPTS[1])
    play(messages, [SEARCH], tool_turns=1)
    good = answer(messages, seed=0, max_tokens=500)
    assert 'search said: "search found: bees like warm roofs."' in good
    failed = user(PROMPTS[1])
    play(failed, [SEARCH], tool_turns=1, fail="search")
    bad = answer(failed, seed=0, max_tokens=500)
    assert "search failed: search is down." in bad
    assert good != bad
    assert answer(messages, seed=0, max_tokens=500) == good


@pytest.mark.parametrize("max_tokens", [1, 20, 40, 300])
def test_the_answer_keeps_within_max_tokens(max_tokens: int) -> None:
    messages = user(PROMPTS[2])
    play(messages, TOOLS, tool_turns=3)
    assert count_tokens(answer(messages, seed=0, max_tokens=max_tokens)) <= max(max_tokens, 13)


def test_a_search_query_argument_is_a_short_query_about_the_subject() -> None:
    prompt = "Research urban beekeeping: the key facts. [[sim:tool_turns=2]]"
    queries = {
        c.arguments["query"] for s in range(6) for turn in play(user(prompt), [SEARCH], seed=s) for c in turn
    }
    assert all(q.startswith("urban beekeeping ") and len(q.split()) <= 5 for q in queries)
    assert len(queries) > 1
