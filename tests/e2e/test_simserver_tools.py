"""The sim-server playing agent in all three wire formats, as the official SDKs meet it.

OpenAI chat completions (``tools``, ``tool_calls``, ``role: tool``), Anthropic messages
(``tool_use`` / ``tool_result`` blocks) and the OpenAI Responses API (``function_call`` /
``function_call_output`` items), each driven to its final answer by the real SDK over HTTP on
127.0.0.1; and the Responses API's plain text, structured output, limits and errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import jsonschema
import openai
import pytest

from chainfleet.sim.batch import BatchSimSettings
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from chainfleet.sim.text import count_tokens

KEY = "sk-sim-test-key-0123456789"
MODEL = "gpt-4o-mini"
CLAUDE = "claude-sim-test"
SYSTEM = "You are a meticulous research agent."
PROMPT = "Research urban beekeeping: the key facts."

SEARCH = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["query"],
    "additionalProperties": False,
}
FETCH = {"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}, "required": ["url"]}
SCHEMAS = {"search": SEARCH, "fetch": FETCH}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


#: the SDK clients a test made, closed when the module's server stops
_CLIENTS: list[openai.OpenAI | anthropic.Anthropic] = []


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,)), batch=BatchSimSettings(delay=0.0)) as sim:
        yield sim
        while _CLIENTS:
            _CLIENTS.pop().close()


@pytest.fixture
def sim(server: SimServerThread) -> SimServerThread:
    server.configure(rpm=None, tpm=None)
    server.reset()
    return server


def oai(sim: SimServerThread) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    _CLIENTS.append(client)
    return client


def claude(sim: SimServerThread) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0, timeout=10)
    _CLIENTS.append(client)
    return client


def tool_result(name: str, arguments: dict[str, Any], fail: str) -> tuple[str, bool]:
    if name == fail:
        return f"Error: {name} is down", True
    return f"{name} found: hives on {len(json.dumps(arguments))} roofs.", False


# --- the three loops, each run to its answer --------------------------------------------------------


def chat_loop(
    client: openai.OpenAI, prompt: str = PROMPT, fail: str = "", **extra: Any
) -> tuple[list[Any], str]:
    tools = [{"type": "function", "function": {"name": n, "parameters": s}} for n, s in SCHEMAS.items()]
    messages: list[Any] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    trajectory = []
    for _ in range(10):
        done = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, **extra)  # type: ignore[arg-type]
        message = done.choices[0].message
        if not message.tool_calls:
            assert done.choices[0].finish_reason == "stop"
            return trajectory, message.content or ""
        assert done.choices[0].finish_reason == "tool_calls"
        calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]  # type: ignore[union-attr]
        trajectory.append(calls)
        messages.append(message.model_dump(exclude_none=True))
        for call_id, name, arguments in calls:
            text, _ = tool_result(name, arguments, fail)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
    raise AssertionError("no answer")


def anthropic_loop(
    client: anthropic.Anthropic, prompt: str = PROMPT, fail: str = "", model: str = CLAUDE
) -> tuple[list[Any], str]:
    tools = [{"name": n, "description": f"The {n} tool.", "input_schema": s} for n, s in SCHEMAS.items()]
    messages: list[Any] = [{"role": "user", "content": prompt}]
    trajectory = []
    for _ in range(10):
        done = client.messages.create(
            model=model, max_tokens=1024, system=SYSTEM, messages=messages, tools=tools
        )  # type: ignore[arg-type]
        uses = [b for b in done.content if b.type == "tool_use"]
        if not uses:
            assert done.stop_reason == "end_turn"
            return trajectory, "".join(b.text for b in done.content if b.type == "text")
        assert done.stop_reason == "tool_use"
        trajectory.append([(b.id, b.name, b.input) for b in uses])
        messages.append({"role": "assistant", "content": [b.model_dump() for b in done.content]})
        results = []
        for block in uses:
            text, error = tool_result(block.name, block.input, fail)  # type: ignore[arg-type]
            results.append(
                {"type": "tool_result", "tool_use_id": block.id, "content": text, "is_error": error}
            )
        messages.append({"role": "user", "content": results})
    raise AssertionError("no answer")


def responses_loop(client: openai.OpenAI, prompt: str = PROMPT, fail: str = "") -> tuple[list[Any], str]:
    tools = [{"type": "function", "name": n, "parameters": s, "strict": False} for n, s in SCHEMAS.items()]
    items: list[Any] = [{"role": "user", "content": prompt}]
    trajectory = []
    for _ in range(10):
        done = client.responses.create(model=MODEL, instructions=SYSTEM, input=items, tools=tools)  # type: ignore[arg-type]
        calls = [item for item in done.output if item.type == "function_call"]
        if not calls:
            return trajectory, done.output_text
        trajectory.append([(c.call_id, c.name, json.loads(c.arguments)) for c in calls])
        items += [c.model_dump(exclude_none=True) for c in calls]
        for call in calls:
            text, _ = tool_result(call.name, json.loads(call.arguments), fail)
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": text})
    raise AssertionError("no answer")


def test_chat_completions_calls_tools_in_turns_then_answers_with_their_results(sim: SimServerThread) -> None:
    trajectory, answer = chat_loop(oai(sim))

    assert 1 <= len(trajectory) <= 3
    for calls in trajectory:
        for call_id, name, arguments in calls:
            assert call_id.startswith("call_")
            jsonschema.validate(arguments, SCHEMAS[name])
    assert "found: hives on" in answer
    stats = sim.stats()
    assert stats["tool_calls"] == sum(len(calls) for calls in trajectory)
    assert stats["ok"] == len(trajectory) + 1
    assert set(stats["completed_by_key"].values()) == {1}  # every turn is a distinct request


def test_all_three_formats_make_the_same_calls_and_the_same_answer(sim: SimServerThread) -> None:
    chat = chat_loop(oai(sim))
    messages = anthropic_loop(claude(sim), model=MODEL)  # the model's name varies the wording
    responses = responses_loop(oai(sim))

    assert chat == messages == responses
    assert anthropic_loop(claude(sim))[0] == chat[0]
    assert chat_loop(oai(sim)) == chat  # and again: deterministic


def test_parallel_calls_come_in_one_turn(sim: SimServerThread) -> None:
    turns = [
        calls
        for topic in ("tea", "bees", "salt", "jazz", "rain")
        for calls in chat_loop(oai(sim), f"Research {topic}.")[0]
    ]
    assert max(len(calls) for calls in turns) == 2
    single = [
        c
        for t in ("tea", "bees", "salt", "jazz", "rain")
        for c in chat_loop(oai(sim), f"Research {t}.", parallel_tool_calls=False)[0]
    ]
    assert {len(calls) for calls in single} == {1}


def test_a_failed_tool_shows_in_the_answer_in_every_format(sim: SimServerThread) -> None:
    prompt = "Research tides. [[sim:tool_turns=2]]"
    for trajectory, answer in (
        chat_loop(oai(sim), prompt, fail="search"),
        anthropic_loop(claude(sim), prompt, fail="search"),
        responses_loop(oai(sim), prompt, fail="search"),
    ):
        assert len(trajectory) == 2
        names = {name for calls in trajectory for _, name, _ in calls}
        if "search" in names:
            assert "search failed: Error: search is down" in answer
        assert "failed" in answer or names == {"fetch"}


def test_tool_choice_none_required_and_named(sim: SimServerThread) -> None:
    client = oai(sim)
    tools = [{"type": "function", "function": {"name": n, "parameters": s}} for n, s in SCHEMAS.items()]
    messages = [{"role": "user", "content": "Research tea. [[sim:tool_turns=0]]"}]

    def create(choice: Any) -> Any:
        return client.chat.completions.create(
            model=MODEL, messages=messages, tools=tools, tool_choice=choice
        ).choices[0]  # type: ignore[arg-type]

    assert create("none").message.tool_calls is None
    assert create("auto").message.tool_calls is None  # zero turns: it answers
    assert create("required").finish_reason == "tool_calls"
    named = create({"type": "function", "function": {"name": "fetch"}})
    assert {c.function.name for c in named.message.tool_calls} == {"fetch"}
    with pytest.raises(openai.BadRequestError, match="no function named 'nope'"):
        create({"type": "function", "function": {"name": "nope"}})


def test_anthropic_forced_tool_choice_still_means_structured_output(sim: SimServerThread) -> None:
    done = claude(sim).messages.create(
        model=CLAUDE,
        max_tokens=400,
        messages=[{"role": "user", "content": "Research tea."}],
        tools=[{"name": "search", "input_schema": SEARCH}, {"name": "fetch", "input_schema": FETCH}],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "fetch"},
    )
    assert [b.name for b in done.content if b.type == "tool_use"] == ["fetch"]
    assert sim.stats()["structured"] == {"tool": 1} and sim.stats()["tool_calls"] == 0


def test_a_malformed_tool_call_is_refused_naming_its_place(sim: SimServerThread) -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {}}]},
        ],
    }
    response = httpx.post(
        f"{sim.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 422
    assert "messages.1.tool_calls.0.function.name" in response.json()["error"]["message"]
    blocks = [{"type": "image", "source": {}}]
    response = httpx.post(
        f"{sim.url}/v1/messages",
        json={"model": CLAUDE, "max_tokens": 10, "messages": [{"role": "user", "content": blocks}]},
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 400
    assert "messages.0.content.0" in response.json()["error"]["message"]


def test_json_mode_is_allowed_when_only_the_system_message_says_json(sim: SimServerThread) -> None:
    done = oai(sim).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "Research tea."},
        ],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(done.choices[0].message.content or ""), dict)
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        oai(sim).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Research tea."}],
            response_format={"type": "json_object"},
        )


# --- the Responses API ----------------------------------------------------------------------------


def test_responses_answers_a_string_input_with_text_and_usage(sim: SimServerThread) -> None:
    client = oai(sim)
    done = client.responses.create(model=MODEL, input=PROMPT, instructions=SYSTEM, max_output_tokens=120)

    assert done.status == "completed" and done.output_text
    assert count_tokens(done.output_text) <= 120
    assert done.usage is not None
    assert done.usage.output_tokens == count_tokens(done.output_text)
    assert done.usage.input_tokens == count_tokens(SYSTEM) + count_tokens(PROMPT)
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    chat = client.chat.completions.create(
        model=MODEL,
        max_tokens=120,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
    )
    assert chat.choices[0].message.content == done.output_text  # the same model behind both routes
    stats = sim.stats()
    assert stats["ok"] == 2 and len(stats["completed_by_key"]) == 1
    assert stats["tokens"]["output"] == 2 * done.usage.output_tokens


def test_responses_items_input_reads_like_messages(sim: SimServerThread) -> None:
    items = [
        {"type": "message", "role": "developer", "content": SYSTEM},
        {"role": "user", "content": [{"type": "input_text", "text": PROMPT}]},
    ]
    done = oai(sim).responses.create(model=MODEL, input=items)  # type: ignore[arg-type]
    again = oai(sim).responses.create(model=MODEL, input=PROMPT, instructions=SYSTEM)
    assert done.output_text == again.output_text


def test_responses_structured_output_follows_the_schema(sim: SimServerThread) -> None:
    fmt = {
        "type": "json_schema",
        "name": "search",
        "schema": {**SEARCH, "required": ["query", "limit"]},
        "strict": True,
    }
    done = oai(sim).responses.create(model=MODEL, input="Research tea.", text={"format": fmt})  # type: ignore[typeddict-item]
    jsonschema.validate(json.loads(done.output_text), SEARCH)
    assert sim.stats()["structured"] == {"json_schema": 1}
    with pytest.raises(
        openai.BadRequestError, match="Invalid schema for text.format 'search'.*additionalProperties"
    ):
        loose = {
            **fmt,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        }
        oai(sim).responses.create(model=MODEL, input="Research tea.", text={"format": loose})  # type: ignore[typeddict-item]


def test_responses_errors_come_in_openais_shape_and_cost_no_limit(sim: SimServerThread) -> None:
    url = f"{sim.url}/v1/responses"
    auth = {"Authorization": f"Bearer {KEY}"}
    cases = [
        ({}, {"model": MODEL, "input": "Hi"}, 401),
        (auth, {"model": MODEL}, 422),
        (auth, {"model": MODEL, "input": [{"type": "web_search_call"}]}, 422),
        (auth, {"model": MODEL, "input": "Hi", "max_output_tokens": 0}, 422),
        (auth, {"model": MODEL, "input": "Hi", "previous_response_id": "resp_1"}, 400),
        (auth, {"model": MODEL, "input": "Hi", "tools": [{"type": "web_search"}]}, 400),
    ]
    for headers, body, status in cases:
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    sim.configure(models=(MODEL,))
    try:
        with pytest.raises(openai.NotFoundError, match="gpt-5"):
            oai(sim).responses.create(model="gpt-5", input="Hi")
    finally:
        sim.configure(models=())
    assert sim.stats()["ok"] == 0


def test_responses_meet_the_rate_limits_like_chat(sim: SimServerThread) -> None:
    sim.configure(rpm=1)
    client = oai(sim)
    client.responses.create(model=MODEL, input="Hi")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    sim.reset()
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model=MODEL, input="Hi")
    assert caught.value.response.headers["x-ratelimit-limit-requests"] == "1"
    stats = sim.stats()
    assert stats["ok"] == 1 and stats["rate_limited"] == 1 and stats["status"] == {"200": 1, "429": 1}


# --- the batch APIs -------------------------------------------------------------------------------


def test_batch_requests_with_tools_get_the_same_tool_calls_as_online(sim: SimServerThread) -> None:
    client = claude(sim)
    tools = [{"name": n, "input_schema": s} for n, s in SCHEMAS.items()]
    params: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 500,
        "messages": [{"role": "user", "content": PROMPT}],
        "tools": tools,
    }
    online = client.messages.create(**params)
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])  # type: ignore[list-item]
    for _ in range(200):
        if client.messages.batches.retrieve(batch.id).processing_status == "ended":
            break
    [result] = list(client.messages.batches.results(batch.id))
    assert result.result.type == "succeeded"
    assert result.result.message.stop_reason == "tool_use"  # type: ignore[union-attr]
    assert result.result.message.content == online.content  # type: ignore[union-attr]

    chat = oai(sim)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "tools": [{"type": "function", "function": {"name": n, "parameters": s}} for n, s in SCHEMAS.items()],
    }
    line = json.dumps({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": body})
    uploaded = chat.files.create(file=("in.jsonl", line.encode()), purpose="batch")
    job = chat.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(200):
        job = chat.batches.retrieve(job.id)
        if job.status == "completed":
            break
    answer = json.loads(chat.files.content(job.output_file_id or "").text)["response"]["body"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    online_calls = chat.chat.completions.create(**body).choices[0].message.tool_calls or []
    assert [c["id"] for c in answer["choices"][0]["message"]["tool_calls"]] == [c.id for c in online_calls]


# --- embeddings -----------------------------------------------------------------------------------


def test_embeddings_answer_unit_vectors_that_depend_on_the_text_alone(sim: SimServerThread) -> None:
    import math

    client = oai(sim)
    texts = ["green tea", "green tea leaves", "tidal power"]
    done = client.embeddings.create(model="text-embedding-3-small", input=texts)  # the SDK asks for base64
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")

    vectors = [d.embedding for d in done.data]
    assert [len(v) for v in vectors] == [1536] * 3
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)
    assert [[round(x, 5) for x in v] for v in vectors] == [
        [round(x, 5) for x in d.embedding] for d in floats.data
    ]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert done.usage.prompt_tokens == done.usage.total_tokens == sum(count_tokens(t) for t in texts)
    small = client.embeddings.create(model="text-embedding-3-small", input="tea", dimensions=8)
    assert len(small.data[0].embedding) == 8
    stats = sim.stats()
    assert stats["ok"] == 3 and stats["tokens"]["output"] == 0


def test_embeddings_meet_the_limits_and_refuse_bad_input(sim: SimServerThread) -> None:
    client = oai(sim)
    with pytest.raises(openai.UnprocessableEntityError, match="input"):
        client.embeddings.create(model="text-embedding-3-small", input=[])
    sim.configure(rpm=1)
    client.embeddings.create(model="text-embedding-3-small", input="tea")
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="text-embedding-3-small", input="tea")
    assert sim.stats()["rate_limited"] == 1
