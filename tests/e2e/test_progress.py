"""The plain progress mode, in a fresh interpreter: it never imports rich."""

from __future__ import annotations

import subprocess
import sys


def test_plain_mode_does_not_import_rich() -> None:
    code = (
        "import asyncio, io, sys\n"
        "from chainfleet import arun\n"
        "from chainfleet.cli.progress import Progress\n"
        "from chainfleet.runner.demo import demo_pipeline\n"
        "p = Progress(stream=io.StringIO(), every=0.01)\n"
        "async def main():\n"
        "    await arun(demo_pipeline(latency=0.01), ['a', 'b'], on_start=p.start)\n"
        "    await p.stop()\n"
        "asyncio.run(main())\n"
        "assert 'rich' not in sys.modules, 'rich imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
