"""Quality measures of an output text: model-agnostic, deterministic, dependency-free.

:func:`assess` reads a text (plain or markdown) and returns a :class:`Quality`. The same text gives
the same numbers on every machine and Python version, for a real model's output and for ``sim``'s.
It is hand-written on purpose: ``textstat`` exists, but it pulls in ``pyphen`` and hyphenation
dictionaries, and its numbers move between releases; a report that compares runs needs measures
that never move. The topic an output is measured against is its item's input (:func:`topic_of`
picks it from the item's fields). The measures, in plain words:

- ``words``: the words of the prose, headings included (a word is a run of letters or digits, with
  inner apostrophes: "don't" is one word).
- ``sentences``: sentences in paragraphs and list items. A sentence ends at ``.``, ``!`` or ``?``
  followed by a space or the end; a list item or paragraph without a final stop still counts as one.
- ``readability``: the Flesch reading ease of the paragraphs and list items, ``206.835 - 1.015 x
  words per sentence - 84.6 x syllables per word``. Higher is easier: 60-70 is plain English,
  30-50 is a college text, below 30 is hard going. Short sentences of short words can pass 100.
  Syllables are counted by a rule of thumb: groups of vowels, less a silent final ``e`` and a
  silent ``-ed``/``-es``; it is within one syllable of a dictionary on most English words.
- ``grade``: the Flesch-Kincaid grade level from the same counts, ``0.39 x words per sentence +
  11.8 x syllables per word - 15.59``: roughly the US school year needed to read the text.
  Both are 0.0 for a text with no sentences.
- ``topic_coverage``: the share of the topic's content words found in the text. Both sides are
  lowercased, stopwords ("the", "of", ...) are dropped and plurals are matched to singulars
  ("bees" finds "bee"). 1.0 when no topic is given. ``topic_covered`` is coverage >= 0.5.
- ``headings``: markdown ``#`` lines. ``bullets``: list items (``-``, ``*``, ``+``, ``1.``).
  ``paragraphs``: blocks of text lines that are neither headings nor list items.
- ``score``: a 0-100 summary; see :class:`Quality`.

HTML comments (``sim``'s ``<!-- simulated ... -->`` marker line) and fenced code blocks are not
prose and are ignored.

Example::

    >>> q = assess("# Bees\\n\\nBees make honey. They live in hives.", topic="honey bees")
    >>> q.words, q.sentences, q.headings, q.paragraphs, q.topic_covered
    (8, 2, 1, 1, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

__all__ = ["Quality", "assess", "measures", "topic_of"]


@dataclass(frozen=True)
class Quality:
    """Measures of one text, as computed by :func:`assess`.

    ``score`` (0-100) adds four parts, each tuned for prose deliverables such as notes and
    articles:

    - length, 30 points: full from 150 words up to 3,000, pro rata below 150, 20 above 3,000;
    - readability, 25 points: full for a reading ease between 30 and 80, falling linearly to 0 at
      0 below that band and at 120 above it;
    - topic, 30 points: ``30 x topic_coverage``;
    - structure, 15 points: 5 for at least one heading, 5 for at least three blocks (paragraphs and
      list items), 5 for at least three sentences averaging 8 to 30 words.

    A text without words scores 0.
    """

    words: int
    sentences: int
    readability: float
    grade: float
    topic_covered: bool
    topic_coverage: float
    headings: int
    paragraphs: int
    bullets: int
    score: int

    def to_dict(self) -> dict[str, object]:
        """The measures as a plain dict, in field order (for JSON reports)."""
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Quality))


def assess(text: str, topic: str | None = None) -> Quality:
    """Measure ``text``; ``topic`` (for example the item's input line) sets the coverage.

    >>> assess("").score
    0
    >>> assess("Tea is a drink. It is old.", topic="history of coffee").topic_coverage
    0.0
    """
    return Quality(**measures(text, topic))


def measures(text: str, topic: str | None = None) -> dict[str, Any]:
    """``assess(text, topic).to_dict()`` without the :class:`Quality` in between (what the
    runner stores for each item: a frozen dataclass costs as much to build as a third of the
    reading).

    >>> measures("Bees make honey.", topic="bees")["topic_coverage"]
    1.0
    """
    blocks = _Blocks(_COMMENT.sub("", text))
    prose_words = _words(" ".join(blocks.units).lower())
    heading_words = _words(" ".join(blocks.headings).lower())
    sentences = sum(map(_sentences, blocks.units))
    readability = grade = per_sentence = 0.0
    if prose_words and sentences:
        per_sentence = len(prose_words) / sentences
        per_word = _syllable_total(prose_words) / len(prose_words)
        readability = round(206.835 - 1.015 * per_sentence - 84.6 * per_word, 1)
        grade = round(0.39 * per_sentence + 11.8 * per_word - 15.59, 1)
    text_words = set(prose_words)
    text_words.update(heading_words)
    coverage = _coverage(topic, text_words)
    words = len(prose_words) + len(heading_words)
    structure = (len(blocks.headings), blocks.paragraphs, blocks.bullets)
    score = _score(words, sentences, readability, coverage, structure, per_sentence)
    return {
        "words": words,
        "sentences": sentences,
        "readability": readability,
        "grade": grade,
        "topic_covered": coverage >= 0.5,
        "topic_coverage": coverage,
        "headings": structure[0],
        "paragraphs": structure[1],
        "bullets": structure[2],
        "score": score,
    }


def topic_of(fields: dict[str, Any], input_field: str) -> str | None:
    """The text an output should cover, from its item's fields (the ``topic`` to give
    :func:`assess`): the input field, else the first text field.

    >>> topic_of({"id": 7, "title": "honey bees"}, "input")
    'honey bees'
    """
    value = fields.get(input_field)
    if isinstance(value, str):
        return value
    for key in ("topic", "title", "subject", "question", "text"):
        if isinstance(fields.get(key), str):
            return str(fields[key])
    return next((v for v in fields.values() if isinstance(v, str)), None)


# --- structure ----------------------------------------------------------------------------------

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r" {0,3}#{1,6}(?:\s|$)")
_RULE = re.compile(r"\s*([-*_])(?:\s*\1){2,}\s*$")
_BULLET = re.compile(r"\s*(?:[-*+]|\d{1,9}[.)])\s+")
_QUOTE = re.compile(r"\s*(?:>\s?)+")


class _Blocks:
    """The markdown structure of a text: headings, list items and paragraphs.

    ``units`` holds the text of each paragraph and each list item: the places sentences live.
    """

    def __init__(self, text: str) -> None:
        self.headings: list[str] = []
        self.units: list[str] = []
        self.paragraphs = self.bullets = 0
        fenced = False
        open_unit = False  # the last line began or continued a paragraph or a list item
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("```", "~~~")):
                fenced, open_unit = not fenced, False
            elif fenced:
                continue
            elif not stripped or _RULE.match(line):
                open_unit = False
            elif _HEADING.match(line):
                self.headings.append(stripped.lstrip("#").strip(" #"))
                open_unit = False
            elif bullet := _BULLET.match(line):
                self.bullets += 1
                self.units.append(line[bullet.end() :].strip())
                open_unit = True
            elif open_unit:  # a wrapped line of the paragraph or list item above
                self.units[-1] += " " + stripped
            else:
                self.paragraphs += 1
                quote = _QUOTE.match(line)
                self.units.append(line[quote.end() :].strip() if quote else stripped)
                open_unit = True


# --- words and sentences ------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_HAS_WORD = re.compile(r"[^\W_]")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
_SILENT_E_KEEP = ("ee", "ye", "ie", "oe")
_VOICED_ENDINGS = ("ted", "ded", "ses", "zes", "ces", "ges", "xes", "ches", "shes", "ies")


def _words(text: str) -> list[str]:
    """``_WORD.findall(text)``, about 3x faster: a word never spans white space, so each
    white-space-separated token is matched alone, and most tokens are one plain word
    (``str.isalnum`` holds for exactly the characters the pattern takes as letters or digits)
    with no regular expression at all."""
    tokens = text.split()
    if "".join(tokens).isalnum():  # no punctuation at all: the tokens are the words
        return tokens
    found: list[str] = []
    for token in tokens:
        if token.isalnum():
            found.append(token)
        else:
            found += _WORD.findall(token)
    return found


def _sentences(unit: str) -> int:
    """Sentences in a paragraph or list item: its parts between sentence ends that hold a word.
    A unit with no ``.``, ``!`` or ``?`` is one part, so the regular expression is skipped."""
    if "." not in unit and "!" not in unit and "?" not in unit:
        return 1 if _HAS_WORD.search(unit) else 0
    return sum(1 for part in _SENTENCE_END.split(unit) if _HAS_WORD.search(part))


#: syllables by word, filled by :func:`_syllable_total` (a plain dict read through ``map`` costs
#: a third of an ``lru_cache`` call a word); emptied when it passes :data:`_SYLLABLES_KEPT` words
_SYLLABLE_CACHE: dict[str, int] = {}
_SYLLABLES_KEPT = 16384


def _syllable_total(words: list[str]) -> int:
    """``sum(map(_syllables, words))``, each distinct word counted once and remembered."""
    cached = _SYLLABLE_CACHE
    try:
        return sum(map(cached.__getitem__, words))
    except KeyError:
        if len(cached) > _SYLLABLES_KEPT:
            cached.clear()
        for word in set(words).difference(cached):
            cached[word] = _syllables(word)
        return sum(map(cached.__getitem__, words))


def _syllables(word: str) -> int:
    """Syllables in a lowercased word, by the vowel-group rule of thumb."""
    word = word.replace("'", "").replace("’", "")
    if not word.isalpha():
        digits = sum(c.isdigit() for c in word)
        return max(1, (digits + 1) // 2) if digits else 1
    if len(word) <= 3:
        return 1
    if word.endswith("le") and word[-3] not in "aeiouy":
        pass  # "table", "simple": the "le" is a syllable
    elif word.endswith("e") and not word.endswith(_SILENT_E_KEEP):
        word = word[:-1]  # "make", "whale": silent e
    elif word.endswith(("es", "ed")) and not word.endswith(_VOICED_ENDINGS):
        word = word[:-2]  # "makes", "jumped"
    return max(1, len(_VOWEL_GROUPS.findall(word)))


# --- topic --------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with
    would you your yours
    """.split()
)


