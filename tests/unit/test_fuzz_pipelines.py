"""Fuzzing: generated pipelines (stages, templates, gates, schemas, review rules) and input files
(text, JSONL, CSV), loaded and run on the simulated model. Whatever they hold, the outcome is
an exit code a user can act on, 0, 1, 2 or 3, and never an exception out of chainfleet: a
mistake the load checks miss must still fail its item, not the run (issue 22, D3).

Profiles (hypothesis settings): ``ci``, the default, runs 200 examples a test (600 in all) in
well under a minute, the same ones every time (derandomized, no example database); ``deep``
runs 5,000 fresh ones a test and keeps the failures it finds to replay:

    HYPOTHESIS_PROFILE=deep python -m pytest tests/unit/test_fuzz_pipelines.py

Nothing leaves this machine: every model is the built-in sim (a provider that needs a key or a
URL is refused before any call), and schemas that name a URL are refused, never fetched.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chainfleet import Pipeline, run
from chainfleet.errors import ConfigError

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "deep",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
if settings().max_examples > 1_000:  # a deep run takes as long as it takes: no per-test timeout
    pytestmark = pytest.mark.timeout(0)

#: the exit codes a run may end with: done, items failed, bad input, items wait for review
EXIT_CODES = {0, 1, 2, 3}

NAMES = st.sampled_from(
    ["research", "write", "edit", "a", "b2", "topic", "id", "1bad", "with space", "", "x" * 90]
)
FRAGMENTS = st.sampled_from(
    [
        "Write on {{ topic }}.",
        "From: {{ research }}",
        "{{ write }}",
        "{{ edit }}",
        "{{ nope }}",
        "{{ id }}",
        "{{ topic|upper }}",
        "{{ topic|length }}",
        "{{ (topic|length) / 0 }}",
        "{{ research.facts[0] }}",
        "{{ research.missing.deeper }}",
        "{% for w in topic.split() %}{{ w }} {% endfor %}",
        "{% if topic %}yes{% else %}no{% endif %}",
        "{% include 'x.txt' %}",
        "{% extends 'base.txt' %}",
        "{% import 'm.txt' as m %}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ topic",
        "{% endfor %}",
        "{{ feedback }}",
        "plain words",
        "",
    ]
)
TEMPLATES = st.one_of(st.lists(FRAGMENTS, max_size=4).map(" ".join), st.text(max_size=40))

LEAF_SCHEMAS = st.sampled_from(
    [
        {"type": "string"},
        {"type": "string", "minLength": 5, "maxLength": 3},
        {"type": "string", "minLength": 10**9},
        {"type": "integer", "minimum": 10, "maximum": 1},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["a", "b"]},
        {"const": 3},
        {"type": "array", "minItems": 10**9, "items": {"type": "string"}},
        {"$ref": "#/$defs/nope"},
        {"$ref": "#"},
        {"$ref": "http://127.0.0.1:9/s.json"},
        {"$ref": "file:///etc/hostname"},
        {"type": "wibble"},
        {"anyOf": [True, {"type": "null"}]},
        {},
    ]
)
SCHEMAS = st.recursive(
    LEAF_SCHEMAS,
    lambda inner: st.one_of(
        st.builds(
            lambda props, required: {"type": "object", "properties": props, "required": required},
            st.dictionaries(st.sampled_from(["facts", "score", "title", "url", "next"]), inner, max_size=3),
            st.lists(st.sampled_from(["facts", "score", "title", "ghost"]), max_size=2),
        ),
        st.builds(lambda items: {"type": "array", "items": items}, inner),
        st.builds(
            lambda node: {"$defs": {"node": node}, "$ref": "#/$defs/node"},
            st.just(
                {"type": "object", "properties": {"v": {"type": "string"}, "next": {"$ref": "#/$defs/node"}}}
            ),
        ),
    ),
    max_leaves=6,
)
GATES = st.lists(
    st.one_of(
        st.builds(lambda n: {"min_words": n}, st.one_of(st.integers(-5, 60), st.text(max_size=3))),
        st.builds(lambda n: {"max_words": n}, st.integers(-5, 600)),
        st.builds(lambda t: {"must_include": t}, TEMPLATES),
        st.builds(lambda t: {"must_not_include": t}, TEMPLATES),
        st.builds(lambda p: {"regex": p}, st.sampled_from(["\\w+", "(", "[a-z", "a{99999}"])),
        st.builds(
            lambda rubric, threshold: {"judge": {"rubric": rubric, "threshold": threshold}},
            TEMPLATES,
            st.integers(-1, 12),
        ),
        st.sampled_from(
            [
                {"check": "os.path:exists"},
                {"check": "os.path:nope"},
                {"check": "nope.module:f"},
                {"check": "review_gates:no_lorem"},
                {"check": "review_gates:breaks_on_boom"},
                {"bogus": 1},
            ]
        ),
    ),
    max_size=3,
)
STAGES = st.fixed_dictionaries(
    {"name": NAMES, "prompt": TEMPLATES},
    optional={
        "system": TEMPLATES,
        "max_tokens": st.one_of(st.integers(-10, 3000), st.text(max_size=4)),
        "output": SCHEMAS,
        "gate": GATES,
        "review": st.sampled_from(["always", "never", "on_fail", "bogus", {"when": "quality < 50"}]),
        "model": st.sampled_from(["sim", "sim:judge", "nope:model", "sim:"]),
        "revise": NAMES,
        "tool": st.sampled_from(["os.path:basename", "nope:f", "review_gates:no_lorem"]),
    },
)
PIPELINES = st.fixed_dictionaries(
    {
        "name": st.text(max_size=12),
        "model": st.sampled_from(["sim", "sim", "sim", "nope:x"]),
        "sim": st.fixed_dictionaries(
            {"latency": st.just(0)},
            optional={
                "seed": st.integers(-3, 10**6),
                "invalid_output_rate": st.floats(0, 1),
                "fail_on": st.lists(st.sampled_from(["topic", "boom", ""]), max_size=2),
            },
        ),
        "input": st.sampled_from(["topic", "text", "id"]),
        "stages": st.lists(STAGES, max_size=3),
    },
    optional={"concurrency": st.integers(-1, 20), "retries": st.integers(-1, 3)},
)

#: what a template that passes the load checks can still meet at run time
RUN_TIME = st.sampled_from(
    [
        "",
        " {{ topic|upper }}",
        " {{ (topic|length) / 0 }}",
        " {{ topic[99] }}",
        " {{ topic|int / 0 }}",
        " {% for w in topic.split() %}{{ w }} {% endfor %}",
        " {{ topic * 3 }}",
        " {{ topic|truncate(0) }}",
    ]
)
RUN_GATES = st.lists(
    st.one_of(
        st.builds(lambda n: {"min_words": n}, st.integers(0, 60)),
        st.builds(lambda t: {"must_include": "{{ topic }}" + t}, RUN_TIME),
        st.builds(lambda t: {"judge": {"rubric": "Judge {{ topic }}." + t, "threshold": 7}}, RUN_TIME),
        st.sampled_from([{"check": "os.path:exists"}, {"check": "review_gates:breaks_on_boom"}]),
    ),
    max_size=2,
)


@st.composite
def runnable(draw: st.DrawFn) -> dict[str, Any]:
    """A pipeline that mostly passes the load checks, so it runs: what is left to go wrong is
    what only the items show (a template dividing by zero, a check that raises, a schema)."""
    names = ["research", "write", "edit"][: draw(st.integers(1, 3))]
    stages = []
    for number, name in enumerate(names):
        earlier = f" from {{{{ {names[number - 1]} }}}}" if number else ""
        stage: dict[str, Any] = {
            "name": name,
            "prompt": f"{name} on {{{{ topic }}}}{earlier}" + draw(RUN_TIME),
        }
        if draw(st.booleans()):
            stage["gate"] = draw(RUN_GATES)
        if draw(st.integers(0, 3)) == 0:
            stage["output"] = draw(SCHEMAS)
        if draw(st.integers(0, 4)) == 0:
            stage["review"] = "always"
        stages.append(stage)
    sim = {
        "latency": 0,
        "seed": draw(st.integers(0, 100)),
        "invalid_output_rate": draw(st.sampled_from([0, 0, 0.3])),
    }
    return {"name": "fuzz", "model": "sim", "sim": sim, "input": "topic", "stages": stages}


TOPICS = st.lists(
    st.text(st.characters(exclude_characters="\r\n\x85\u2028\u2029"), min_size=1, max_size=30),
    min_size=1,
    max_size=4,
)

CELLS = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=True))
ROWS = st.lists(st.dictionaries(st.sampled_from(["topic", "text", "id", "x"]), CELLS, max_size=4), max_size=4)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, str]:
    """(file name, text): lines of text, JSON lines (some broken), or CSV."""
    kind = draw(st.sampled_from(["txt", "jsonl", "csv"]))
    if kind == "txt":
        return "in.txt", "\n".join(draw(st.lists(st.text(max_size=30), max_size=5)))
    rows = draw(ROWS)
    if kind == "jsonl":
        lines = [json.dumps(row) for row in rows] + draw(
            st.lists(st.sampled_from(["{", "[]", "null", "", "1"]), max_size=1)
        )
        return "in.jsonl", "\n".join(lines)
    buffer = io.StringIO()
    fields = sorted({key for row in rows for key in row}) or ["topic"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return "in.csv", buffer.getvalue()


def outcome(pipeline_text: str, input_name: str, input_text: str) -> int:
    """Load and run, as ``chainfleet run`` does; the exit code it would end with."""
    with tempfile.TemporaryDirectory() as folder:
        pipeline_file, input_file = Path(folder, "p.yaml"), Path(folder, input_name)
        pipeline_file.write_text(pipeline_text, encoding="utf-8", errors="surrogatepass")
        input_file.write_text(input_text, encoding="utf-8", errors="surrogatepass")
        try:
            pipeline = Pipeline.from_yaml(pipeline_file)
            report = run(pipeline, str(input_file), concurrency=4, max_attempts=2, retry_passes=0)
        except ConfigError:
            return 2
        return report.exit_code


@given(PIPELINES, inputs())
def test_a_generated_pipeline_and_input_end_in_an_exit_code(
    pipeline: dict[str, Any], given_input: tuple[str, str]
) -> None:
    code = outcome(yaml.safe_dump(pipeline, allow_unicode=True), *given_input)
    event(f"exit {code}")  # --hypothesis-show-statistics: how many got past the load checks
    assert code in EXIT_CODES


@given(runnable(), TOPICS)
def test_a_pipeline_that_loads_ends_each_item_in_an_outcome(
    pipeline: dict[str, Any], topics: list[str]
) -> None:
    code = outcome(yaml.safe_dump(pipeline, allow_unicode=True), "in.txt", "\n".join(topics) + "\n")
    event(f"exit {code}")
    assert code in EXIT_CODES


@given(st.text(max_size=300), inputs())
def test_any_text_as_a_pipeline_file_ends_in_an_exit_code(text: str, given_input: tuple[str, str]) -> None:
    assert outcome(text, *given_input) in EXIT_CODES
