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
- a second process started while a run holds the folder is refused (checked once per trial);
- the folder: after the last resume, results.jsonl holds every item, and report.html,
  timeline.png, report.md and report.json are there with the report's totals right
  (:func:`folder_problems`).

``--phases`` kills instead at named moments, deterministically (the store's kill points,
``CHAINFLEET_TEST_KILL_AT``): as the store is created, in the output phase (as it starts,
after results.jsonl, before report.html), while a batch is created and polled, and while a
reviewer's decision is written. After each, it goes on as a user would (``resume``; ``run ...
--resume`` for a store with no run; the review again, then ``resume``) and checks the whole
folder. A short version runs in CI (``tests/e2e/test_chaos_short.py``).

Run:  python benchmarks/chaos.py [--trials 10] [--items 200] [--kills 3] [--concurrency 8] [--seed 1]
      python benchmarks/chaos.py --phases [--items 40]
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


#: the deterministic kills of ``--phases``: name -> (kill point, pipeline: plain, batch or review)
PHASES: dict[str, tuple[str, str]] = {
    "store creation": ("store-created", "plain"),
    "output phase, as it starts": ("output-started", "plain"),
    "output phase, after results.jsonl": ("output-results", "plain"),
    "output phase, before report.html": ("output-html", "plain"),
    "batch, created": ("batch-created", "batch"),
    "batch, polling": ("batch-polled", "batch"),
    "review, deciding": ("review-deciding", "review"),
    "review, decided": ("review-decided", "review"),
}
#: the phases' pipelines: the built-in sim, no server, no latency (batch: the sim's own batches)
PHASE_PIPELINE = """\
name: chaos-phases
model: sim
sim: {latency: 0}
input: topic
%s
stages:
  - {name: research, prompt: "Research {{ topic }}.", max_tokens: 60}
  - {name: write, prompt: "Write on {{ topic }} from {{ research }}", max_tokens: 80%s}
"""
PHASE_VARIANTS = {
    "plain": ("", ""),
    "batch": ("mode: batch\nbatch: {window: 0.1, poll: 0.1, poll_max: 0.3, sim_delay: 0.2}", ""),
    "review": ("", ", review: always"),
}


def folder_problems(out: Path, items: int) -> list[str]:
    """What is wrong with a finished run's folder of ``items`` items (nothing: an empty list):
    results.jsonl with one succeeded record per item, report.json's totals, and every report."""
    problems = []
    for name in ("report.html", "timeline.png", "report.md", "report.json", "results.jsonl"):
        if not (out / name).is_file() or (out / name).stat().st_size == 0:
            problems.append(f"{name} missing")
    if (out / "results.jsonl").is_file():
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
        if len({r["id"] for r in rows}) != items or len(rows) != items:
            problems.append(f"results.jsonl: {len(rows)} records for {items} items")
        if any(r["status"] != "succeeded" for r in rows):
            problems.append("results.jsonl: not every item succeeded")
    if (out / "report.json").is_file():
        counts = json.loads((out / "report.json").read_text(encoding="utf-8"))["items"]
        if (counts["total"], counts["succeeded"]) != (items, items):
            problems.append(f"report.json: {counts}")
    return problems


def phase_trial(work: Path, phase: str, items: int) -> tuple[list[str], list[int]]:
    """Kill at ``phase`` (a key of :data:`PHASES`), go on as a user would, check the folder.
    Returns (the folder's problems, each command's exit code)."""
    point, variant = PHASES[phase]
    head, review = PHASE_VARIANTS[variant]
    folder = work / f"phase-{point}"
    folder.mkdir(parents=True)
    (folder / "p.yaml").write_text(PHASE_PIPELINE % (head, review), encoding="utf-8")
    (folder / "t.txt").write_text("".join(f"phase topic {i}\n" for i in range(items)), encoding="utf-8")
    out = folder / "out"
    run = ["run", "p.yaml", "-i", "t.txt", "--out", "out", "-q"]
    codes: list[int] = []

    def step(*args: str, kill: str = "") -> int:
        env = {**os.environ, "CHAINFLEET_TEST_KILL_AT": kill}
        done = subprocess.run(
            [CHAINFLEET, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600
        )
        codes.append(done.returncode)
        return done.returncode

    if variant == "review":
        step(*run)  # every item waits for review: exit 3
        step("review", "out", "--approve-all", kill=point)
        step("review", "out", "--approve-all")
    else:
        step(*run, kill=point)
    if step("resume", "out", "-q") == 2:  # a store with no run: start it, as resume says
        step(*run, "--resume")
    return folder_problems(out, items), codes


def phases(args: argparse.Namespace) -> None:
    """``--phases``: one kill at each named moment, a resume, the folder checked."""
    print(f"\n{'phase':<36} {'exits':<22} folder")
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for phase in PHASES:
            problems, codes = phase_trial(Path(tmp), phase, args.items)
            failures += bool(problems)
            print(f"{phase:<36} {' '.join(map(str, codes)):<22} {'; '.join(problems) or 'whole'}")
    print(f"\n{len(PHASES)} phases: {failures} folders not whole after resume")


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
        "folder": folder_problems(out, args.items),
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
    parser.add_argument("--phases", action="store_true", help="kill at each named moment instead")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    if args.phases:
        phases(args)
        return
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
        totals = {
            "kills": 0,
            "lost": 0,
            "twice": 0,
            "bad_exit": 0,
            "refused": 0,
            "checked": 0,
            "bad_folder": 0,
        }
        for n in range(1, args.trials + 1):
            got = trial(sim, work, n, args, rng)
            lost = sum(1 for key, value in reference.items() if got["final"].get(key) != value)
            bound = got["kills"] * args.concurrency
            checked = "-" if got["refused"] is None else ("yes" if got["refused"] else "NO")
            cells = (n, got["kills"], got["exit"], lost, got["twice"], bound)
            print("{:>5} {:>5} {:>4} {:>5} {:>10} {:>6}".format(*cells), f"{checked:>11}")
            if got["exit"] != 0:
                print(f"      last stderr: {got['stderr']!r}")
            if got["folder"]:
                print(f"      folder: {'; '.join(got['folder'])}")
                totals["bad_folder"] += 1
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
            f"ratio {per_kill / args.concurrency:.2f}); {totals['bad_exit']} trials not ending 0, "
            f"{totals['bad_folder']} with a folder not whole; "
            f"second process refused {totals['refused']}/{totals['checked']} times"
        )


if __name__ == "__main__":
    main()
