"""One Bespoke Curator job for ``benchmarks/rate_limits.py``'s shared scenario (run in its own
venv: Curator pins openai 2.x, which chainfleet's openai>=3 excludes; this file imports no
chainfleet).

The same three-stage chain as the other tools (research, write, edit), the way a Curator user
writes one: three ``curator.LLM`` passes over the items, each stage after the last. Told
nothing (no ``max_requests_per_minute``: Curator reads the limits from the server's headers),
``max_concurrent_requests`` as ``-c``. Offline: telemetry off, the local cost map, no cache.
Prints one JSON line: items finished.

Not yet called by ``rate_limits.py`` (issue 23 asks for it there). Tried by hand against
``chainfleet sim-server --rpm 1200 --bucket-seconds 1 --latency 0.05`` (bespokelabs-curator
0.1.31, openai 2.30.0, in a venv of its own): 20 items finished, but Curator reads its limits
from the answer to an empty-messages request, which the sim-server refuses with a 422 that
carries no rate-limit headers, so it ran one call at a time (169 requests/min): no fair peer
until the sim-server answers that probe as OpenAI does, with the headers.

Run:  <curator venv>/bin/python benchmarks/peers/curator_job.py URL KEY ITEMS CONCURRENCY
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("BESPOKE_CURATOR_TRACKER_DISABLED", "1")
os.environ.setdefault("CURATOR_DISABLE_CACHE", "1")
os.environ.setdefault("CURATOR_DISABLE_RICH_DISPLAY", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TELEMETRY_ENABLED", "false")

from bespokelabs import curator  # noqa: E402

SYSTEM = "You are a meticulous research and writing agent."
STAGES = {
    "research": "Research {topic}: the key facts, figures and open questions.",
    "write": "Write an article on {topic} from these notes:\n{research}",
    "edit": "Edit this draft for clarity and accuracy:\n{write}",
}


def stage(name: str, url: str, key: str, concurrency: int) -> curator.LLM:
    class Step(curator.LLM):
        def prompt(self, row: dict[str, str]) -> list[dict[str, str]]:
            return [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": STAGES[name].format(**row)},
            ]

        def parse(self, row: dict[str, str], response: str) -> dict[str, str]:
            return {**row, name: response}

    return Step(
        model_name="gpt-4o-mini",
        backend="openai",
        generation_params={"max_tokens": 200},
        backend_params={
            "base_url": f"{url}/v1",
            "api_key": key,
            "max_concurrent_requests": concurrency,
            "require_all_responses": False,
        },
    )


def main() -> None:
    url, key, items, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    prefix = os.environ.get("JOB", "job")
    rows = [{"topic": f"{prefix} topic {i}"} for i in range(items)]
    for name in STAGES:
        result = stage(name, url, key, concurrency)(rows)
        rows = [dict(r) for r in result.dataset] if hasattr(result, "dataset") else [dict(r) for r in result]
    print(json.dumps({"items_ok": sum(1 for r in rows if r.get("edit"))}))


if __name__ == "__main__":
    main()
