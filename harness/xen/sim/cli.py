"""The simulator's one public entry for the command line (``sndif-harness sim ...``,
``bench sim``): the CLI imports this module and nothing else of ``harness.xen.sim``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
from types import FrameType

from harness.xen.sim.simdir import SimUsageError

__all__ = ["SimUsageError", "exec_command", "run_bench", "run_daemon"]

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_daemon(dir: str | None) -> int:
    """The simulated Xen in the foreground until Ctrl-C, SIGTERM, SIGHUP or the death of
    our parent (raises :class:`SimUsageError` for a bad or busy ``dir``).

    The daemon is a child that dies with us (PR_SET_PDEATHSIG): even when we are
    SIGKILLed it stops and removes its sockets (and the temporary directory it got)."""
    from harness.procs import die_with_parent
    from harness.xen.sim.runner import SimLeak, SimStartError, running_sim

    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    old = {sig: signal.signal(sig, on_signal) for sig in STOPPING}
    try:
        die_with_parent(signal.SIGTERM)  # our parent's death is a SIGTERM: a clean stop
        with running_sim(dir, banner=True) as sim:
            print("xen-sim: Ctrl-C or SIGTERM stops it", flush=True)
            while not stop and sim.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sim.proc.wait(0.2)
            status = sim.proc.returncode
    except SimStartError as exc:
        return exc.status  # the daemon said why on stderr
    except SimLeak as exc:  # killed under us: what it left is removed, say how it ended
        print(f"xen-sim: the simulator ended abnormally: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 0 if stop or status is None else status


def run_bench(seconds: float) -> None:
    from harness.xen.sim import bench

    bench.run(seconds)


def exec_command(args: argparse.Namespace) -> int:
    """``sim exec``: run a program as a domain (raises :class:`SimUsageError`)."""
    from harness.xen.sim.simexec import exec_command as run

    return run(args)
