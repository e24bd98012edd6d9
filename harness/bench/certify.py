"""Rows of ``sndif-harness certify`` on the reference backend: its wall time against the
real-time audio its cases play, ``-n 2`` against ``-n 1``, and the harness's peak memory.

Each run is a child process (``python -m harness.cli certify ...``) that reports its own
peak RSS at exit (``RUSAGE_SELF``: the harness, not the backends it starts). The audio the
cases play is what the reference backend wrote: the total duration of its WAV files,
which it fills at the sample rate's pace, so that is the least time the run could take.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from .table import Row, check, unavailable

TARGET_OVERHEAD = 0.30
TARGET_MIB = 150.0
#: --quick: one area's cases, so the CI smoke stays short
QUICK_K = "test_a_xenstore"

_WRAPPER = """
import resource, sys
from harness.cli import main
rc = main(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.exit(rc)
"""


@dataclass
class CertifyRun:
    workers: int
    status: int
    seconds: float
    audio_seconds: float
    peak_kib: int | None
    cases: int
    tail: str


def audio_seconds(report_dir: Path) -> float:
    """Total duration of the WAV files under ``report_dir`` (what the backend played)."""
    total = 0.0
    for path in report_dir.rglob("*.wav"):
        try:
            with wave.open(str(path)) as w:
                total += w.getnframes() / w.getframerate()
        except (OSError, EOFError, wave.Error):
            continue  # a file cut short by a killed backend: its frames are not counted
    return total


def run_certify(workers: int, k: str | None, timeout: float) -> CertifyRun:
    with tempfile.TemporaryDirectory(prefix="sndif-bench-certify-") as tmp:
        report = Path(tmp) / "report"
        rss = Path(tmp) / "maxrss"
        argv = [sys.executable, "-c", _WRAPPER, str(rss), "certify", "--report-dir",
                str(report)]
        if workers > 1:
            argv += ["-n", str(workers)]
        if k:
            argv += ["-k", k]
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.monotonic() - start
        peak = int(rss.read_text()) if rss.is_file() else None
        cases = 0
        results = report / "results.json"
        if results.is_file():
            import json

            cases = len(json.loads(results.read_text()).get("cases", []))
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        return CertifyRun(workers, proc.returncode, seconds, audio_seconds(report), peak,
                          cases, tail)


def run(quick: bool = False) -> list[Row]:
    k = QUICK_K if quick else None
    timeout = 300.0 if quick else 900.0
    one = run_certify(1, k, timeout)
    rows: list[Row] = []
    scope = f"-k {k}, " if k else ""
    if one.status not in (0, 1):
        why = f"certify exited {one.status}: {one.tail}"
        return [unavailable("certify wall time, reference backend", "s", why,
                            target=f"overhead <= {TARGET_OVERHEAD:.0%}"),
                unavailable("certify -n 2 speed-up", "x", why),
                unavailable("peak memory of the harness during certify", "MiB", why,
                            target=f"<= {TARGET_MIB:g} MiB")]
    if one.audio_seconds > 0:
        overhead = (one.seconds - one.audio_seconds) / one.audio_seconds
        rows.append(Row("certify wall time, reference backend", one.seconds, "s",
                        reference=one.audio_seconds, reference_name="audio its cases play",
                        ratio=one.seconds / one.audio_seconds,
                        target=f"overhead <= {TARGET_OVERHEAD:.0%}",
                        holds=check(overhead <= TARGET_OVERHEAD),
                        note=f"{scope}{one.cases} cases; overhead = (wall - audio) / audio "
                             f"= {overhead:.0%}: most cases play no audio at all, their "
                             "time is world set-up, XenStore handshakes and checks",
                        extra={"cases": one.cases, "overhead": overhead}))
    else:
        rows.append(Row("certify wall time, reference backend", one.seconds, "s",
                        reference_name="audio its cases play",
                        target=f"overhead <= {TARGET_OVERHEAD:.0%}", holds="printed",
                        note=f"{scope}{one.cases} cases played no audio: no overhead to "
                             "compute", extra={"cases": one.cases}))
    if one.peak_kib is not None:
        mib = one.peak_kib / 1024
        rows.append(Row("peak memory of the harness during certify", mib, "MiB",
                        target=f"<= {TARGET_MIB:g} MiB", holds=check(mib <= TARGET_MIB),
                        note=f"{scope}peak RSS of the certify process (backends not "
                             "counted)"))
    else:
        rows.append(unavailable("peak memory of the harness during certify", "MiB",
                                "the certify process did not report it",
                                target=f"<= {TARGET_MIB:g} MiB"))
    two = run_certify(2, k, timeout)
    if two.status not in (0, 1):
        rows.append(unavailable("certify -n 2 speed-up", "x",
                                f"certify -n 2 exited {two.status}: {two.tail}"))
    else:
        rows.append(Row("certify -n 2 wall time", two.seconds, "s", reference=one.seconds,
                        reference_name="-n 1", ratio=one.seconds / two.seconds,
                        target="printed", note="ratio = speed-up (-n 1 time / -n 2 time)"))
    return rows
