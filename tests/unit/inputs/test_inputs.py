"""Streaming input readers: what a user sees for each format and each error. (A big file's
memory, at full scale: tests/e2e/test_big_inputs.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet import Pipeline, run
from chainfleet.errors import ConfigError, InputError
from chainfleet.inputs import InputSource, Item, items_from, open_input
from conftest import pipeline_data


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def ids(source: InputSource) -> list[str]:
    return [item.id for item in source]


def scan_error(source: InputSource, required: tuple[str, ...] = ()) -> str:
    with pytest.raises(InputError) as caught:
        source.scan(required)
    return str(caught.value)


# -- plain text ------------------------------------------------------------------------------


def test_txt_ids_are_physical_line_numbers_skipping_blanks_and_comments(tmp_path: Path) -> None:
    path = write(tmp_path / "topics.txt", "# topics\n\nsolar power\n   \n  wind  \n  # no\ntides")
    source = open_input(path, input_field="topic")

    items = list(source)

    assert [(i.id, i.index, i.line) for i in items] == [("3", 0, 3), ("5", 1, 5), ("7", 2, 7)]
    assert [i.fields for i in items] == [
        {"topic": "solar power"},
        {"topic": "wind"},
        {"topic": "tides"},
    ]
    assert source.format == "txt" and source.fields == frozenset({"topic"})
    assert source.scan() == 3


def test_txt_handles_crlf_and_lone_cr_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path / "topics.txt", "a\r\nb\rc\n")

    assert [(i.id, i.fields["input"]) for i in open_input(path)] == [
        ("1", "a"),
        ("2", "b"),
        ("3", "c"),
    ]


@pytest.mark.parametrize("name", ["topics.text", "topics.md", "topics.lst", "TOPICS", "t.TXT"])
def test_other_text_extensions_read_as_text(tmp_path: Path, name: str) -> None:
    source = open_input(write(tmp_path / name, "one\ntwo\n"))

    assert source.format == "txt"
    assert ids(source) == ["1", "2"]


def test_source_re_iterates_from_the_start(tmp_path: Path) -> None:
    source = open_input(write(tmp_path / "t.txt", "a\nb\n"))
    first = iter(source)
    next(first)

    assert ids(source) == ["1", "2"]
    assert ids(source) == ["1", "2"]
    assert next(first).id == "2"


def test_bom_is_tolerated_in_text_and_jsonl(tmp_path: Path) -> None:
    txt = tmp_path / "t.txt"
    txt.write_bytes(b"\xef\xbb\xbfhello\n")
    jsonl = tmp_path / "j.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"id": "a"}\n')

    assert [i.fields for i in open_input(txt)] == [{"input": "hello"}]
    assert ids(open_input(jsonl)) == ["a"]


# -- JSON Lines ------------------------------------------------------------------------------


def test_jsonl_with_and_without_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rows.jsonl",
        '{"id": "intro", "topic": "x"}\n\n{"topic": "y"}\n{"id": 7, "topic": "z"}\n',
    )
    source = open_input(path)

    items = list(source)

    assert [(i.id, i.index, i.line) for i in items] == [("intro", 0, 1), ("3", 1, 3), ("7", 2, 4)]
    assert items[2].fields == {"id": 7, "topic": "z"}
    assert source.format == "jsonl" and source.fields is None
    assert source.scan(required=["topic"]) == 3


def test_ndjson_extension_and_explicit_format(tmp_path: Path) -> None:
    assert ids(open_input(write(tmp_path / "a.ndjson", '{"id": "a"}\n'))) == ["a"]
    data = write(tmp_path / "data.dat", '{"id": "b"}\n')
    assert ids(open_input(data, format="jsonl")) == ["b"]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"a": 1}\n{"a": 2}\n{"a": \n{"a": 4}\n')

    message = scan_error(open_input(path))

    assert message.startswith(f"{path}:3: not valid JSON")
    with pytest.raises(InputError, match=r"rows\.jsonl:3: "):
        list(open_input(path))  # iteration meets it too


def test_error_met_mid_iteration_after_good_items(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"a": 1}\n{"a": 2}\n')
    source = open_input(path)
    write(path, '{"a": 1}\n{"a": 2}\n[3]\n')  # the file changes after it was opened

    stream = iter(source)
    assert [next(stream).line, next(stream).line] == [1, 2]
    with pytest.raises(InputError, match=r"rows\.jsonl:3: expected a JSON object, got an array"):
        next(stream)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"a": 1}\n"just a string"\n')

    assert scan_error(open_input(path)) == (f"{path}:2: expected a JSON object, got a string")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[1]", "got an array"),
        ('{"k": 1}', "got an object"),
        ("true", "got a boolean"),
        ("null", "got null"),
        ('""', "id is empty"),
        ('"  "', "id is empty"),
    ],
)
def test_bad_ids_are_errors(tmp_path: Path, value: str, expected: str) -> None:
    path = write(tmp_path / "rows.jsonl", f'{{"id": "ok"}}\n{{"id": {value}}}\n')

    message = scan_error(open_input(path))

    assert message.startswith(f"{path}:2: ")
    assert expected in message


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"topic": "a"}\n{"title": "b"}\n')

    message = scan_error(open_input(path), required=("topic",))

    assert message.startswith(f"{path}:2: missing field 'topic'")
    assert "'title'" in message  # says what the item does have


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"id": "a"}\n{"id": "b"}\n\n{"id": "a"}\n')

    message = scan_error(open_input(path))

    assert message == f"{path}:4: duplicate id 'a', first used on line 1"


def test_explicit_id_clashing_with_a_line_number_id_is_a_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.jsonl", '{"x": 1}\n{"id": 1}\n')

    assert scan_error(open_input(path)) == f"{path}:2: duplicate id '1', first used on line 1"


def test_empty_inputs_are_errors(tmp_path: Path) -> None:
    txt = write(tmp_path / "t.txt", "# only a comment\n\n")
    jsonl = write(tmp_path / "j.jsonl", "")
    csv = write(tmp_path / "c.csv", "id,topic\n\n")

    assert scan_error(open_input(txt)) == f"{txt}: no inputs: " + (
        "the file is empty or holds only blank lines and # comments"
    )
    assert scan_error(open_input(jsonl)).startswith(f"{jsonl}: no inputs")
    assert scan_error(open_input(csv)) == f"{csv}: no inputs: the file has a header but no rows"


# -- CSV and TSV -----------------------------------------------------------------------------


def test_csv_with_id_column_multiline_cell_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b'\xef\xbb\xbfid,topic\r\nx1,"two\r\nlines"\r\nx2,plain\r\n')
    source = open_input(path)

    items = list(source)

    assert source.format == "csv" and source.fields == frozenset({"id", "topic"})
    assert [(i.id, i.line) for i in items] == [("x1", 1), ("x2", 2)]
    assert items[0].fields == {"id": "x1", "topic": "two\r\nlines"}
    assert source.scan(required=["topic"]) == 2


def test_csv_without_id_numbers_rows_after_the_header(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", "topic,tone\nsolar,calm\n\n,\nwind,bold\n")

    items = list(open_input(path))

    # blank rows are skipped but keep their numbers, like a spreadsheet's rows
    assert [(i.id, i.index, i.fields["topic"]) for i in items] == [
        ("1", 0, "solar"),
        ("4", 1, "wind"),
    ]


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.tsv", "id\ttopic\na\tsolar, wind and tides\n")

    assert [i.fields for i in open_input(path)] == [{"id": "a", "topic": "solar, wind and tides"}]


def test_ragged_csv_row_names_line_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", 'id,topic\na,"multi\nline"\nb,x,extra\n')

    message = scan_error(open_input(path))

    assert message == f"{path}:4: row 2 has 3 cells but the header has 2 columns"


def test_csv_duplicate_ids_name_rows_and_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", "id,topic\na,1\nb,2\na,3\n")

    assert scan_error(open_input(path)) == (f"{path}:4: duplicate id 'a', first used on row 1 (line 2)")


def test_csv_required_column_missing_from_header(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", "id;topic\n1;solar\n")

    message = scan_error(open_input(path), required=("topic",))

    assert message.startswith(f"{path}: no column 'topic'; the header has 'id;topic'")
    assert "separated by something other than commas" in message


def test_csv_empty_id_cell(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", "id,topic\na,1\n ,2\n")

    assert scan_error(open_input(path)) == f"{path}:3: id is empty"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "the file is empty; a CSV file starts with a header row"),
        ("\n\n", "the file is empty"),
        ("id,topic,id\n", ":1: the header names the column 'id' twice"),
        ("id,,topic\n", ":1: column 2 of the header has no name"),
    ],
)
def test_bad_csv_headers_fail_at_open(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "rows.csv", content)

    with pytest.raises(InputError) as caught:
        open_input(path)

    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_unterminated_quote_is_malformed_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.csv", 'id,topic\na,"never closed\nb,2\n')

    message = scan_error(open_input(path))

    assert message.startswith(f"{path}:2: malformed CSV")  # where the record starts


# -- opening files -------------------------------------------------------------------------


def test_unknown_extension_lists_accepted_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "rows.json", "[]")

    with pytest.raises(InputError) as caught:
        open_input(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: cannot tell the input format from the extension '.json'")
    assert all(ext in message for ext in (".txt", ".jsonl", ".csv", ".tsv"))
    assert isinstance(caught.value, ConfigError)  # exit code 2 in the CLI


def test_unknown_explicit_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown input format 'xml'"):
        open_input(write(tmp_path / "t.txt", "a"), format="xml")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"

    with pytest.raises(InputError) as caught:
        open_input(path)

    assert str(caught.value) == f"{path}: no such input file"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.txt").mkdir()

    with pytest.raises(InputError, match=r"dir\.txt: is a directory"):
        open_input(tmp_path / "dir.txt")


def test_non_utf8_bytes_report_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\nnaïve\n".encode() + "piñata\n".encode("latin-1"))
    source = open_input(path)  # opening does not read the whole file

    message = scan_error(source)

    assert message == f"{path}:3: not UTF-8 text: byte 0xf1 at column 3 (save the file as UTF-8)"


def test_non_utf8_csv_header_fails_at_open(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes("títle\n".encode("latin-1"))

    with pytest.raises(InputError, match=r"rows\.csv:1: not UTF-8"):
        open_input(path)


# -- Python values -------------------------------------------------------------------------


def test_items_from_strings_mappings_and_items() -> None:
    given = {"id": 42, "topic": "tides"}
    source = items_from(
        ["solar", {"topic": "wind"}, given, Item("keep", 9, 5, {"topic": "x"})], input_field="topic"
    )

    items = list(source)

    assert [(i.id, i.index, i.line) for i in items] == [
        ("1", 0, 1),
        ("2", 1, 2),
        ("42", 2, 3),
        ("keep", 3, 5),
    ]
    assert items[0].fields == {"topic": "solar"}
    assert items[2].fields == given and items[2].fields is not given  # copied
    assert source.format == "iterable" and source.path is None and source.fields is None
    assert ids(source) == ["1", "2", "42", "keep"]  # a list re-iterates
    assert source.scan(required=["topic"]) == 4


def test_items_from_errors_name_the_position() -> None:
    assert scan_error(items_from(["a", {"id": "1"}])) == "item 2: duplicate id '1', first used on item 1"
    assert scan_error(items_from(["a", {"b": 1}]), required=("input",)).startswith(
        "item 2: missing field 'input'"
    )
    assert scan_error(items_from([{"id": None}])) == "item 1: id must be a string or a number, got null"
    assert scan_error(items_from([])) == "items: no inputs: the iterable is empty"
    assert scan_error(items_from(["a", 3])) == (  # type: ignore[list-item]
        "item 2: expected a string, a mapping or an Item, got int"
    )


def test_items_from_one_shot_iterator_reads_once() -> None:
    def topics() -> Iterator[str]:
        yield from ["a", "b"]

    source = items_from(topics())

    assert not source.reiterable
    assert ids(source) == ["1", "2"]
    with pytest.raises(InputError, match="one-shot iterator that has already been read"):
        list(source)


def test_items_from_rejects_a_single_string() -> None:
    with pytest.raises(TypeError, match="wrap a single input in a list"):
        items_from("solar power")


@pytest.mark.parametrize(
    "header",
    [
        ",".join(f"c{i:05d}" for i in range(15_000)),  # 90 KB of column names
        "y" * 100_000 + "," + "y" * 100_000,  # one 100 KB name, twice
        "y" * 100_000,  # one 100 KB name, and no 'topic'
    ],
    ids=["many-columns", "a-long-name-twice", "a-long-name"],
)
def test_a_huge_csv_header_gives_a_short_error(tmp_path: Path, header: str) -> None:
    """Column names are clipped in messages: one readable line, not the 100 KB header (issue 22, D8)."""
    path = tmp_path / "wide.csv"
    path.write_text(header + "\n" + ",".join("x" for _ in header.split(",")) + "\n", encoding="utf-8")
    pipeline = Pipeline.from_dict(pipeline_data())
    with pytest.raises((ConfigError, InputError)) as caught:
        run(pipeline, path, out=tmp_path / "out")
    assert str(path) in str(caught.value) and len(str(caught.value)) < 600
