"""The simulated model's text: deterministic, marked, on topic, within budget."""

from __future__ import annotations

import doctest
import re

import pytest

from chainfleet.sim import text as simtext
from chainfleet.sim.text import count_tokens, generate

MARKER = re.compile(r"<!-- simulated by chainfleet sim \(seed (-?\d+)\) -->\n")

RESEARCH = "Research urban beekeeping: the key facts, figures and open questions."


def body(text: str) -> str:
    """The output without its marker line."""
    assert MARKER.match(text), text[:80]
    return text.split("\n", 1)[1] if "\n" in text else ""


def headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def chain(topic: str, seed: int = 0) -> tuple[str, str, str]:
    """Research -> Write -> Edit on sim, as the example pipeline renders its prompts."""
    notes = generate(f"Research {topic}: the key facts, figures and open questions.", seed=seed)
    draft = generate(f"Write an article on {topic} from these notes:\n{notes}", seed=seed)
    edited = generate(f"Edit this draft for clarity and accuracy:\n{draft}", seed=seed)
    return notes, draft, edited


# --- determinism --------------------------------------------------------------------------------


def test_same_inputs_give_the_same_text() -> None:
    assert generate(RESEARCH, seed=3) == generate(RESEARCH, seed=3)
    assert chain("the history of tea") == chain("the history of tea")


def test_seed_model_and_system_each_change_the_text() -> None:
    base = body(generate(RESEARCH))
    assert body(generate(RESEARCH, seed=1)) != base
    assert body(generate(RESEARCH, model="sim-large")) != base
    assert body(generate(RESEARCH, system="You are a meticulous research agent.")) != base


def test_call_order_does_not_matter() -> None:
    prompts = [RESEARCH, "Write a blog post about e-bikes", "Tell me about tides"]
    forward = [generate(p, seed=5) for p in prompts]
    backward = [generate(p, seed=5) for p in reversed(prompts)]
    assert forward == backward[::-1]


# --- every output is marked ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        RESEARCH,
        "Write an article on solar power",
        "Edit this draft:\n# Solar\n\nIt is very sunny.",
        "What is the capital of France?",
        "",
    ],
)
@pytest.mark.parametrize("seed", [0, 42, -1])
def test_first_line_is_the_simulation_marker(prompt: str, seed: int) -> None:
    text = generate(prompt, seed=seed)
    assert text.startswith(f"<!-- simulated by chainfleet sim (seed {seed}) -->\n")
    assert text.count("<!--") == 1


# --- what each kind of prompt gets --------------------------------------------------------------


def test_research_prompt_gets_notes_on_the_subject() -> None:
    notes = body(generate(RESEARCH, seed=2))
    lines = notes.splitlines()
    assert lines[0] == "# Research notes: urban beekeeping"
    facts = notes.split("## Open questions")[0]
    questions = notes.split("## Open questions")[1]
    assert 5 <= facts.count("\n- ") <= 8
    assert questions.count("\n- ") >= 2
    assert all(q.endswith("?") for q in questions.splitlines() if q.startswith("- "))
    assert notes.count("urban beekeeping") >= 5
    assert 120 <= len(notes.split()) <= 320


def test_write_prompt_gets_an_article_that_reuses_the_notes() -> None:
    notes, draft, _ = chain("quantum computing", seed=4)
    article = body(draft)
    title, *sections = headings(article)
    assert title.startswith("# ") and "Quantum Computing" in title
    assert "from these notes" not in article
    assert sections[-1] == "## Conclusion"
    assert 2 <= len(sections) - 1 <= 4
    assert all(s.startswith("## ") for s in sections)
    assert article.count("quantum computing") >= 5
    assert 350 <= len(article.split()) <= 750
    facts = [line[2:] for line in body(notes).splitlines() if line.startswith("- ")]
    assert any(fact in article for fact in facts)


def test_write_prompt_without_notes_still_writes_an_article() -> None:
    article = body(generate("Please write a short blog post about the rise of e-bikes in Paris."))
    assert headings(article)[0].startswith("# ")
    assert "the rise of e-bikes in Paris" in article


