"""Poison inputs and pipelines through the real ``chainfleet`` script: a lone surrogate is replaced
with a warning, a key where a variable name belongs is never echoed, and a template escaping the
sandbox is refused before any call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")

SIM = "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"

ONE_STAGE = SIM + "stages:\n  - {name: a, prompt: 'A {{ topic }} {{ note }}'}\n"


def cli(*args: str, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHAINFLEET, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False, **kw
    )


def test_a_lone_surrogate_is_replaced_with_a_warning_and_the_run_finishes(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(ONE_STAGE, encoding="utf-8")
    lines = [
        {"topic": "plain", "note": "ok"},
        {"topic": "in the input field \ud800", "note": "ok"},
        {"topic": "elsewhere", "note": "a lone low half \udfff here", "id": "x\udc00"},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)  # json.dumps escapes them: valid JSON
    (tmp_path / "in.jsonl").write_text(text, encoding="ascii")
    args = ["run", "p.yaml", "-i", "in.jsonl", "--out", "out", "-q"]
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "in.jsonl:2: a lone surrogate escape" in done.stderr and "in.jsonl:3:" in done.stderr
    again = cli(*args, "--resume", cwd=tmp_path)  # a finished run: nothing is read or changed
    assert again.returncode == 0, again.stderr
    assert "nothing to resume" in again.stdout
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text("utf-8").splitlines()]
    assert [r["status"] for r in rows] == ["succeeded"] * 3
    assert rows[1]["input"]["topic"] == "in the input field \ufffd"
    assert rows[2]["input"]["note"] == "a lone low half \ufffd here" and rows[2]["id"] == "x\ufffd"
    assert len(list((tmp_path / "out" / "items").iterdir())) == 3


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_key_written_where_a_variable_name_belongs_is_never_echoed(tmp_path: Path) -> None:
    key = "sk-proj-Zx81bQ0aLw2Yt4Ue7Hn3Pq9"
    write(
        tmp_path,
        SIM.replace("model: sim", "model: local:llama")
        + f"providers:\n  local: {{kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key_env: '{key}'}}\n"
        + "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n",
    )
    (tmp_path / "t.txt").write_text("x\n", encoding="utf-8")
    done = cli("run", "p.yaml", "-i", "t.txt", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert "api_key_env must name an environment variable" in done.stderr
    assert "the value looks like a key and is not shown" in done.stderr
    assert key not in done.stderr + done.stdout and key[:12] not in done.stderr
    write(
        tmp_path,
        SIM.replace("model: sim", "model: local:llama")
        + f"providers:\n  local: {{kind: openai, base_url: '{key}'}}\n"
        + "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n",
    )
    done = cli("run", "p.yaml", "-i", "t.txt", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and "not a URL" in done.stderr and key not in done.stderr


ESCAPE = "{{ cycler.__init__.__globals__.os.popen('echo PWNED > pwned.txt').read() }}"


def test_a_template_escaping_the_sandbox_is_refused_before_any_call(tmp_path: Path) -> None:
    write(tmp_path, SIM + f'stages:\n  - name: a\n    prompt: "{ESCAPE} {{{{ topic }}}}"\n')
    (tmp_path / "t.txt").write_text("x\n", encoding="utf-8")
    done = cli("run", "p.yaml", "-i", "t.txt", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert "p.yaml:7: stage 'a' (stages[0]), field 'prompt': uses '__" in done.stderr
    assert "which the template sandbox refuses" in done.stderr
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "out").exists()
