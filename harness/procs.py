"""Stopping child processes: one way, with a timeout on every wait."""

from __future__ import annotations

import contextlib
import signal
import subprocess


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int:
    """Signal ``proc`` and reap it; SIGKILL if it outlives ``timeout``. Returns its status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)
