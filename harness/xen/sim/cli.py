"""The simulator's one public entry for the command line (``sndif-harness sim ...``,
``bench sim``): the CLI imports this module and nothing else of ``harness.xen.sim``."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile

from harness.xen.sim.simexec import SimUsageError

__all__ = ["SimUsageError", "exec_command", "run_bench", "run_daemon"]


def run_daemon(dir: str | None) -> int:
    """The simulated Xen in the foreground until Ctrl-C or SIGTERM."""
    from harness.xen.sim.daemon import Daemon

    made = dir is None
    where = tempfile.mkdtemp(prefix="xen-sim-") if dir is None else dir
    print("xen-sim: Ctrl-C or SIGTERM stops it", flush=True)
    try:
        return Daemon(where, sys.stdout, watch_parent=False).run()
    finally:
        if made:
            shutil.rmtree(where, ignore_errors=True)


def run_bench(seconds: float) -> None:
    from harness.xen.sim import bench

    bench.run(seconds)


def exec_command(args: argparse.Namespace) -> int:
    """``sim exec``: run a program as a domain (raises :class:`SimUsageError`)."""
    from harness.xen.sim.simexec import exec_command as run

    return run(args)
