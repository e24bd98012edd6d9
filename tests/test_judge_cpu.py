"""The idle-CPU judge (harness.judge.cpu): a busy-looping process (here: one whose two
children spin) is caught, a sleeping one is not; /proc/<pid>/stat is parsed from the last
parenthesis, whatever the command name holds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from harness.judge.cpu import (
    IDLE_CPU_MAX,
    busy_problem,
    cpu_seconds,
    descendants,
    measure,
    parse_stat,
)
from harness.procs import stop_process

#: A parent that sleeps while two children spin: only counting descendants catches it.
BUSY_CHILDREN = ("import subprocess, sys, time\n"
                 "spin = [sys.executable, '-c', 'while True: pass']\n"
                 "kids = [subprocess.Popen(spin) for _ in range(2)]\n"
                 "time.sleep(30)\n")
SLEEPER = "import time; time.sleep(30)"
WINDOW = 1.0


@contextlib.contextmanager
def python(code: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        yield proc
    finally:
        # its children are in its session: SIGKILL them with it, then reap it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stop_process(proc, timeout=5.0)


def _wait_children(pid: int, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(descendants(pid)) < n:
        assert time.monotonic() < deadline, f"process {pid}: {n} children never started"
        time.sleep(0.05)


def test_a_process_whose_children_spin_is_caught() -> None:
    with python(BUSY_CHILDREN) as proc:
        _wait_children(proc.pid, 2)
        use = measure(proc.pid, WINDOW)
        own = measure(proc.pid, WINDOW, children=False)
    # two spinning children on a shared 2-core machine: well over half a core in all
    assert use.share > IDLE_CPU_MAX, use
    assert busy_problem(use) is not None and str(proc.pid) in str(busy_problem(use))
    assert own.share < IDLE_CPU_MAX, own  # the parent itself only sleeps


def test_a_sleeping_process_passes() -> None:
    with python(SLEEPER) as proc:
        use = measure(proc.pid, WINDOW)
    assert use.share < 0.1, use
    assert busy_problem(use) is None


def test_cpu_time_grows_with_work() -> None:
    with python("while True: pass") as proc:
        first = cpu_seconds(proc.pid)
        time.sleep(0.5)
        assert cpu_seconds(proc.pid) > first


def test_a_gone_process_is_a_lookup_error() -> None:
    with python("pass") as proc:
        proc.wait(10)
    with pytest.raises(ProcessLookupError):
        cpu_seconds(proc.pid)


def test_stat_parsed_after_the_last_parenthesis() -> None:
    # a command name with a space and a ')' inside, as the kernel writes it
    line = ("42 (evil) name) S 1 42 42 0 -1 4194304 100 0 0 0 "
            "7 3 2 1 20 0 1 0 100 1000 10 18446744073709551615\n")
    assert parse_stat(line) == (7, 3, 2, 1)
