"""Make examples/corpus.jsonl, the offline corpus the research agent's `search` tool reads.

Each passage is one sentence the simulated model writes about a topic of examples/topics.txt
(its research notes, over a few seeds), so the corpus is deterministic, offline and free:

    python examples/make_corpus.py     # writes examples/corpus.jsonl (300 passages)
"""

from __future__ import annotations

import json
from pathlib import Path

from chainfleet.sim import text

HERE = Path(__file__).parent
PER_TOPIC = 30


def passages(topic: str) -> list[str]:
    found: list[str] = []
    for seed in range(40):
        notes = text.generate(f"Research {topic}: key facts.", seed=seed, max_tokens=600)
        for line in notes.splitlines():
            line = line.removeprefix("- ").strip()
            if line.endswith((".", "?")) and not line.startswith(("#", "<!--", "Working notes")):
                if line not in found:
                    found.append(line)
        if len(found) >= PER_TOPIC:
            break
    return found[:PER_TOPIC]


def main() -> None:
    topics = [t.strip() for t in (HERE / "topics.txt").read_text(encoding="utf-8").splitlines()]
    rows = []
    for topic in (t for t in topics if t and not t.startswith("#")):
        for passage in passages(topic):
            rows.append({"id": f"p{len(rows) + 1:04d}", "topic": topic, "text": passage})
    with (HERE / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