def test_edit_keeps_the_draft_and_tightens_it() -> None:
    _, draft, edited = chain("remote work", seed=8)
    before, after = body(draft), body(edited)
    assert headings(after) == headings(before)
    assert len(after) < len(before)
    assert len(after.split()) >= 0.9 * len(before.split())
    assert "remote work" in after
    assert " very " not in after and "In order to" not in after and "basically" not in after


def test_edit_of_a_hand_written_draft() -> None:
    draft = (
        "<!-- simulated by chainfleet sim (seed 0) -->\n"
        "# Tides\n\n"
        "It is really very simple. In order to predict tides, we basically need the moon.\n\n"
        "- Basically, tides are quite regular.\n"
    )
    edited = generate(f"Proofread this text:\n{draft}", seed=9)
    assert body(edited) == (
        "# Tides\n\nIt is simple. To predict tides, we need the moon.\n\n- Tides are regular."
    )


def test_edit_splits_a_long_sentence_at_a_clause() -> None:
    sentence = (
        "The balance looks different for hospitals than it does for large firms in most regions, "
        "and that difference explains a great deal of the disagreement."
    )
    edited = body(generate(f"Edit:\n{sentence}"))
    assert edited == (
        "The balance looks different for hospitals than it does for large firms in most regions. "
        "That difference explains a great deal of the disagreement."
    )


def test_edit_only_changes_the_marker_with_the_seed() -> None:
    prompt = "Revise:\n# A\n\nThis is really fine."
    edited = body(generate(prompt, seed=1))
    assert edited == body(generate(prompt, seed=2)) == "# A\n\nThis is fine."


def test_other_prompts_get_a_generic_answer() -> None:
    answer = body(generate("What is the tallest mountain in Africa?", seed=1))
    assert "the tallest mountain in Africa" in answer
    assert not headings(answer)
    assert answer.count("\n\n") >= 2
    assert 100 <= len(answer.split()) <= 350


@pytest.mark.parametrize(
    ("prompt", "subject"),
    [
        ("Research lithium mining. Be concise.", "lithium mining"),
        ("Investigate solar power in Africa", "solar power in Africa"),
        ("Can you research the history of the 3.5 inch floppy disk?", "3.5 inch floppy disk"),
        ("Draft a blog post on remote work based on the notes below:\n- a", "remote work"),
        ("Write about iPhone adoption among teenagers", "iPhone adoption among teenagers"),
        ("Topic: coral reef restoration", "coral reef restoration"),
        ("Summarize the following:\n# Deep Sea Mining\n\nText.", "Deep Sea Mining"),
    ],
)
def test_the_subject_comes_from_the_first_line(prompt: str, subject: str) -> None:
    assert subject in generate(prompt)


def test_a_long_subject_is_capped() -> None:
    prompt = "Research " + " ".join(["word"] * 60)
    title = headings(body(generate(prompt)))[0]
    assert len(title) <= len("# Research notes: ") + 80


# --- the token budget ---------------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [13, 20, 50, 200])
@pytest.mark.parametrize(
    "prompt",
    [RESEARCH, "Write a blog post on tides", "Tell me about Zürich's cafés and 東京 tea houses"],
)
def test_max_tokens_is_respected_at_a_boundary(prompt: str, max_tokens: int) -> None:
    full = generate(prompt, seed=6, max_tokens=100_000)
    text = generate(prompt, seed=6, max_tokens=max_tokens)
    assert count_tokens(text) <= max_tokens
    assert MARKER.match(text)
    assert full.startswith(text)
    rest = full[len(text) :]
    assert rest == "" or text.endswith((".", "\n")) or rest[0].isspace()


def test_a_budget_below_the_marker_leaves_the_marker_alone() -> None:
    marker = "<!-- simulated by chainfleet sim (seed 7) -->\n"
    assert generate(RESEARCH, seed=7, max_tokens=1) == marker


def test_max_tokens_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        generate(RESEARCH, max_tokens=0)


def test_default_budget_fits_a_whole_article() -> None:
    _, draft, edited = chain("the history of tea")
    assert count_tokens(draft) <= 1024
    assert body(draft).rstrip().endswith(("?", "."))


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcdef", 2),
        ("hello world", 3),
        ("x" * 400, 100),
        ("é" * 4, 2),  # 8 UTF-8 bytes
        ("東京", 2),  # 6 UTF-8 bytes
    ],
)
def test_count_tokens_known_values(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(simtext).failed == 0
