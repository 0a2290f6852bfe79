"""The text of the built-in simulated model ``sim``: offline, deterministic, plausible.

:func:`generate` reads what a prompt asks for from the wording of its first line and answers in
kind, so a Research -> Write -> Edit chain on ``sim`` produces output that looks like the real
thing without a network, a key or a bill:

- research ("Research ...", "facts", "notes", "investigate"): notes with a heading, 5-8 fact-like
  bullets about the subject and an "Open questions" list (about 150-300 words);
- write ("Write ...", "article", "draft", "post", "blog"): an article with a ``# Title`` naming
  the subject, an introduction, 2-4 ``##`` sections and a conclusion (about 400-700 words); when
  the prompt carries notes (the text after its first line), a few of their bullets are reused;
- edit ("Edit ...", "revise", "proofread", "polish"): the draft in the prompt, tightened: the same
  headings and order, filler words dropped ("very", "basically", "in order to" -> "to"), long
  sentences split. Recognisably the same article, slightly shorter;
- anything else: a generic answer of a few paragraphs.

The answer depends only on ``(seed, model, system, prompt)``: they are hashed with SHA-256 to seed a
private :class:`random.Random`, never the global one and never the per-process salted ``hash()``,
so the same call gives the same text in any process and in any order. Every output starts with the
line ``<!-- simulated by chainfleet sim (seed N) -->`` so nobody takes it for a real model's text,
and never runs past ``max_tokens`` as counted by :func:`count_tokens`.

Example::

    >>> text = generate("Research the history of tea: key facts.", seed=7)
    >>> text.splitlines()[0]
    '<!-- simulated by chainfleet sim (seed 7) -->'
    >>> "history of tea" in text
    True
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable

__all__ = ["count_tokens", "generate", "marker_line", "topic"]

_MARKER = "<!-- simulated by chainfleet sim (seed {seed}) -->\n"


def marker_line(seed: int) -> str:
    """The first line of every simulated output, newline included."""
    return _MARKER.format(seed=seed)


def count_tokens(text: str) -> int:
    """Estimate the tokens a BPE tokenizer (tiktoken and the like) would count in ``text``.

    About four characters per token, the usual rule for English: ``max(1, round(len / 4))`` with
    halves rounded up, and 0 for empty text. Non-ASCII text is measured in UTF-8 bytes, since
    tokenizers spend more tokens on it. Linear and cheap: no tokenizer is loaded.

    >>> count_tokens(""), count_tokens("a"), count_tokens("hello world")
    (0, 1, 3)
    """
    if not text:
        return 0
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return max(1, (size + 2) // 4)


def generate(
    prompt: str,
    *,
    system: str | None = None,
    seed: int = 0,
    max_tokens: int = 1024,
    model: str = "sim",
) -> str:
    """Answer ``prompt`` as the simulated model would: marker line, then the text.

    The kind of answer (research notes, article, edited draft or generic answer) comes from the
    first line of the prompt; ``system`` and ``model`` only vary the wording through the seed.
    An edit is a pure function of the draft it is given, so only its marker line changes with the
    seed. The output never exceeds ``max_tokens`` by :func:`count_tokens`: it is cut at a sentence
    or word boundary, but the marker line is always kept whole, so below the marker's own ~12
    tokens the answer is the marker line alone. ``max_tokens`` under 1 is a ``ValueError``.

    >>> text = generate("Write a blog post about urban beekeeping", seed=1, max_tokens=40)
    >>> count_tokens(text) <= 40
    True
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    key = "\x1f".join((str(seed), model, system or "", prompt)).encode("utf-8", "surrogatepass")
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    first, body = _split_prompt(prompt)
    kind = _classify(first)
    subject = _subject(first, body)
    if kind == "edit":  # the draft: the lines after the instruction, or "Proofread: <text>"
        text = _edit(body or first.partition(":")[2].strip()) or _generic(subject, rng)
    elif kind == "write":
        text = _article(subject, body, rng)
    elif kind == "research":
        text = _notes(subject, rng)
    else:
        text = _generic(subject, rng)
    return _fit(marker_line(seed), text, max_tokens)


# --- reading the prompt -------------------------------------------------------------------------

