"""timeline.png and report.html: a valid image for any number of calls, a page that parses, holds
its tables and image, and never lets a topic's markup through."""

from __future__ import annotations

import base64
import io
import random
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from chainfleet import Pipeline, run
from chainfleet.report.agents import ToolBar
from chainfleet.report.chart import (
    BACKOFF,
    COOLDOWN,
    FAILED,
    LIMITER,
    PALETTE,
    TOOL,
    SampledCalls,
    _completed,
    _occupancy,
    timeline_png,
)
from chainfleet.report.html import report_html
from chainfleet.store.runstore import CallRow, ItemRecord
from conftest import pipeline_data

STAGES = ["research", "write", "edit"]


def synthetic_calls(items: int, *, chains: int = 5, seed: int = 0) -> list[CallRow]:
    """Calls as a run with ``chains`` in flight makes them: some waits, some failures, backoff."""
    rng = random.Random(seed)
    free_at = [0.0] * chains
    rows = []
    for index in range(1, items + 1):
        slot = min(range(chains), key=free_at.__getitem__)
        now = free_at[slot]
        for stage in STAGES:
            for attempt in range(1, 5):
                limiter = rng.random() * 0.3 if rng.random() < 0.2 else 0.0
                cooldown = rng.random() if rng.random() < 0.05 else 0.0
                started = now + limiter + cooldown
                ended = started + rng.uniform(0.2, 1.0)
                failed = attempt < 4 and rng.random() < 0.2
                backoff = rng.uniform(0.5, 2.0) if failed else 0.0
                rows.append(
                    CallRow(
                        index=index,
                        item_id=f"item-{index}",
                        stage=stage,
                        attempt=attempt,
                        queued=now,
                        started=started,
                        ended=ended,
                        status="server_error" if failed else "ok",
                        limiter_wait=limiter,
                        cooldown_wait=cooldown,
                        backoff=backoff,
                        input_tokens=100,
                        output_tokens=200,
                        error="HTTP 500" if failed else None,
                    )
                )
                now = ended + backoff
                if not failed:
                    break
        free_at[slot] = now
    return sorted(rows, key=lambda r: r.started)


def open_png(path: Path) -> Image.Image:
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(path)
    image.load()  # reads every byte: a truncated file fails here
    assert image.format == "PNG"
    assert image.mode in ("RGB", "RGBA")
    return image


