"""One Bespoke Curator job, run by ``benchmarks/rate_limits.py --peer curator`` in Curator's venv.

Curator pins openai 2.x, which chainfleet's openai>=3 excludes, so it cannot share the
benchmark's interpreter: ``benchmarks/peers/setup.sh`` makes ``/work/peer-venvs/curator`` (or
``$CURATOR_VENV``) and the benchmark starts this script with that venv's Python, one process a
job, all on the same key of the same sim-server. This file imports nothing of chainfleet's.

The job is Curator's way of running the benchmark's 3-call chain: three ``curator.LLM`` passes
over the dataset (research -> write -> edit, each row's output feeding the next pass), backend
``openai`` at the sim-server's ``/v1`` with the shared key, ``max_tokens`` 200, and told
nothing about the limit (no ``max_requests_per_minute``: Curator reads the limit from the
headers of a probe request, as it does for OpenAI). ``--concurrency`` becomes
``max_concurrent_requests`` (the issue's -c 50). The sim-server announces no token limit, and
Curator then assumes its default of 100,000 tokens/min, which binds long before 1,200 requests/min
with these prompts; ``--tpm`` sets ``max_tokens_per_minute`` (the benchmark's second variant gives
a limit far above the server's use, so that the request limit read from the headers governs).
Curator retries refused calls itself (its default ``max_retries`` 10, pausing
``seconds_to_pause_on_rate_limit`` 10 s after a 429).

Offline and side-effect free: telemetry off (``TELEMETRY_ENABLED=false``), no viewer, the cache
off (``CURATOR_DISABLE_CACHE=1``) and its working files in a temporary directory,
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (Curator imports LiteLLM, which would fetch its price map),
and ``TIKTOKEN_CACHE_DIR`` at the ``cl100k_base`` file LiteLLM bundles (tiktoken names cache
files by the sha1 of the URL; LiteLLM ships it under that name), since Curator counts tokens with
tiktoken and would otherwise download the encoding.

With ``--wait``, it imports Curator first, prints ``ready`` and starts when a line comes on its
stdin: the benchmark starts its clock once every job has loaded (Curator's import takes seconds,
more on a loaded machine, and is not what is measured). Then it prints one JSON line:
``{"items_ok": N, "wall_s": S, "failed": F}`` (rows whose three passes all answered; the wall time
from the start signal), with ``"error"`` when Curator gave up on a pass (by default it raises
when any request still fails after its retries: ``require_all_responses``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

OFFLINE = {
    "TELEMETRY_ENABLED": "false",
    "CURATOR_VIEWER": "0",
    "CURATOR_DISABLE_CACHE": "1",
    "CURATOR_DISABLE_RICH_DISPLAY": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
}

STAGES = (
    ("research", "Research {topic}: the key facts, figures and open questions."),
    ("write", "Write an article on {topic} from these notes:\n{research}"),
    ("edit", "Edit this draft for clarity and accuracy:\n{write}"),
)
SYSTEM = "You are a meticulous research and writing agent."


def bundled_tiktoken_dir() -> str | None:
    """LiteLLM's bundled tokenizer directory (it holds cl100k_base under tiktoken's cache name),
    found without importing LiteLLM."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(folder) if folder.is_dir() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the sim-server's /v1")
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="gpt-sim")
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--tpm", type=int, default=None, help="max_tokens_per_minute (default: none)")
    parser.add_argument("--wait", action="store_true", help="print ready, start on a line on stdin")
    args = parser.parse_args()

    os.environ.update(OFFLINE)
    tokenizers = bundled_tiktoken_dir()
    if tokenizers:
        os.environ["TIKTOKEN_CACHE_DIR"] = tokenizers
    work = tempfile.mkdtemp(prefix="curator-job-")
    os.environ["CURATOR_CACHE_DIR"] = work

    from bespokelabs import curator

    backend_params = {
        "base_url": args.base_url,
        "api_key": args.key,
        "max_concurrent_requests": args.concurrency,
    }
    if args.tpm:
        backend_params["max_tokens_per_minute"] = args.tpm

    def step(name: str, template: str) -> curator.LLM:
        class Step(curator.LLM):  # type: ignore[misc]
            def prompt(self, row: dict[str, str]) -> list[dict[str, str]]:
                return [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": template.format(**row)},
                ]

            def parse(self, row: dict[str, str], response: str) -> dict[str, str]:
                return {**row, name: response}

        return Step(
            model_name=args.model,
            backend="openai",
            generation_params={"max_tokens": 200},
            backend_params=backend_params,
        )

    if args.wait:
        print("ready", flush=True)
        sys.stdin.readline()
    began = time.monotonic()
    rows: list[dict[str, str]] = [{"topic": f"topic {i}"} for i in range(args.chains)]
    error = None
    try:
        for name, template in STAGES:
            response = step(name, template)(rows, working_dir=work)
            rows = [dict(row) for row in response.dataset]
            if not rows:
                break
    except Exception as failure:  # Curator gives up on the whole pass (require_all_responses)
        error, rows = f"{type(failure).__name__}: {str(failure)[:200]}", []
    wall = time.monotonic() - began
    done = sum(1 for row in rows if row.get("edit"))
    shutil.rmtree(work, ignore_errors=True)
    result = {"items_ok": done, "wall_s": round(wall, 2), "failed": args.chains - done}
    print(json.dumps({**result, "error": error} if error else result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