_KINDS: dict[str, str] = {
    **dict.fromkeys(
        "edit edits editing copyedit copy-edit revise revising revision proofread proofreading "
        "polish polishing rewrite tighten".split(),
        "edit",
    ),
    **dict.fromkeys("write writing article articles draft drafting post blog essay compose".split(), "write"),
    **dict.fromkeys(
        "research researching facts notes investigate gather findings sources".split(), "research"
    ),
    # Verbs that ask for something else: they win when they come first ("Summarize the research").
    **dict.fromkeys(
        "summarize summarise summary explain translate answer classify list describe compare "
        "what who why how when where which".split(),
        "generic",
    ),
}
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_COMMENT_LINE = re.compile(r"^\s*<!--.*-->\s*$")


def topic(prompt: str) -> str:
    """What ``prompt`` asks about, as :func:`generate` reads it: "Research X: the key facts" -> X.

    A leading line that tells the model who it is ("You are a meticulous research agent.", as a
    system message put before the prompt reads) is not the topic: the instruction after it is.
    """
    return _subject(*_split_prompt(prompt))


#: a line addressed to the model about itself, as a system message opens: not an instruction
_PERSONA = re.compile(
    r"\s*(?:you\s+are|you're|you\s+answer|you\s+reply|act\s+as|as\s+an?\s)\b", re.IGNORECASE
)


def _split_prompt(prompt: str) -> tuple[str, str]:
    """The instruction line and the material after it (after ``:\\n`` or the first newline),
    past any leading persona lines ("You are a careful editor.")."""
    text = prompt.strip()
    while _PERSONA.match(text) and "\n" in text:
        text = text.split("\n", 1)[1].strip()
    cut = text.find(":\n")
    newline = text.find("\n")
    if cut != -1 and cut <= newline:
        return text[: cut + 1], text[cut + 2 :]
    if newline != -1:
        return text[:newline], text[newline + 1 :]
    return text, ""


def _classify(first_line: str) -> str:
    """research, write, edit or generic: the first telling word of the instruction decides."""
    for word in _WORD.findall(first_line.lower()):
        kind = _KINDS.get(word)
        if kind is not None:
            return kind
    return "generic"


_LEAD = re.compile(
    r"(?:(?:please|kindly|now|next|then|ok|okay)[,\s]+)*"
    r"(?:(?:can|could|would|will)\s+you\s+)?"
    r"(?:research|investigate|study|explore|examine|look\s+into|find\s+out\s+about|gather"
    r"|write|draft|compose|create|produce|prepare|generate|edit|revise|proofread|polish"
    r"|copy-?edit|rewrite|tighten|summari[sz]e|explain|describe|discuss|outline|analy[sz]e"
    r"|review|answer|tell\s+me\s+about|give\s+me"
    r"|(?:what|who|how|why)\s+(?:is|are|was|were|does|do|did))\b[\s,]*",
    re.IGNORECASE,
)
_NOUN = re.compile(
    r"(?:(?P<det>an?|the|some|this|these|that|those|my|our|the\s+following|the\s+above)\s+)?"
    r"(?:(?:short|brief|detailed|concise|quick|long|new|full|clear|balanced|engaging|informative"
    r"|rough|first|key|\d+[- ]word)\s+)*"
    r"(?:research\s+notes|blog\s+post|article|blog|post|essay|piece|report|summary|overview"
    r"|notes|draft|text|explainer|introduction|guide|paper|document|passage|facts|findings)s?\b\s*"
    r"|(?P<prep>on|about|of|regarding|covering|into|around|concerning)\s+",
    re.IGNORECASE,
)
_PREP = re.compile(r"(?:on|about|of|regarding|covering|into|around|concerning)\s+", re.IGNORECASE)
_CUT = re.compile(r":|\s+from\s+|\s+based\s+on\s+|[.!?](?:\s|$)", re.IGNORECASE)
_DEICTIC = frozenset({"this", "these", "that", "those", "the following", "the above"})
_POINTERS = _DEICTIC | {"it", "below", "the below", "the following text", "the text below"}
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _subject(first_line: str, body: str) -> str:
    """What the prompt is about, from its first line: "Write an article on X from ..." -> X."""
    line = first_line.strip()
    rest, pointing = line, False
    lead = _LEAD.match(line)
    if lead:
        rest = line[lead.end() :]
        noun = _NOUN.match(rest)
        if noun:
            det = (noun.group("det") or "").lower()
            pointing = " ".join(det.split()) in _DEICTIC
            rest = rest[noun.end() :]
            if noun.group("prep") is None:
                prep = _PREP.match(rest)
                if prep:
                    rest, pointing = rest[prep.end() :], False
    cut = _CUT.search(rest)
    subject = (rest[: cut.start()] if cut else rest).strip(" \t\"'`*,;-")
    if pointing or not subject or subject.lower() in _POINTERS:
        # "Edit this draft: ..." or "Summarize the following: ...": name what the body is about.
        heading = _HEADING.search(body)
        if heading:
            subject = heading.group(1).strip()
        elif body.strip():
            subject = " ".join(body.split(None, 6)[:6]).strip(" \t\"'`*.,;:-#")
    elif not lead and cut and cut.group(0) == ":" and " " not in subject:
        subject = rest[cut.end() :].strip(" \t\"'`*.,;-") or subject  # "Topic: coral reefs"
    if not subject:
        subject = " ".join(rest.split()[:5]).strip(" \t\"'`*.,;:-") or "the topic"
    if len(subject) > 80:
        subject = subject[:80].rsplit(" ", 1)[0]
    return subject


