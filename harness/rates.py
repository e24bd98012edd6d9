"""Rates measured fairly on a shared machine: contenders in alternating short windows;
and the reference every round-trip rate is compared with, a raw socketpair ping-pong
between two processes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

from harness.procs import pdeathsig_preexec, readline

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


def echo_process(argv: list[str], **popen: Any) -> subprocess.Popen[str]:
    """A bench's echo process: in a session of its own (a Ctrl-C at the terminal reaches
    only the bench, which ends it), dying with the bench, its stderr discarded (a bench
    interrupted while the echo starts makes it fail: the bench says what went wrong)."""
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True,
                            preexec_fn=pdeathsig_preexec(), **popen)


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
    try:
        child = echo_process([sys.executable, "-c", _RAW_ECHO, str(b.fileno())],
                             pass_fds=[b.fileno()])
    finally:
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


def interleaved_rates(steps: dict[str, Callable[[], object]], seconds: float,
                      slices: int = 10, batch: int = 20) -> dict[str, float]:
    """Calls/s of each step, measured in alternating short windows so that a change of
    load on the machine affects every contender alike (a fair ratio from one run)."""
    counts = dict.fromkeys(steps, 0)
    spent = dict.fromkeys(steps, 0.0)
    window = seconds / (slices * len(steps))
    for _ in range(slices):
        for name, step in steps.items():
            start = time.perf_counter()
            deadline = start + window
            n = 0
            while True:
                for _ in range(batch):
                    step()
                n += batch
                now = time.perf_counter()
                if now >= deadline:
                    break
            counts[name] += n
            spent[name] += now - start
    return {name: counts[name] / spent[name] for name in steps}
