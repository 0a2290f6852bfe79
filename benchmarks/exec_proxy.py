"""What the command door's proxy adds to each model call a child makes, against the same server.

A sim-server (zero latency, no limits) runs in a thread. One Python child makes N chat
completions one after the other with the official openai SDK and reports the time its calls
took, measured inside the child (so process start-up is not counted), three ways:

- direct: the child talks to the sim-server itself;
- proxy: through :class:`chainfleet.code.proxy.Proxy` with plain forwarding (no run): the cost
  of the extra local HTTP hop alone;
- exec: through ``chainfleet exec`` (the proxy, then the run's Gateway: the limiter, the
  retry wrapper, the calls table, the journal written and made durable per call).

Prints the milliseconds per call for each (the best of ``--repeat`` rounds, as the machine is
shared) and the overhead per call against direct. ``--children K`` runs K children at once
instead of one (on a machine with few cores they mostly measure the children's own CPU). With
a zero-latency server the figures are the client side's CPU; against a real model (hundreds of
ms a call) they vanish into the latency.

Run:  python benchmarks/exec_proxy.py [--calls 300] [--repeat 3] [--children 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx2

from chainfleet.code.command import run_child
from chainfleet.code.proxy import Proxy, Upstreams, child_env, pass_through
from chainfleet.sim.server import SimServerSettings, SimServerThread

KEY = "sk-bench-exec-proxy"
SRC = str(Path(__file__).resolve().parents[1] / "src")

CHILD = """\
import json, sys, time
import openai

calls = int(sys.argv[1])
client = openai.OpenAI(max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "warm up"}])
start = time.perf_counter()
for n in range(calls):
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"item {sys.argv[2]} call {n}"}]
    )
print(json.dumps({"seconds": time.perf_counter() - start}), end="")
"""


def child_seconds(outputs: list[str]) -> float:
    """The slowest child's call time (children run side by side)."""
    return max(json.loads(text)["seconds"] for text in outputs)


def direct(url: str, script: Path, calls: int, children: int) -> float:
    env = {**os.environ, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": KEY}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(calls), str(k)], env=env, stdout=subprocess.PIPE, text=True
        )
        for k in range(children)
    ]
    return child_seconds([proc.communicate()[0] for proc in procs])


def proxied(url: str, script: Path, calls: int, children: int) -> float:
    async def go() -> float:
        upstreams = Upstreams(openai=f"{url}/v1", openai_key=KEY)
        async with httpx2.AsyncClient() as client, Proxy(pass_through(client), upstreams=upstreams) as proxy:

            async def one(k: int) -> str:
                with proxy.admit(k) as urls:
                    env = child_env({**os.environ, "OPENAI_API_KEY": KEY}, urls)
                    argv = [sys.executable, str(script), str(calls), str(k)]
                    result = await run_child(argv, env=env, stdin=None, timeout=None)
                return result.stdout.decode()

            return child_seconds(list(await asyncio.gather(*(one(k) for k in range(children)))))

    return asyncio.run(go())


def through_exec(url: str, script: Path, calls: int, children: int, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    items = folder / f"items-{children}.txt"
    items.write_text("".join(f"{k}\n" for k in range(children)))
    out = folder / f"out-{children}"
    env = {**os.environ, "PYTHONPATH": SRC, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": KEY}
    command = [sys.executable, "-c", "from chainfleet.cli import main; main()"]
    args = ["exec", "-i", str(items), "-c", str(children), "-o", str(out), "-q", "--"]
    subprocess.run(
        [*command, *args, sys.executable, str(script), str(calls), "{input}"],
        env=env,
        check=True,
        capture_output=True,
    )
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return child_seconds([row["outputs"]["command"] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per child")
    parser.add_argument("--children", type=int, default=1, help="children at once")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each mode is kept")
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    with (
        SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0)) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        folder = Path(tmp)
        script = folder / "child.py"
        script.write_text(CHILD)
        children = args.children
        runs: dict[str, list[float]] = {"direct": [], "proxy": [], "exec": []}
        for round_ in range(args.repeat):
            runs["direct"].append(direct(sim.url, script, args.calls, children))
            runs["proxy"].append(proxied(sim.url, script, args.calls, children))
            runs["exec"].append(through_exec(sim.url, script, args.calls, children, folder / str(round_)))
        times = {mode: min(seconds) for mode, seconds in runs.items()}
        base = times["direct"]
        print(f"{children} child(ren), {args.calls} sequential calls each, best of {args.repeat}:")
        for mode, seconds in times.items():
            extra = "" if mode == "direct" else f"   +{(seconds - base) / args.calls * 1e3:.2f} ms/call"
            each = seconds / args.calls * 1e3
            print(f"  {mode:<7} {each:7.2f} ms/call  {args.calls * children / seconds:8.0f} calls/s{extra}")


if __name__ == "__main__":
    main()
