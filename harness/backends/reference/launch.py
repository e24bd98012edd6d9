"""The reference backend's command line: built here once, for every place that starts it
as a process of its own (sessions, the supervisor's ``reference`` spec)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def reference_argv(*, domid: int, frontend_domid: int, devid: int, out_dir: str,
                   capture_source: str | None = None, defects: Sequence[str] = (),
                   audio: str | None = None, log_level: str = "WARNING",
                   python: str = sys.executable) -> list[str]:
    """``python -m harness.backends.reference ...`` with these options."""
    argv = [python, "-m", "harness.backends.reference", "--domid", str(domid),
            "--frontend-domid", str(frontend_domid), "--devid", str(devid),
            "--out", out_dir, "--log-level", log_level]
    if capture_source is not None:
        argv += ["--capture-source", capture_source]
    if audio is not None:
        argv += ["--audio", audio]
    for name in defects:
        argv += ["--defect", name]
    return argv
