"""Stopping children and reading from them: bounded, whatever the child does."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from harness.procs import readline, stop_process


def child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_readline_returns_a_line_or_times_out() -> None:
    talker = child("print('bound', flush=True); import time; time.sleep(30)")
    mute = child("import time; time.sleep(30)")
    try:
        assert readline(talker, 10.0) == "bound"
        with pytest.raises(TimeoutError, match=r"said nothing within 0\.2 s"):
            readline(mute, 0.2)
    finally:
        assert stop_process(talker) == -signal.SIGTERM
        assert stop_process(mute) == -signal.SIGTERM
        for p in (talker, mute):
            p.stdout.close()  # type: ignore[union-attr]


def test_a_child_ignoring_sigterm_is_killed() -> None:
    stubborn = child("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                     "print('ready', flush=True); time.sleep(30)")
    assert readline(stubborn, 10.0) == "ready"
    assert stop_process(stubborn, timeout=0.3) == -signal.SIGKILL
    stubborn.stdout.close()  # type: ignore[union-attr]
    assert stop_process(stubborn) == -signal.SIGKILL  # already reaped: same status