# --- word banks ---------------------------------------------------------------------------------


def _bank(items: str) -> tuple[str, ...]:
    return tuple(items.split(", "))


_BANKS: dict[str, tuple[str, ...]] = {
    "aspect": _bank(
        "cost, reliability, public trust, regulation, energy use, data quality, safety, "
        "staff training, supply-chain resilience, outcome measurement, adoption, privacy, "
        "long-term maintenance, accessibility, worker wellbeing"
    ),
    "actors": _bank(
        "researchers, practitioners, policymakers, industry analysts, engineers, economists, "
        "historians, independent reviewers, consumer groups, early adopters"
    ),
    "groups": _bank(
        "households, small businesses, large firms, universities, public agencies, hospitals, "
        "schools, startups, local councils, non-profits"
    ),
    "region": _bank(
        "Europe, North America, East Asia, South America, Africa, Australia, South Asia, the Nordic countries"
    ),
    "decade": _bank("1960s, 1970s, 1980s, 1990s, 2000s, 2010s"),
    "num": _bank("three, four, five, six, seven, eight, ten, twelve, fifteen"),
}

_FACTS = (
    "{S} first drew wide attention in the {decade}, when {actors} began to study its effect on {aspect}.",
    "Estimates suggest that about {pct}% of {groups} in {region} have direct experience with {s}.",
    "The main drivers of {s} are {aspect} and {aspect2}, according to most {actors}.",
    "Costs associated with {s} have fallen by roughly {pct}% over the past {num} years.",
    "{Actors} disagree on how {s} affects {aspect}; published studies point in both directions.",
    "A {year} survey of {count} {groups} found that {pct}% considered {s} important for {aspect}.",
    "Most published work on {s} comes from {region}, with {region2} catching up quickly.",
    "Critics of {s} point to {aspect} as the weakest part of the evidence.",
    "Rules and standards for {s} differ between {region} and {region2}, especially on {aspect}.",
    "The best-documented benefit of {s} is better {aspect}, though measured effects are modest.",
    "Adoption of {s} among {groups} roughly doubled between {year} and {year2}.",
    "Long-term data on {s} is scarce: few studies follow outcomes for more than {num} years.",
    "{Actors} often cite {aspect2} as the main barrier to wider use of {s}.",
    "Public interest in {s} tends to spike after news coverage and then fade within months.",
)

_QUESTIONS = (
    "How would {s} change if {aspect} became the main constraint?",
    "Which of the reported figures on {s} rest on independent data?",
    "What would a fair comparison of {s} across {region} and {region2} look like?",
    "Who bears the cost when {s} fails to deliver on {aspect}?",
    "How much of the recent interest in {s} is likely to last?",
    "What do {groups} need before {s} is worth the effort for them?",
)

_TITLES = (
    "Understanding {T}",
    "{T}: What We Know and Why It Matters",
    "A Closer Look at {T}",
    "{T}, Explained",
    "What to Know About {T}",
    "The Real Story of {T}",
)

