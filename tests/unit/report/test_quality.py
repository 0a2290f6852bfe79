"""Quality measures of a text: structure, readability, topic coverage and the summary score."""

from __future__ import annotations

import dataclasses
import doctest
import json

import pytest

from chainfleet.report import quality
from chainfleet.report.quality import Quality, assess
from chainfleet.sim.text import generate

MARKDOWN = """\
<!-- simulated by chainfleet sim (seed 0) -->
# Honey bees

Bees make honey. They live in hives!

## Why they matter

- Bees pollinate crops
- A hive can hold
  fifty thousand bees.
* Colonies swarm in spring.

Beekeepers inspect
their hives every week.

---

```
# not a heading
- not a bullet
```
"""


def test_empty_text_measures_nothing() -> None:
    q = assess("")
    assert (q.words, q.sentences, q.headings, q.paragraphs, q.bullets) == (0, 0, 0, 0, 0)
    assert (q.readability, q.grade, q.score) == (0.0, 0.0, 0)
    assert q.topic_coverage == 1.0 and q.topic_covered
    with_topic = assess("   \n\n", topic="honey bees")
    assert with_topic.topic_coverage == 0.0 and not with_topic.topic_covered


def test_the_sim_marker_is_not_part_of_the_text() -> None:
    assert assess("<!-- simulated by chainfleet sim (seed 3) -->\n") == assess("")
    text = "Bees make honey. They live in hives."
    assert assess("<!-- simulated by chainfleet sim (seed 3) -->\n" + text) == assess(text)


def test_markdown_structure_is_counted() -> None:
    q = assess(MARKDOWN)
    assert q.headings == 2
    assert q.bullets == 3
    assert q.paragraphs == 2  # the wrapped line belongs to its paragraph; code is not prose
    # 2 sentences + one per list item + 1 (the wrapped paragraph)
    assert q.sentences == 6
    # headings 2 + 3, paragraphs 7 + 6, list items 3 + 7 + 4
    assert q.words == 32


def test_a_list_item_or_paragraph_without_a_stop_is_one_sentence() -> None:
    assert assess("- first item\n- second item").sentences == 2
    assert assess("No stop at the end").sentences == 1
    assert assess("Pi is 3.14 exactly. Dr. Who? Yes!").sentences == 4


def test_topic_coverage_counts_the_topics_content_words() -> None:
    text = "Bees make honey. A healthy hive needs a strong queen."
    assert assess(text, topic="honey bees").topic_coverage == 1.0
    assert assess(text, topic="The honey of the bees").topic_covered  # stopwords do not count
    half = assess(text, topic="bee diseases")
    assert half.topic_coverage == 0.5 and half.topic_covered
    third = assess(text, topic="honey, wax and propolis")
    assert third.topic_coverage == pytest.approx(0.333) and not third.topic_covered
    none = assess(text, topic="quantum computing")
    assert none.topic_coverage == 0.0 and not none.topic_covered


def test_plurals_match_singulars_both_ways() -> None:
    assert assess("Two new studies of a virus.", topic="study of viruses").topic_coverage == 1.0
    assert assess("The bus stops at the houses.", topic="buses and a house").topic_coverage == 1.0


def test_topic_words_in_headings_count() -> None:
    assert assess("# Quantum computing\n\nIt is fast.", topic="quantum computing").topic_covered


def test_simple_text_reads_easier_than_complex_text() -> None:
    simple = assess("The cat sat on the mat. The dog ran to the park.")
    complex_ = assess(
        "Notwithstanding considerable institutional heterogeneity, comprehensive evaluation "
        "methodologies necessitate interdisciplinary collaboration between organisations."
    )
    assert simple.readability > 80 > 0 > complex_.readability
    assert simple.grade < 3 < 12 < complex_.grade


def test_flesch_formulas_on_a_known_sentence() -> None:
    # 6 words, 1 sentence, 6 one-syllable words.
    q = assess("The cat sat on the mat.")
    assert q.readability == round(206.835 - 1.015 * 6 - 84.6 * 1, 1) == 116.1
    assert q.grade == round(0.39 * 6 + 11.8 * 1 - 15.59, 1)


def test_score_rewards_a_good_article_on_topic() -> None:
    notes = generate("Research urban beekeeping: the key facts.")
    article = generate(f"Write an article on urban beekeeping from these notes:\n{notes}")
    on_topic = assess(article, topic="urban beekeeping")
    off_topic = assess(article, topic="deep sea mining")
    assert on_topic.score >= 90
    assert on_topic.score - off_topic.score == 30
    assert assess(notes, topic="urban beekeeping").score >= 85
    assert assess("Yes.", topic="urban beekeeping").score < 10


def test_score_is_within_bounds() -> None:
    for text in ["", "a", "word " * 5000, MARKDOWN, "# Only a heading"]:
        assert 0 <= assess(text, topic="bees").score <= 100


def test_quality_is_a_frozen_value_with_a_plain_dict() -> None:
    q = assess(MARKDOWN, topic="honey bees")
    assert q == assess(MARKDOWN, topic="honey bees")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.score = 1  # type: ignore[misc]
    as_dict = q.to_dict()
    assert list(as_dict) == [f.name for f in dataclasses.fields(Quality)]
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(quality).failed == 0