def colours(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> set[str]:
    """The exact colours of the image's pixels (in ``box``), as ``#RRGGBB``."""
    region = image.convert("RGB") if box is None else image.convert("RGB").crop(box)
    found = region.getcolors(maxcolors=region.width * region.height) or []
    return {"#{:02X}{:02X}{:02X}".format(*rgb) for _, rgb in found}


#: the strip above the rows panel that holds its legend
LEGEND = (0, 55, 1400, 84)


# -- timeline.png -----------------------------------------------------------------------------


def test_no_calls_gives_a_small_figure_saying_so(tmp_path: Path) -> None:
    path = timeline_png([], tmp_path / "t.png", title="empty", stages_order=STAGES)

    assert path == tmp_path / "t.png"
    image = open_png(path)
    assert image.size[0] < 1000 and image.size[1] < 400


def test_one_call_makes_a_full_size_chart(tmp_path: Path) -> None:
    call = CallRow(1, "only", "research", 1, 0.0, 0.0, 0.8, "ok")

    image = open_png(timeline_png([call], tmp_path / "t.png", title="one", stages_order=STAGES))

    assert image.size == (1400, 900)
    assert PALETTE[0] in colours(image, LEGEND)  # the stage's legend swatch
    assert len(colours(image)) > 20  # axes, text, bars: not a blank page


def test_each_stage_and_each_kind_of_wait_has_its_legend_colour(tmp_path: Path) -> None:
    calls = synthetic_calls(40)

    image = open_png(timeline_png(calls, tmp_path / "t.png", title="content", stages_order=STAGES))

    legend = colours(image, LEGEND)
    assert {PALETTE[0], PALETTE[1], PALETTE[2]} <= legend  # research, write, edit in stage order
    assert {LIMITER, COOLDOWN, BACKOFF, FAILED} <= legend
    assert TOOL not in colours(image)  # no tool calls: no tool bars, no legend entry


def test_a_run_without_failures_draws_no_vermillion(tmp_path: Path) -> None:
    calls = [CallRow(i, f"i{i}", STAGES[i % 3], 1, i * 0.5, i * 0.5, i * 0.5 + 1, "ok") for i in range(1, 30)]

    image = open_png(timeline_png(calls, tmp_path / "t.png", title="calm", stages_order=STAGES))

    drawn = colours(image)
    assert {PALETTE[0], PALETTE[1], PALETTE[2]} <= drawn
    assert not {FAILED, TOOL} & drawn  # (the greys of the waits are also the text's edges)


def test_tool_calls_are_drawn_in_their_own_colour(tmp_path: Path) -> None:
    calls = [CallRow(i, f"i{i}", "research", 1, 0.0, i * 1.0, i + 0.5, "ok") for i in range(1, 6)]
    tools = [ToolBar(i, f"i{i}", "research", "fetch", i + 0.6, i + 0.9, 0.0, i == 3) for i in range(1, 6)]

    image = open_png(
        timeline_png(calls, tmp_path / "t.png", title="agents", stages_order=["research"], tools=tools)
    )

    assert {TOOL, PALETTE[0], FAILED} <= colours(image, LEGEND)  # tool call, stage, tool error


def test_a_zero_length_call_still_draws(tmp_path: Path) -> None:
    # the simulated model at latency 0: every call starts and ends at the same instant
    calls = [CallRow(i, str(i), "research", 1, 0.0, 0.0, 0.0, "ok") for i in range(1, 4)]

    assert open_png(timeline_png(calls, tmp_path / "t.png", title="instant", stages_order=STAGES))


def test_hundreds_of_calls_with_failures_and_waits(tmp_path: Path) -> None:
    calls = synthetic_calls(120)
    assert any(c.status != "ok" for c in calls) and any(c.limiter_wait for c in calls)
    assert any(c.cooldown_wait for c in calls) and any(c.backoff for c in calls)

    path = timeline_png(calls, tmp_path / "t.png", title="content", stages_order=STAGES, concurrency=5)

    assert open_png(path).size == (1400, 900)


def test_calls_are_read_once_as_a_stream(tmp_path: Path) -> None:
    # the store hands the calls over as a generator: the chart must not need a second pass
    calls = synthetic_calls(50)

    path = timeline_png(iter(calls), tmp_path / "t.png", title="stream", stages_order=STAGES)

    assert open_png(path).size == (1400, 900)


def test_unknown_stages_and_awkward_ids_draw_without_warnings(tmp_path: Path) -> None:
    # pytest turns warnings into errors: a missing glyph or a "$" read as math would fail here
    ids = ["$HOME", "a $x$ b", "🚀 rocket", "line\nbreak", "x" * 300, "控制", "<script>"]
    calls = [
        CallRow(i, item_id, "tool-step", 1, float(i), float(i), i + 0.5, "ok")
        for i, item_id in enumerate(ids, start=1)
    ]

    path = timeline_png(calls, tmp_path / "t.png", title="$weird$ title\n", stages_order=STAGES)

    assert open_png(path).size == (1400, 900)


def test_more_items_than_rows_are_sampled_evenly() -> None:
    collected = SampledCalls(max_rows=10)
    for call in synthetic_calls(1000, chains=20):
        collected.add(call)

    rows = collected.sample()

    assert len(rows) == 10
    indexes = [calls[0].index for calls in rows]
    assert indexes == sorted(indexes) and len(set(indexes)) == 10
    assert indexes[0] <= 100 and indexes[-1] >= 900, indexes  # spread over the whole run
    for calls in rows:  # every attempt of a sampled item is kept, and only its own
        assert {c.index for c in calls} == {calls[0].index}
        assert {c.stage for c in calls if c.status == "ok"} == set(STAGES)
    assert len(collected.rows) <= 20  # memory: never more than twice the rows kept


def test_fewer_items_than_rows_are_all_shown() -> None:
    collected = SampledCalls(max_rows=60)
    for call in synthetic_calls(7):
        collected.add(call)

    assert [calls[0].index for calls in collected.sample()] == list(range(1, 8))


def test_a_hundred_thousand_calls(tmp_path: Path) -> None:
    # no speed assertion (benchmarks measure speed); it must work and sample the rows
    calls = synthetic_calls(30_000, chains=50)[:100_000]

    path = timeline_png(calls, tmp_path / "t.png", title="big", stages_order=STAGES, concurrency=50)

    image = open_png(path)
    assert image.size == (1400, 900)
    assert {PALETTE[0], PALETTE[1], PALETTE[2]} <= colours(image, LEGEND)


def test_chains_in_flight_are_the_exact_mean_of_each_time_bin() -> None:
    rng = random.Random(3)
    intervals = [(s, s + rng.uniform(0, 3)) for s in (rng.uniform(0, 7) for _ in range(200))]
    span, bins = 10.0, 40

    means = _occupancy(intervals, span=span, bins=bins)

    width = span / bins
    for k, mean in enumerate(means):  # the area of each interval inside the bin, over its width
        lo, hi = k * width, (k + 1) * width
        area = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in intervals)
        assert mean == pytest.approx(area / width, abs=1e-9)