_SECTIONS = _bank(
    "Where It Comes From, What the Evidence Says, The Numbers Behind It, Costs and Trade-offs, "
    "Who Is Affected, Common Misconceptions, The Debate, What Comes Next, Practical Advice"
)

_HOOKS = (
    "{S} has become a subject that many people mention and few explain well.",
    "Few topics attract as much confident commentary, and as little careful reading, as {s}.",
    "Ask ten {actors} about {s} and you will very likely hear ten different answers.",
    "Interest in {s} has grown steadily, and so has the confusion around it.",
)

_PURPOSES = (
    "This article sets out what is known about {s}, where the evidence is thin, and why it "
    "matters for {groups}.",
    "The aim here is simple: to give a clear, balanced picture of {s} without the hype.",
    "What follows is a plain guide to {s}: its background, the evidence and the open questions.",
)

_CLOSINGS = (
    "{S} is neither a cure-all nor a passing fad; its value depends on how it is used.",
    "The evidence on {s} is still growing, and the honest answer to many questions is that it depends.",
    "For {groups}, the sensible course is to start small, measure carefully and adjust.",
    "Whatever happens next, {s} will keep shaping debates about {aspect} for years to come.",
    "Readers who want to go further should look for primary data rather than summaries.",
)

_SENTENCES = (
    "{S} is often discussed in terms of {aspect}, but the picture is really more complicated "
    "than the headlines suggest.",
    "Most {actors} agree that {aspect} is the factor that matters most, and they disagree about "
    "almost everything else, including how {aspect2} should be measured.",
    "In order to understand {s}, it helps to look at how {groups} actually use it day to day.",
    "It is worth noting that estimates vary widely: some put the figure near {pct}%, others much lower.",
    "For {groups}, the practical question is basically whether {s} improves {aspect} enough to "
    "justify the effort.",
    "Over the past {num} years, {s} has moved from a niche interest to a regular topic among {actors}.",
    "The evidence on {aspect} is very mixed, and careful readers should treat bold claims with caution.",
    "A common mistake is to treat {s} as a single thing when it is in fact a collection of related "
    "practices.",
    "Data from {region} suggests that {aspect} improves when {groups} adopt {s} gradually rather "
    "than all at once.",
    "Critics argue that the benefits of {s} are overstated, and they point to {aspect} as the "
    "clearest weak spot in the case made by its supporters.",
    "Supporters reply that the costs are front-loaded, while the gains in {aspect} build up over "
    "several years.",
    "The debate is not only technical, since it also touches on {aspect2} and on who gets to decide.",
    "In {region}, {actors} have tried a different approach, with results that are still being evaluated.",
    "One useful way to think about {s} is as a trade-off between {aspect} and {aspect2}.",
    "The balance looks different for {groups} than it does for {groups2}, and that difference "
    "explains a great deal of the disagreement between {actors}.",
    "Surveys suggest that roughly {pct}% of {groups} have heard of {s}, but far fewer could "
    "describe it accurately.",
    "Basically, the people closest to the work tend to be the most cautious about sweeping predictions.",
    "The history matters here, because early decisions about {aspect} still shape how {s} works today.",
    "When {s} first drew attention in the {decade}, few {actors} expected it to last.",
    "Steady improvements in {aspect} have made {s} far easier to adopt than it was a decade ago.",
    "Nothing about this is inevitable, and the next few years will depend on choices made by "
    "{actors} and {groups}.",
    "It is important to note that good outcomes usually come from patient, well-measured changes "
    "rather than dramatic bets.",
    "There is a really simple test for any claim about {s}: ask what would count as evidence against it.",
    "The numbers are easier to read once you separate short-term effects from long-term ones.",
    "Short-term effects on {aspect} are usually modest, and they can even be negative during the first year.",
    "Long-term effects are harder to measure, yet they are where most of the value of {s} is claimed to lie.",
    "A {year} study of {count} {groups} found that {pct}% reported better {aspect} after two years.",
    "Encouraging figures like these are common, but many studies lack a control group and should "
    "be read with care.",
    "Regulators in {region} have started to pay closer attention to {s}, especially where "
    "{aspect} is concerned.",
    "For now, the rules differ a great deal from place to place, which creates extra work for {groups}.",
    "Anyone new to {s} should start small, measure carefully and compare results against a clear baseline.",
    "The most successful examples share a few traits: clear goals, honest measurement and a "
    "willingness to change course.",
    "Failures, by contrast, tend to come from very ambitious plans that ignore {aspect}.",
    "Public opinion has shifted slowly, and trust in {s} now tracks trust in the {actors} who promote it.",
    "Costs have fallen by about {pct}% since {year}, which has opened the door to {groups} that "
    "were priced out before.",
    "The main bottleneck today is not technology but {aspect2}, and that is much harder to fix quickly.",
    "Several {actors} have called for better shared data so that claims about {s} can be checked "
    "independently.",
    "Until that happens, the debate about {s} will continue to rely on partial evidence and strong opinions.",
    "Comparisons between {region} and {region2} show that local conditions matter more than any "
    "single best practice.",
    "This is why it is a good idea to read reports on {s} closely and check where their figures come from.",
    "In practice, {groups} that succeed with {s} tend to treat {aspect} as a design goal from the "
    "start, and they revisit it regularly as conditions change.",
    "It is easy to overlook {aspect2}, which is actually one of the more reliable predictors of success.",
)
_GENERIC_OPENERS = (
    "Here is a short overview of {s}.",
    "Good question: {s} is worth answering carefully.",
    "In brief, {s} is a topic with more nuance than it first appears.",
)

