"""Fuzzing the real C backend (xen-troops' snd_be, built unmodified from the shared
peers' tarballs) on the simulated Xen with a PulseAudio host: a campaign runs to its
budget without the harness hanging (crashes and hangs of snd_be are restarted), prints
its findings with a reproducer each, and leaves no process behind. CI runs the 2-minute
campaign of the issue with SNDIF_FUZZ_SND_BE_BUDGET=2m; the default here is 35 s."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.fuzz_cmd import duration

pytestmark = pytest.mark.slow
BUDGET = os.environ.get("SNDIF_FUZZ_SND_BE_BUDGET", "35s")


def _running(binary: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         timeout=10).stdout
    return [line for line in out.splitlines() if str(binary) in line]


def test_a_campaign_against_snd_be_runs_to_its_budget(snd_be_binary: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = tmp_path / "fuzz"
    seconds = duration(BUDGET)
    t0 = time.monotonic()
    code = main(["fuzz", "--backend", "exec:" + shlex.join([str(snd_be_binary), "-v",
                                                             "*:Debug"]),
                 "--audio", "pulse", "--unique-id", "pulse<{device}>", "--budget", BUDGET,
                 "--shrink-seconds", "10", "--db", "none", "--out", str(out)])
    elapsed = time.monotonic() - t0
    text = capsys.readouterr().out
    print(text)  # snd_be's findings, for the CI log
    assert code in (0, 1), text
    # to its budget (the campaign does not stop at the first finding), and not far past
    # it: every wait has a timeout, a crash or a hang is restarted
    assert seconds * 0.9 <= elapsed <= seconds + 10 + 90, elapsed
    summary = json.loads((out / "findings.json").read_text())
    assert summary["stats"]["examples"] > 5 and summary["stats"]["requests"] > 20
    for f in summary["findings"]:
        repro = out / f["reproducer"]
        assert repro.is_file() and f["oracle"] in repro.read_text()
        assert f"reproducer: {repro}" in text
    assert (code == 1) == bool(summary["findings"])
    results = json.loads((out / "results.json").read_text())
    assert len(results["cases"]) == len(summary["findings"])
    assert (out / "worker-0" / "backend" / "backend.log").stat().st_size > 0
    assert not _running(snd_be_binary), "snd_be left running"
