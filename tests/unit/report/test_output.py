"""The output folder: safe, unique item file names whatever the ids hold; report.md and item files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Pipeline, run
from chainfleet.report.output import safe_name
from conftest import TOPICS, pipeline_data, read_report, read_results

SAFE = re.compile(r"[a-z0-9-]+")

WINDOWS_DEVICES = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}

NASTY = [
    "../../etc/passwd",
    "/abs/path",
    "a\\b",
    "..\\..\\windows\\system32",
    "..",
    ".",
    "...",
    ".hidden",
    "nul\x00byte",
    "\x00",
    "🚀🔥",
    "🚀 rocket",
    "x" * 500,
    "é" * 300,
    '<>:"|?*',
    "con",
    "CON",
    "com1",
    "  spaces  ",
    "-leading-dash",
    "line\nbreak\ttab",
    "\u202eevil\u202c",  # right-to-left override
    "Ünïcödé Straße",
    "C:\\Users\\x",
    "~/home",
    "$HOME",
]


def check_safe(name: str) -> None:
    assert SAFE.fullmatch(name), f"unsafe characters in {name!r}"
    assert name and not name.startswith(("-", "."))
    assert len(name) <= 100, f"{len(name)} characters"


@pytest.mark.parametrize("text", NASTY)
def test_safe_name_of_a_nasty_id_is_safe(text: str) -> None:
    check_safe(safe_name(text))


@pytest.mark.parametrize("text", NASTY)
def test_safe_name_with_a_nasty_topic_is_safe(text: str) -> None:
    check_safe(safe_name("1", text))
    check_safe(safe_name(text, text))
    check_safe(safe_name(text, "x" * 1000))


def test_many_near_identical_long_ids_get_distinct_names() -> None:
    # URL-like ids sharing a 60-character prefix: a short hash of a 40-character prefix collided
    base = "https://example.com/catalogue/products/category/subcategory/item?id="
    ids = [f"{base}{n}" for n in range(200_000)] + [f"{base}{n}&x" for n in range(20_000)]
    names = {safe_name(i, "the same topic for every one of them") for i in ids}
    assert len(names) == len(ids)
    for name in list(names)[:100]:
        check_safe(name)


def test_ids_that_sanitize_alike_get_different_names() -> None:
    ids = ["a/b", "a_b", "a b", "a-b", "A-B", "a--b", "a.b", "a\\b", "a\x00b", "ab", "a🚀b"]

    names = [safe_name(i) for i in ids]

    assert len(set(names)) == len(ids), dict(zip(ids, names, strict=True))


def test_long_ids_that_share_a_prefix_get_different_names() -> None:
    prefix = "q" * 200

    assert safe_name(prefix + "1") != safe_name(prefix + "2")
    assert safe_name(prefix + "1", "same topic") != safe_name(prefix + "2", "same topic")


def test_different_ids_never_share_a_name_whatever_their_topics() -> None:
    # id "1" about "x y" and id "1-x" about "y" are two items of one run: two files
    assert safe_name("1", "x y") != safe_name("1-x", "y")


def test_names_are_never_a_windows_device_name() -> None:
    # "con.md" cannot be created on Windows (nor "nul.md", "com1.md" ...): the output folder
    # must be writable there too, and may be copied there
    names = {safe_name(d, topic) for d in WINDOWS_DEVICES for topic in (None, d, d.upper())}

    assert not names & WINDOWS_DEVICES, sorted(names & WINDOWS_DEVICES)


def test_simple_ids_keep_a_readable_name() -> None:
    assert safe_name("7", "Solar power in Kenya") == "7--solar-power-in-kenya"
    assert safe_name("report-2024") == "report-2024"
    assert safe_name("alpha", "alpha") == "alpha"
    assert safe_name("42", "  Why Sleep Matters!  ").startswith("42--why-sleep-matters")


# -- a whole run -----------------------------------------------------------------------------------


def fast_pipeline(**overrides: Any) -> Pipeline:
    return Pipeline.from_dict(pipeline_data(**overrides), source="test")


TRAVERSAL = ["../../etc/passwd", "/abs/path", "con", "a\\b", "..", ".hidden", "~/x", "C:\\Windows"]


def files_under(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*") if p.is_file()}


def test_path_traversal_topics_stay_inside_items(tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    before = files_under(tmp_path)

    report = run(fast_pipeline(), TRAVERSAL, out=out)

    assert report.items_succeeded == len(TRAVERSAL)
    items_dir = (out / "items").resolve()
    item_files = list(items_dir.iterdir())
    assert len(item_files) == len(TRAVERSAL)
    for path in item_files:
        assert path.resolve().parent == items_dir
        assert path.suffix == ".md"
    new = files_under(tmp_path) - before
    assert all(out.resolve() in p.parents for p in new), sorted(map(str, new))
    assert not Path("/abs/path.md").exists()


def test_path_traversal_ids_stay_inside_items(tmp_path: Path) -> None:
    out = tmp_path / "work" / "out"
    before = files_under(tmp_path)
    items = [{"id": text, "topic": text} for text in TRAVERSAL]

    report = run(fast_pipeline(), items, out=out)

    assert report.items_succeeded == len(TRAVERSAL)
    items_dir = (out / "items").resolve()
    item_files = list(items_dir.iterdir())
    assert len(item_files) == len(TRAVERSAL), "two items wrote the same file"
    assert all(p.resolve().parent == items_dir for p in item_files)
    new = files_under(tmp_path) - before
    assert all(out.resolve() in p.parents for p in new), sorted(map(str, new))
    # each file is the item it claims to be
    texts = {p.read_text(encoding="utf-8") for p in item_files}
    for text in TRAVERSAL:
        assert sum(f"- id: `{text}`" in t for t in texts) == 1, text


def test_ids_whose_names_could_clash_get_one_file_each(tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [
        {"id": "1", "topic": "x y"},
        {"id": "1-x", "topic": "y"},
        {"id": "a/b", "topic": "same"},
        {"id": "a_b", "topic": "same"},
    ]

    run(fast_pipeline(), items, out=out)

    assert len(list((out / "items").iterdir())) == len(items)


def test_report_md_carries_the_numbers_of_report_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    topics = [*TOPICS[:3], "poison ivy", *TOPICS[3:]]
    pipeline = fast_pipeline(sim={"latency": 0.01, "fail_on": ["poison"]})

    run(pipeline, topics, out=out, concurrency=3, max_attempts=1, retry_passes=0)
    report = read_report(out)
    md = (out / "report.md").read_text(encoding="utf-8")

    assert report["items"]["succeeded"] == 5 and report["items"]["failed"] == 1
    assert f"{report['items']['succeeded']} of {report['items']['total']} succeeded" in md
    assert report["run_id"] in md
    saved = report["time_saved_pct"]
    assert saved is not None and saved > 0
    assert f"{saved:.1f}%" in md
    # report.json keeps 3 decimals, report.md shows 2: the same number, each rounded once
    (shown,) = re.findall(r"Speed-up: \*\*([0-9.]+)x", md)
    assert float(shown) == pytest.approx(report["speedup"], abs=0.0051)
    # the failure is listed with its stage and type
    failures = md.split("## Failures", 1)[1].split("##", 1)[0]
    assert "| 4 | research | server_error |" in failures
    # one quality row per succeeded item
    quality = md.split("## Quality of each output", 1)[1]
    rows = [line for line in quality.splitlines() if line.startswith("| ") and not line.startswith("| item")]
    succeeded = [r["id"] for r in read_results(out) if r["status"] == "succeeded"]
    assert [row.split("|")[1].strip() for row in rows] == succeeded


def test_item_file_holds_the_id_and_the_final_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = [{"id": "solar-7", "topic": "Solar power in Kenya"}, {"id": "w/9", "topic": "Wind farms"}]

    run(fast_pipeline(), items, out=out)
    results = {r["id"]: r for r in read_results(out)}

    for item in items:
        path = out / "items" / f"{safe_name(item['id'], item['topic'])}.md"
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"# {item['topic']}\n")
        assert f"`{item['id']}`" in text
        assert "succeeded" in text
        final = results[item["id"]]["outputs"]["edit"]
        assert final and final.strip() in text
        # the final output comes before the earlier stages
        assert text.index(final.strip()) < text.index(results[item["id"]]["outputs"]["research"].strip())


def test_failed_item_file_says_where_it_failed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline = fast_pipeline(sim={"fail_on": ["poison"]})

    run(pipeline, ["solar power", "poison ivy"], out=out, max_attempts=1, retry_passes=0)

    (path,) = [p for p in (out / "items").iterdir() if p.name.startswith("2-")]
    text = path.read_text(encoding="utf-8")
    assert "failed" in text
    assert "research" in text and "server_error" in text


# -- the output at scale: one pass, each output once, item files by rule, parquet (issue 11) ----


def test_each_output_is_stored_once_in_results_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(Pipeline.from_dict(pipeline_data(), source="test"), TOPICS, out=out)
    for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert "output" not in row and list(row["outputs"]) == ["research", "write", "edit"]
        for text in row["outputs"].values():
            assert line.count(json.dumps(text, ensure_ascii=False)[1:-1]) == 1


def test_item_files_auto_all_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chainfleet.report import results

    assert results.item_files_on("auto", 10_000) and not results.item_files_on("auto", 10_001)
    assert results.item_files_on("all", 10**6) and not results.item_files_on("none", 1)
    pipeline = Pipeline.from_dict(pipeline_data(), source="test")
    monkeypatch.setattr(results, "ITEM_FILES_AUTO_MAX", 4)  # the rule, on 5 items

    def item_files(out: Path) -> int:
        return len(list((out / "items").glob("*.md"))) if (out / "items").exists() else 0

    for setting, files in (("auto", 0), ("all", 5), ("none", 0)):
        out = tmp_path / setting
        run(pipeline, TOPICS, out=out, item_files=setting)
        assert item_files(out) == files, setting
        assert len(read_results(out)) == 5
    monkeypatch.setattr(results, "ITEM_FILES_AUTO_MAX", 5)
    run(pipeline, TOPICS, out=tmp_path / "small", item_files="auto")
    assert item_files(tmp_path / "small") == 5


def test_results_parquet_reads_back_with_pandas_and_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pandas = pytest.importorskip("pandas")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "out"
    pipeline = Pipeline.from_dict(pipeline_data(sim={"fail_on": ["poison"]}), source="test")
    run(pipeline, [*TOPICS, "poison ivy"], out=out, max_attempts=1, retry_passes=0, parquet=True)
    rows = read_results(out)

    frame = pandas.read_parquet(out / "results.parquet")
    assert list(frame["id"]) == [r["id"] for r in rows]
    assert list(frame["status"]) == [r["status"] for r in rows]
    assert list(frame["output_edit"][:5]) == [r["outputs"]["edit"] for r in rows[:5]]
    assert pandas.isna(frame["output_edit"][5]) and json.loads(frame["error"][5])["stage"] == "research"
    assert [json.loads(text) for text in frame["input"]] == [r["input"] for r in rows]
    assert list(frame["attempts"]) == [r["attempts"] for r in rows]

    data = datasets.Dataset.from_parquet(str(out / "results.parquet"), cache_dir=str(tmp_path / "cache"))
    assert data.num_rows == 6
    assert data["id"] == [r["id"] for r in rows]
    assert data["output_research"][:5] == [r["outputs"]["research"] for r in rows[:5]]


def test_line_separators_in_a_record_never_split_results_jsonl(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 are line breaks to ``str.splitlines()``: results.jsonl escapes
    them, so a reader splitting lines gets one whole record per item (issue 22)."""
    topics = ["tea\u2028and coffee", "rivers\u2029and lakes", "next\u0085line"]
    out = tmp_path / "out"
    run(Pipeline.from_dict(pipeline_data()), topics, out=out)
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(topics)
    assert [json.loads(line)["input"]["topic"] for line in lines] == topics