_MAX_BODY_SENTENCES = 23
_SMALL_WORDS = frozenset("a an and as at but by for in nor of on or the to vs with".split())


class _Slots(dict[str, str]):
    """Template values drawn on first use: ``{aspect}``, ``{region2}`` (differs from region) ..."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random, subject: str) -> None:
        super().__init__(s=subject, S=_cap(subject))
        self._rng = rng

    def __missing__(self, key: str) -> str:
        rng = self._rng
        if key == "pct":  # numbers are drawn afresh each time, never reused in a paragraph
            return str(rng.randint(12, 78))
        if key == "count":
            return f"{rng.randint(3, 60) * 100:,}"
        if key == "year":
            value = str(rng.randint(2004, 2016))
        elif key == "year2":
            value = str(int(self["year"]) + rng.randint(3, 7))
        elif key[0].isupper():
            value = _cap(self[key[0].lower() + key[1:]])
        elif key.endswith("2"):
            taken, bank = self[key[:-1]], _BANKS[key[:-1]]
            value = taken
            while value == taken:
                value = bank[int(rng.random() * len(bank))]
        else:
            bank = _BANKS[key]
            value = bank[int(rng.random() * len(bank))]
        self[key] = value
        return value


def _cap(text: str) -> str:
    """Capitalise the first letter unless the first word has its own casing ("iPhone", "eBay")."""
    head = text.split(" ", 1)[0]
    if head[:1].islower() and head[1:] == head[1:].lower():
        return text[0].upper() + text[1:]
    return text


def _title(subject: str) -> str:
    words = subject.split(" ")
    return " ".join(
        w[:1].upper() + w[1:] if (i == 0 or w not in _SMALL_WORDS) and w.islower() else w
        for i, w in enumerate(words)
    )


# --- the answers --------------------------------------------------------------------------------


def _notes(subject: str, rng: random.Random) -> str:
    facts = rng.sample(_FACTS, rng.randint(5, 8))
    questions = rng.sample(_QUESTIONS, rng.randint(2, 4))
    lines = [
        f"# Research notes: {subject}",
        "",
        f"Working notes on {subject} for a general audience, gathered from published surveys, "
        "reports and commentary. Figures are indicative and should be checked against primary "
        "sources before publication.",
        "",
        "## Key facts",
        "",
    ]
    lines += ["- " + template.format_map(_Slots(rng, subject)) for template in facts]
    lines += ["", "## Open questions", ""]
    slots = _Slots(rng, subject)
    lines += ["- " + template.format_map(slots) for template in questions]
    return "\n".join(lines)


def _article(subject: str, notes: str, rng: random.Random) -> str:
    bullets = [
        line[2:].strip()
        for line in notes.splitlines()
        if line.startswith(("- ", "* ")) and 20 < len(line) < 300
    ]
    facts = [b for b in bullets if not b.endswith("?")]
    questions = [b for b in bullets if b.endswith("?")]
    slots = _Slots(rng, subject)
    slots["T"] = _title(subject)
    out = [
        "# " + rng.choice(_TITLES).format_map(slots),
        "",
        " ".join((rng.choice(_HOOKS).format_map(slots), rng.choice(_PURPOSES).format_map(slots))),
    ]
    sections = rng.sample(_SECTIONS, rng.randint(2, 4))
    per_section = [1] * len(sections)
    for _ in range(rng.randint(4, 6) - len(sections)):
        per_section[int(rng.random() * len(sections))] += 1
    sizes = [rng.randint(3, 5) for _ in range(sum(per_section))]
    reused = rng.sample(facts, min(3, len(facts)))
    while sum(sizes) + len(reused) > _MAX_BODY_SENTENCES:  # keeps articles near 700 words at most
        sizes[sizes.index(max(sizes))] -= 1
    pool = rng.sample(_SENTENCES, sum(sizes))
    paragraphs: list[str] = []
    for size in sizes:
        slots = _Slots(rng, subject)
        sentences = [pool.pop().format_map(slots) for _ in range(size)]
        if reused:
            sentences.insert(int(rng.random() * (size + 1)), reused.pop())
        paragraphs.append(" ".join(sentences))
    for title, count in zip(sections, per_section, strict=True):
        out += ["", "## " + title]
        for _ in range(count):
            out += ["", paragraphs.pop()]
    closing = [c.format_map(slots) for c in rng.sample(_CLOSINGS, 2)]
    if questions:
        closing.append("One question remains open: " + rng.choice(questions))
    out += ["", "## Conclusion", "", " ".join(closing)]
    return "\n".join(out)


def _generic(subject: str, rng: random.Random) -> str:
    slots = _Slots(rng, subject)
    pool = rng.sample(_SENTENCES, 12)
    paragraphs = [rng.choice(_GENERIC_OPENERS).format_map(slots)]
    for size in (rng.randint(3, 4), rng.randint(3, 4), rng.randint(2, 3)):
        slots = _Slots(rng, subject)
        paragraphs.append(" ".join(pool.pop().format_map(slots) for _ in range(size)))
    return "\n\n".join(paragraphs)


# --- editing ------------------------------------------------------------------------------------

_REWRITES: dict[str, str] = {
    **dict.fromkeys(
        "very really basically actually quite simply truly certainly definitely extremely literally".split(),
        "",
    ),
    "it is worth noting that": "",
    "it is important to note that": "",
    "needless to say,": "",
    "for all intents and purposes,": "",
    "in order to": "to",
    "due to the fact that": "because",
    "in spite of the fact that": "although",
    "a large number of": "many",
    "a number of": "several",
    "at this point in time": "now",
    "in the event that": "if",
    "is able to": "can",
    "are able to": "can",
    "has the ability to": "can",
    "the majority of": "most",
    "with regard to": "on",
    "prior to": "before",
    "utilize": "use",
    "utilizes": "uses",
}
_REWRITE_KEYS = tuple(sorted(_REWRITES, key=len, reverse=True))
_SPLIT_MARKS = ("; ", ", and ", ", but ", ", yet ")
# ", and" ends a sentence only when a clause follows, not a list item ("where ..., and why").
_CLAUSE_SUBJECTS = frozenset(
    "i we you he she it they this that these those there the its their many most some few others".split()
)
_BULLET = re.compile(r"^(\s*(?:[-*+]|\d+[.)])\s+)(.*)$")
_LONG_SENTENCE = 22  # words; longer sentences are split at "; " or ", and" when both halves stand


def _drop_fillers(text: str, keys: Iterable[str] = _REWRITE_KEYS) -> str:
    """Delete filler words and shorten wordy phrases (only ``keys``), keeping sentence capitals.

    Plain ``str.find`` per phrase rather than one big case-insensitive regex: several times
    faster on an article, and the edit stage runs once per item.
    """
    low = text.lower()
    if len(low) != len(text):  # lowercasing changed the length ("İ"): positions would drift
        return text
    hits: list[tuple[int, int, str]] = []
    for key in keys:
        start = low.find(key)
        while start != -1:
            end = start + len(key)
            if (start == 0 or not low[start - 1].isalnum()) and (
                end == len(low) or key[-1] == "," or not low[end].isalnum()
            ):
                hits.append((start, end, key))
            start = low.find(key, end)
    if not hits:
        return text
    hits.sort()
    parts: list[str] = []
    pos = 0
    for start, end, key in hits:
        if start < pos:
            continue  # inside a phrase already rewritten
        parts.append(text[pos:start])
        replacement = _REWRITES[key]
        if replacement:
            if text[start].isupper():
                replacement = replacement[0].upper() + replacement[1:]
            parts.append(replacement)
            pos = end
            continue
        back = start - 1
        while back >= 0 and text[back] == " ":
            back -= 1
        pos = end
        if back < 0 or text[back] in ".!?":  # the sentence now starts with the next word
            while pos < len(text) and text[pos] in " ,":
                pos += 1
            if pos < len(text):
                parts.append(text[pos].upper())
                pos += 1
        elif pos < len(text) and text[pos] == " ":
            pos += 1
    parts.append(text[pos:])
    return "".join(parts)


def _sentence_start(text: str, before: int, floor: int) -> int:
    end = max(text.rfind(". ", floor, before), text.rfind("? ", floor, before))
    return floor if end == -1 else end + 2


def _split_long(text: str) -> str:
    """Split sentences of more than ``_LONG_SENTENCE`` words at "; ", ", and" or ", but"."""
    marks: list[tuple[int, str]] = []
    for mark in _SPLIT_MARKS:  # str.find beats a regex scan here by several times
        start = text.find(mark)
        while start != -1:
            marks.append((start, mark))
            start = text.find(mark, start + 1)
    if not marks:
        return text
    marks.sort()
    parts: list[str] = []
    pos = 0
    for start, mark in marks:
        end = start + len(mark)
        if start < pos:
            continue
        first = _sentence_start(text, start, pos)
        last = text.find(". ", end)
        last = len(text) if last == -1 else last
        if text.count(" ", first, last) < _LONG_SENTENCE:
            continue
        if text.count(" ", first, start) < 5 or text.count(" ", end, last) < 5:
            continue
        joiner = mark.strip(" ;,")
        word_end = text.find(" ", end)
        word_end = len(text) if word_end == -1 else word_end
        next_word = text[end:word_end]
        if joiner == "and" and next_word.lower() not in _CLAUSE_SUBJECTS:
            continue
        parts += (text[pos:start], ". ")
        if joiner in ("but", "yet"):
            parts.append(joiner.capitalize() + " ")
            pos = end
        else:
            parts.append(_cap(next_word))
            pos = word_end
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def _tighten(text: str, keys: Iterable[str]) -> str:
    return _split_long(_drop_fillers(text, keys)).replace("  ", " ").replace(" ,", ",")


def _edit(draft: str) -> str:
    """The draft with the same headings and order, each prose line tightened."""
    out: list[str] = []
    fenced = False
    low = draft.lower()
    keys = [key for key in _REWRITE_KEYS if key in low]
    for line in draft.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced = not fenced
            out.append(line)
        elif fenced or not stripped or stripped.startswith("#"):
            out.append(line)
        elif _COMMENT_LINE.match(line):
            continue  # an earlier marker: this output gets its own
        else:
            bullet = _BULLET.match(line)
            if bullet:
                out.append(bullet.group(1) + _tighten(bullet.group(2), keys))
            else:
                out.append(_tighten(line, keys))
    return "\n".join(out).strip("\n")


# --- the budget ---------------------------------------------------------------------------------


def _fit(marker: str, text: str, max_tokens: int) -> str:
    """``marker + text`` cut at a sentence or word boundary to stay within ``max_tokens``."""
    whole = marker + text
    if count_tokens(whole) <= max_tokens:
        return whole
    budget = max_tokens * 4 - len(marker)
    while budget > 0:
        cut = text[:budget]
        end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "), cut.rfind(".\n"))
        newline = cut.rfind("\n")
        if end >= budget // 2:
            cut = cut[: end + 1]
        elif newline >= budget // 2:
            cut = cut[:newline]
        elif " " in cut:
            cut = cut[: cut.rfind(" ")]
        candidate = marker + cut.rstrip()
        over = count_tokens(candidate) - max_tokens
        if over <= 0:
            return candidate
        budget = len(cut) - 4 * over  # only non-ASCII text gets here
    return marker
