"""Row: fuzz throughput, malformed requests executed and checked per second (target
>= 1,000/s on 2 cores), from ``sndif-harness fuzz --mode requests -n 2`` run as a child
process for a fixed budget; the figure is the campaign's own count (``findings.json``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .table import Row, check, unavailable

TARGET = 1000.0
_MAIN = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"


def run(quick: bool = False) -> list[Row]:
    seconds = 3 if quick else 10
    workers = min(2, os.cpu_count() or 1)
    figure = f"fuzz: malformed requests executed and checked ({workers} workers)"
    target = f">= {TARGET:,.0f}/s"
    with tempfile.TemporaryDirectory(prefix="sndif-bench-fuzz-") as tmp:
        out = Path(tmp) / "fuzz"
        argv = [sys.executable, "-c", _MAIN, "fuzz", "--mode", "requests", "--budget",
                f"{seconds}s", "-n", str(workers), "--out", str(out)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            return [unavailable(figure, "/s", "the fuzz campaign did not end in time",
                                target=target)]
        try:
            stats = json.loads((out / "findings.json").read_text())["stats"]
            rate = float(stats["malformed_per_s"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
            return [unavailable(figure, "/s", f"no figure (exit {proc.returncode}, {exc!r}):"
                                f" {tail[0]}", target=target)]
    note = "" if proc.returncode == 0 else (
        f"the campaign reported findings (exit {proc.returncode}); the rate still counts")
    return [Row(figure, rate, "/s", target=target, holds=check(rate >= TARGET), note=note,
                extra={"requests_per_s": stats.get("requests_per_s"),
                       "seconds": stats.get("seconds"), "workers": stats.get("workers")})]
