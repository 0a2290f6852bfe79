"""Chaos: kill -9 a run at random moments, again and again, against a faulty server, then
resume it to the end; count the items lost and the calls paid twice.

A sim-server (in this process, on 127.0.0.1) answers a 3-stage chain (research -> write ->
edit on ``openai:gpt-sim``) with injected faults: 10% errors (500), 2% dropped connections,
2% malformed bodies, 20-40 ms a call. Each trial starts ``chainfleet run`` on a fresh folder,
sends SIGKILL at 1 to ``--kills`` random moments (30% of them 0.1-3 s after a start: start-up,
store creation, the first calls; the others after a random number of answers: the run and its
output phase), each time starting ``chainfleet resume`` again, and lets the last resume finish.
Every trial is compared with an uninterrupted run of the same input made first:

- lost: items whose final status or outputs differ from the uninterrupted run's (target 0);
- paid twice: successful answers the server gave more than once for the same request (its
  ``completed_by_key`` count), against the bound of one call per chain in flight at each kill
  (``--concurrency`` per kill);
- a second process started while a run holds the folder is refused (checked once per trial).

Run:  python benchmarks/chaos.py [--trials 10] [--items 200] [--kills 3] [--concurrency 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-chaos-benchmark-0123456789"
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
PIPELINE = """\
name: chaos
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}: the key facts."
    max_tokens: 120
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 160
  - name: edit
    prompt: "Edit this draft:\\n{{ write }}"
    max_tokens: 160
"""
FAULTS = {"error_rate": 0.10, "drop_rate": 0.02, "malformed_rate": 0.02, "latency": 0.02, "jitter": 0.02}


def env(sim: SimServerThread) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": KEY}


def essentials(out: Path) -> dict[str, tuple[str, Any]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    return {r["id"]: (r["status"], r["outputs"]) for r in rows}


def start(sim: SimServerThread, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CHAINFLEET, *args, "-q"], env=env(sim), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def trial(
    sim: SimServerThread, work: Path, n: int, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    out = work / f"trial-{n}"
    run = ["run", str(work / "chaos.yaml"), "-i", str(work / "topics.txt"), "-c", str(args.concurrency)]
    sim.reset()
    kills, refused = 0, None
    proc = start(sim, [*run, "--out", str(out)])
    for _ in range(rng.randint(1, args.kills)):
        if rng.random() < 0.3:  # somewhere in start-up, store creation or the first calls
            time.sleep(rng.uniform(0.1, 3.0))
        else:  # after a random share of the calls
            target = sim.stats()["ok"] + rng.randint(1, 3 * args.items)
            while sim.stats()["ok"] < target and proc.poll() is None:
                time.sleep(0.005)
        if proc.poll() is not None:
            break
        if refused is None and (out / ".chainfleet.lock").exists():
            second = subprocess.run(
                [CHAINFLEET, "resume", str(out), "-q"],
                env=env(sim),
                capture_output=True,
                text=True,
                timeout=120,
            )
            refused = second.returncode == 2 and "is in use by pid" in second.stderr
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = start(sim, ["resume", str(out)] if (out / "run.db").exists() else [*run, "--out", str(out)])
    _, stderr = proc.communicate(timeout=600)
    if proc.returncode != 0 and (out / "run.db").exists():  # killed before the run was recorded
        proc = start(sim, [*run, "--out", str(out), "--resume"])
        _, stderr = proc.communicate(timeout=600)
    paid = sim.stats()["completed_by_key"]
    return {
        "exit": proc.returncode,
        "kills": kills,
        "final": essentials(out) if (out / "results.jsonl").exists() else {},
        "twice": sum(c - 1 for c in paid.values() if c > 1),
        "refused": refused,
        "stderr": stderr[-300:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3, help="at most this many kills a trial")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    print(f"faults: {FAULTS}; {args.items} items x 3 stages, -c {args.concurrency}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimServerThread(SimServerSettings(api_keys=(KEY,), **FAULTS)) as sim,
    ):
        work = Path(tmp)
        (work / "chaos.yaml").write_text(PIPELINE, encoding="utf-8")
        topics = "".join(f"chaos topic number {i}\n" for i in range(args.items))
        (work / "topics.txt").write_text(topics, encoding="utf-8")
        ref = subprocess.run(
            [
                CHAINFLEET,
                "run",
                str(work / "chaos.yaml"),
                "-i",
                str(work / "topics.txt"),
                "-c",
                str(args.concurrency),
                "--out",
                str(work / "reference"),
                "-q",
            ],
            env=env(sim),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert ref.returncode == 0, ref.stderr
        reference = essentials(work / "reference")
        print(
            f"\n{'trial':>5} {'kills':>5} {'exit':>4} {'lost':>5} {'paid twice':>10} {'bound':>6}"
            f" {'2nd refused':>11}"
        )
        totals = {"kills": 0, "lost": 0, "twice": 0, "bad_exit": 0, "refused": 0, "checked": 0}
        for n in range(1, args.trials + 1):
            got = trial(sim, work, n, args, rng)
            lost = sum(1 for key, value in reference.items() if got["final"].get(key) != value)
            bound = got["kills"] * args.concurrency
            checked = "-" if got["refused"] is None else ("yes" if got["refused"] else "NO")
            cells = (n, got["kills"], got["exit"], lost, got["twice"], bound)
            print("{:>5} {:>5} {:>4} {:>5} {:>10} {:>6}".format(*cells), f"{checked:>11}")
            if got["exit"] != 0:
                print(f"      last stderr: {got['stderr']!r}")
            totals["kills"] += got["kills"]
            totals["lost"] += lost
            totals["twice"] += got["twice"]
            totals["bad_exit"] += got["exit"] != 0
            totals["refused"] += bool(got["refused"])
            totals["checked"] += got["refused"] is not None
        per_kill = totals["twice"] / totals["kills"] if totals["kills"] else 0.0
        print(
            f"\n{args.trials} trials, {totals['kills']} kills: {totals['lost']} items lost; "
            f"{totals['twice']} calls paid twice ({per_kill:.1f} per kill; "
            f"bound {args.concurrency} per kill, "
            f"ratio {per_kill / args.concurrency:.2f}); {totals['bad_exit']} trials not ending 0; "
            f"second process refused {totals['refused']}/{totals['checked']} times"
        )


if __name__ == "__main__":
    main()