def test_calls_done_per_minute_count_every_call_once() -> None:
    collected = SampledCalls(max_rows=10)
    for call in synthetic_calls(300):
        collected.add(call)
    span = max(collected.ended)

    done = _completed(collected, span=span)

    assert sum(done.ok) == sum(1 for f in collected.failed if not f)
    assert sum(done.bad) == sum(collected.failed)
    assert done.edges[0] == 0.0 and done.edges[-1] == span
    assert collected.items == 300


# -- report.html -------------------------------------------------------------------------------


class Page(HTMLParser):
    """What a browser would see: tags, table rows per section, text, images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.section = ""
        self.rows: dict[str, int] = {}
        self.text: list[str] = []
        self.images: list[str] = []
        self._in_h2 = False
        self._in_body_row = False
        self._in_tbody = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "h2":
            self._in_h2, self.section = True, ""
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.rows[self.section] = self.rows.get(self.section, 0) + 1
        elif tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
        elif tag == "tbody":
            self._in_tbody = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_h2:
            self.section += data


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


EVIL = "<script>alert('x')</script> & <b>bold</b>"


def test_html_report_of_a_real_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = Pipeline.from_dict(pipeline_data(sim={"fail_on": ["poison"]}), source="test")
    topics = ["solar power", EVIL, "poison ivy", "tidal energy"]

    report = run(pipeline, topics, out=out, max_attempts=1, retry_passes=0)

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page == page.strip() + "\n"
    html = parse(page)
    assert "script" not in html.tags and "b" not in html.tags  # the topic's markup stays text
    text = "".join(html.text)
    assert EVIL in text
    assert "<script>" not in page
    assert html.rows["Each item"] == len(topics)
    assert html.rows["Failures"] == 1
    assert html.rows["Stages: latency of each call"] == 3
    assert html.rows["Where the time went"] == 4
    # the headline carries report.json's numbers
    saved = report.to_dict()["time_saved_pct"]
    assert "Items: 3 of 4 succeeded" in text
    if saved >= 0:
        assert f"{saved:.1f}%" in text
    else:  # a run slower than one at a time says so, never a negative percentage
        assert f"{report.to_dict()['speedup']:.2f}x: slower than one at a time" in text
        assert f"{saved:.1f}%" not in text
    assert "poison ivy" in text and "server_error" in text
    # the timeline is in the page itself, and is the PNG beside it
    (src,) = html.images
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    data = base64.b64decode(src[len(prefix) :])
    assert data == (out / "timeline.png").read_bytes()
    assert Image.open(io.BytesIO(data)).size == (1400, 900)
    assert "http://" not in page and "https://" not in page  # no external assets


def summary_of(items: int, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": "r1",
        "pipeline": "content",
        "concurrency": 4,
        "items": {"total": items, "succeeded": items, "failed": 0, "skipped": 0},
        "wall_seconds": 2.0,
        "sequential_seconds": 6.0,
        "speedup": 3.0,
        "time_saved_pct": 66.7,
        "calls": {"total": items, "succeeded": items, "retried": 0, "rate_limited": 0, "failed": 0},
        "tokens": {"input": 10, "output": 20},
        "cost_usd": None,
        "stages": {"research": {"calls": items, "failed": 0, "p50_seconds": 1.0}},
        "failures": [],
        **extra,
    }


def test_html_item_table_is_capped_and_says_how_many_more() -> None:
    records = (
        ItemRecord(index=i, id=str(i), input={"topic": f"topic {i}"}, status="succeeded")
        for i in range(1, 251)
    )

    html = parse(report_html(summary_of(250), items=records, input_field="topic"))

    assert html.rows["Each item"] == 200
    assert "50 more in results.jsonl." in "".join(html.text)


def test_html_without_items_or_image_still_renders() -> None:
    quality = {"items": 1, "mean_score": 90.0, "mean_words": 500.0, "mean_readability": 60.0}
    quality |= {"topic_covered_pct": 100.0, "per_item": [{"id": "<i>", "score": 90, "words": 500}]}

    page = report_html(summary_of(1, quality=quality))

    html = parse(page)
    assert html.images == []
    assert html.rows["Each item"] == 1
    assert "<i>" in "".join(html.text) and "i" not in html.tags


@pytest.mark.parametrize("saved", [None, -20.0])
def test_html_headline_when_nothing_was_saved(saved: float | None) -> None:
    speedup = None if saved is None else 0.8
    page = report_html(summary_of(2, time_saved_pct=saved, speedup=speedup))

    text = "".join(parse(page).text)
    assert "Items: 2 of 2 succeeded" in text
    assert ("0.80x: slower than one at a time" in text) == (saved is not None)
    assert "-20" not in text  # never a negative "time saved"
