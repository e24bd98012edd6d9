"""Timing helpers shared by the bench groups: interleaved rates, percentiles, and the raw
two-process socketpair ping-pong every round-trip figure is compared with."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence

from harness.procs import readline
from harness.rates import interleaved_rates

__all__ = ["interleaved_rates"]

_RAW_ECHO = textwrap.dedent("""
    import socket, sys
    s = socket.socket(fileno=int(sys.argv[1]))
    s.settimeout(10.0)
    print("ready", flush=True)
    try:
        while s.recv(1):
            s.send(b"x")
    except OSError:
        pass
    """)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; ``values`` must not be empty."""
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[k]


def reap(child: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Wait for ``child`` (killed if it does not end within ``timeout``)."""
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout)
    if child.stdout is not None:
        child.stdout.close()


@contextlib.contextmanager
def raw_pinger() -> Iterator[Callable[[], None]]:
    """A step doing one byte ping-pong over a raw socketpair with an echo process: the
    fastest two-process round trip Python can do here, the reference of every rate."""
    a, b = socket.socketpair()
    child = subprocess.Popen([sys.executable, "-c", _RAW_ECHO, str(b.fileno())],
                             pass_fds=[b.fileno()], stdout=subprocess.PIPE, text=True)
    b.close()
    try:
        if readline(child, 30.0) != "ready":
            raise RuntimeError("raw echo process failed to start")
        a.settimeout(5.0)

        def step() -> None:
            a.send(b"x")
            if not a.recv(1):
                raise RuntimeError("raw echo process went away")

        yield step
    finally:
        a.close()
        reap(child)
