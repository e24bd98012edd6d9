"""The README's snd_be commands, run as written (bash, from the repository's root): the
build prints the binary, and the demo against snd_be passes every check it prints. (The
certify line runs in .ci/test, extracted from the README the same way.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from requires import unavailable

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Certifying your own backend: snd_be"


def readme_snd_be_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text[text.index(SECTION):]
    block = re.search(r"```sh\n(.*?)```", body, re.S)
    assert block is not None, "no sh block in the README's snd_be section"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_snd_be_build_and_demo_pass_as_written() -> None:
    from harness.peers import snd_be

    missing = snd_be.missing_packages()
    if missing:
        unavailable(f"cannot build snd_be: apt-get install {' '.join(missing)}")
    lines = readme_snd_be_commands()
    build, demo = lines[0], lines[1]
    assert build.startswith("SND_BE=") and " demo " in demo
    if not (ROOT / ".venv/bin/sndif-harness").exists():
        unavailable("the README's commands need the project in .venv (bash .ci/setup)")
    script = f"set -e\n{build}\n{demo}\n"
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    trace = re.search(r"^trace: (\S+)/trace\.jsonl", r.stdout, re.M)
    if trace:  # the demo's output directory under reports/: ours to remove
        shutil.rmtree(ROOT / trace.group(1), ignore_errors=True)
    assert r.returncode == 0, out
    assert "verdict: PASS" in r.stdout and "[FAIL]" not in r.stdout, out
    assert "at the audio host's sink" in r.stdout  # the audio really was checked