def _singulars(word: str) -> set[str]:
    """A word and its possible singulars: "bees" -> {bees, bee}, "studies" -> {..., study}."""
    if len(word) <= 3 or not word.endswith("s"):
        return {word}
    forms = {word, word[:-1]}
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    return forms


@lru_cache(maxsize=4096)
def _forms(term: str) -> frozenset[str]:
    """Words that share a singular with ``term``: "bee" finds "bees", "study" finds "studies"."""
    forms = _singulars(term)
    for root in list(forms):
        forms |= {root + "s", root + "es"}
        if root.endswith("y"):
            forms.add(root[:-1] + "ies")
    return frozenset(forms)


def _coverage(topic: str | None, text_words: set[str]) -> float:
    """The share of the topic's content words among lowercased ``text_words``, to 3 places."""
    topic_words = _WORD.findall((topic or "").lower())
    terms = {w for w in topic_words if w not in _STOPWORDS} or set(topic_words)
    if not terms:
        return 1.0
    found = sum(1 for term in terms if not _forms(term).isdisjoint(text_words))
    return round(found / len(terms), 3)


# --- score --------------------------------------------------------------------------------------


def _score(
    words: int,
    sentences: int,
    ease: float,
    coverage: float,
    structure: tuple[int, int, int],
    words_per_sentence: float,
) -> int:
    """The 0-100 summary documented on :class:`Quality`; ``structure`` is (headings,
    paragraphs, bullets)."""
    if not words:
        return 0
    length = 30.0 * min(words, 150) / 150 if words <= 3000 else 20.0
    if ease < 30:
        reading = 25.0 * max(ease, 0.0) / 30
    elif ease > 80:
        reading = 25.0 * max(120.0 - ease, 0.0) / 40
    else:
        reading = 25.0
    headings, paragraphs, bullets = structure
    shape = 5.0 * (headings > 0) + 5.0 * (paragraphs + bullets >= 3)
    if sentences >= 3 and 8 <= words_per_sentence <= 30:
        shape += 5.0
    total = length + reading + 30.0 * coverage + shape
    return max(0, min(100, round(total)))
