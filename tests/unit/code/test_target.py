"""Bad Python targets, as ``chainfleet run`` meets them: each is one ``error:`` line naming the
file, the function and what is wrong, exit 2, before any call (no output folder is written)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.code.target import is_target, load_target


def run(tmp_path: Path, source: str | None, target: str) -> Result:
    if source is not None:
        (tmp_path / "chain.py").write_text(source, encoding="utf-8")
    (tmp_path / "topics.txt").write_text("tea\n", encoding="utf-8")
    args = ["run", target, "-i", str(tmp_path / "topics.txt"), "--out", str(tmp_path / "out")]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("source", "attr", "expected"),
    [
        (None, "article", "chain.py: no such file"),
        (
            "async def article(topic, fleet)\n    return topic\n",
            "article",
            "chain.py:1: cannot import it: SyntaxError",
        ),
        ("import no_such_module_here\n", "article", "chain.py:1: cannot import it: ModuleNotFoundError"),
        (
            "x = 1\n\nraise RuntimeError('boom')\n",
            "article",
            "chain.py:3: cannot import it: RuntimeError: boom",
        ),
        (
            "async def article(topic, fleet):\n    return topic\n",
            "artcle",
            "no function 'artcle' in it (did you mean 'article'?)",
        ),
        (
            "def article(topic, fleet):\n    return topic\n",
            "article",
            "'article' is not an async function: write `async def article(item, fleet)`",
        ),
        (
            "async def article(topic):\n    return topic\n",
            "article",
            "'article' takes 1 argument: a chain takes two, the item and fleet",
        ),
        (
            "async def article(topic, fleet, style):\n    return topic\n",
            "article",
            "'article' takes 3 arguments",
        ),
        (
            "async def article(topic, fleet, *, style):\n    return topic\n",
            "article",
            "needs keyword argument 'style'",
        ),
        ("article = 3\n", "article", "'article' is not a function (it is int)"),
    ],
)
def test_a_bad_target_is_one_line_and_exit_2(
    tmp_path: Path, source: str | None, attr: str, expected: str
) -> None:
    result = run(tmp_path, source, f"{tmp_path / 'chain.py'}:{attr}")
    line = error_line(result)
    assert expected in line
    assert "chain.py" in line
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_module_that_does_not_import_is_named(tmp_path: Path) -> None:
    line = error_line(run(tmp_path, None, "no_such_package_here.chains:article"))
    assert "no_such_package_here.chains: cannot import module 'no_such_package_here.chains'" in line


def test_a_good_target_loads_with_a_default_and_extra_keywords(tmp_path: Path) -> None:
    source = "async def article(topic, fleet, style='plain', **extra):\n    return topic\n"
    (tmp_path / "good_chain.py").write_text(source, encoding="utf-8")
    fn = load_target(f"{tmp_path / 'good_chain.py'}:article")
    assert fn.__name__ == "article"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("chain.py:article", True),
        ("chains.content:article", True),
        ("pipeline.yaml", False),
        ("C:/pipelines/content.yaml", False),
        ("pipe.yaml:article", False),
        ("chain.py:not-a-name", False),
    ],
)
def test_what_is_a_python_target(text: str, expected: bool) -> None:
    assert is_target(text) is expected