def test_words_are_what_the_word_pattern_finds() -> None:
    """The token fast path (issue 25) counts exactly the words the regular expression finds:
    apostrophes inside and around words, underscores, digits, other scripts, odd white space."""
    texts = [
        "don't stop 'quoted' it’s rock'n'roll snake_case __x__ 3.5 1,000 naïve ٣٤ 漢字 x\u3000y\t\nz",
        "trailing' 'leading ''double'' a''b a-b a/b (paren) [x] e.g. U.S.A. ½ ²",
        generate("an article on bees", seed=3, max_tokens=800),
        "",
    ]
    for text in texts:
        assert quality._words(text) == quality._WORD.findall(text), text


def test_words_of_a_text_without_punctuation_are_its_tokens() -> None:
    """The all-alphanumeric fast path (issue 25) returns what the pattern finds too."""
    for text in ["word0 word1  word2\nword3", "naïve 漢字 ٣٤ x\u3000y", "one"]:
        assert quality._words(text) == quality._WORD.findall(text), text


def test_sentences_are_counted_alike_with_and_without_a_sentence_end() -> None:
    """A unit with no '.', '!' or '?' skips the split (issue 25): the count is the split's."""

    def by_split(unit: str) -> int:
        parts = quality._SENTENCE_END.split(unit)
        return sum(1 for part in parts if quality._HAS_WORD.search(part))

    units = [
        "no end at all",
        "",
        "  ",
        "--- ***",
        "One. Two! Three?",
        "e.g. this, and 3.5 of that",
        "Ends with a quote.\u201d Then more",
        "word0 word1 word2",
    ]
    for unit in units:
        assert quality._sentences(unit) == by_split(unit), unit
    reply = " ".join(f"word{i % 50}" for i in range(300))
    assert assess(reply).sentences == 1
    assert assess(reply + ". And a second one.").sentences == 2


ARTICLE = """\
# The history of coffee

Coffee was first brewed in Yemen in the fifteenth century. Traders carried the beans to Cairo,
Istanbul and Venice, where the first coffee houses opened!

## Coffee houses

1. In London they were called penny universities.
2) People read the news, argued and did business there.

> Is coffee good for you? Studies disagree; most find a cup or two harmless.

Roasting changes the taste: light roasts keep the fruit, dark roasts taste of smoke.
"""

#: every measure of fixed texts, as computed before issue 25's faster scoring: any change to how
#: a text is read must leave these identical (stored reports compare runs by them)
PINNED = [
    (
        MARKDOWN,
        "honey bees",
        {
            "words": 32,
            "sentences": 6,
            "readability": 80.1,
            "grade": 3.2,
            "topic_covered": True,
            "topic_coverage": 1.0,
            "headings": 2,
            "paragraphs": 2,
            "bullets": 3,
            "score": 71,
        },
    ),
    (
        " ".join(f"word{i % 50}" for i in range(300)),
        "topic number 4 about the sea",
        {
            "words": 300,
            "sentences": 1,
            "readability": -182.3,
            "grade": 113.2,
            "topic_covered": False,
            "topic_coverage": 0.0,
            "headings": 0,
            "paragraphs": 1,
            "bullets": 0,
            "score": 30,
        },
    ),
    (
        generate("an article on bees", seed=3, max_tokens=800),
        "an article on bees",
        {
            "words": 391,
            "sentences": 18,
            "readability": 58.4,
            "grade": 10.2,
            "topic_covered": True,
            "topic_coverage": 1.0,
            "headings": 6,
            "paragraphs": 6,
            "bullets": 0,
            "score": 100,
        },
    ),
    (
        "don't stop 'quoted' it’s rock'n'roll snake_case __x__ 3.5 1,000 naïve ٣٤ 漢字 x\u3000y\t\nz. "
        "Studies of bees! Ladies? e.g. U.S.A. table simple makes jumped",
        "study lady bee",
        {
            "words": 31,
            "sentences": 6,
            "readability": 97.9,
            "grade": 0.9,
            "topic_covered": True,
            "topic_coverage": 1.0,
            "headings": 0,
            "paragraphs": 1,
            "bullets": 0,
            "score": 50,
        },
    ),
    (
        ARTICLE,
        "the history of coffee",
        {
            "words": 75,
            "sentences": 7,
            "readability": 74.2,
            "grade": 5.4,
            "topic_covered": True,
            "topic_coverage": 1.0,
            "headings": 2,
            "paragraphs": 3,
            "bullets": 2,
            "score": 85,
        },
    ),
    (
        ARTICLE,
        "coffee roasting in Ethiopia and Brazil",
        {
            "words": 75,
            "sentences": 7,
            "readability": 74.2,
            "grade": 5.4,
            "topic_covered": True,
            "topic_coverage": 0.5,
            "headings": 2,
            "paragraphs": 3,
            "bullets": 2,
            "score": 70,
        },
    ),
    (
        ARTICLE,
        "",
        {
            "words": 75,
            "sentences": 7,
            "readability": 74.2,
            "grade": 5.4,
            "topic_covered": True,
            "topic_coverage": 1.0,
            "headings": 2,
            "paragraphs": 3,
            "bullets": 2,
            "score": 85,
        },
    ),
]


@pytest.mark.parametrize(("text", "topic", "expected"), PINNED)
def test_measures_of_fixed_texts_never_move(text: str, topic: str, expected: dict[str, object]) -> None:
    assert assess(text, topic=topic).to_dict() == expected


@pytest.mark.parametrize(("text", "topic", "expected"), PINNED)
def test_measures_is_assess_as_a_dict(text: str, topic: str, expected: dict[str, object]) -> None:
    got = quality.measures(text, topic)
    assert got == expected
    assert list(got) == list(expected)  # field order: report.json's keys
