"""The execution seam without Ray, in a fresh interpreter each: ``--help`` and a local run never
import Ray, and ``--backend ray`` where Ray cannot be imported is exit code 2 with the install
command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import read_report

#: the console script's main(), run three times in one process: --help, run --help, a sim run
PROBE = """
import sys
from chainfleet.cli import main
pipeline, items, out = sys.argv[1:4]
for argv in (["--help"], ["run", "--help"], ["run", pipeline, "-i", items, "--out", out, "-q"]):
    sys.argv = ["chainfleet", *argv]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), (argv, exc.code)
print(sorted(name for name in sys.modules if name == "ray" or name.startswith("ray.")))
"""


def test_help_and_a_local_run_never_import_ray(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(write_pipeline()), str(topics_file()), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == "[]"
    assert read_report(out)["items"]["succeeded"] == 5


#: the console script with Ray made unimportable, as on a machine without the extra
NO_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return None
sys.meta_path.insert(0, NoRay())
for name in [n for n in sys.modules if n == "ray" or n.startswith("ray.")]:
    del sys.modules[name]
from chainfleet.cli import main
sys.argv = ["chainfleet", "run", *sys.argv[1:]]
main()
"""


def test_the_ray_backend_without_ray_is_exit_2_with_the_install_command(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [str(write_pipeline()), "-i", str(topics_file()), "--backend", "ray", "--out", str(out)]
    probe = subprocess.run(
        [sys.executable, "-c", NO_RAY, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert probe.returncode == 2, probe.stderr
    assert "pip install 'chainfleet[ray]'" in probe.stderr
    assert "Traceback" not in probe.stderr
    assert not (out / "results.jsonl").exists()
