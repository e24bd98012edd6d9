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


def readline(proc: subprocess.Popen, timeout: float) -> str:  # type: ignore[type-arg]
    """One line of ``proc``'s stdout, or TimeoutError: a child that never speaks must not
    hang the harness. Bytes are decoded; the line comes back stripped."""
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"{proc.args!r} said nothing within {timeout:g} s")
    line = proc.stdout.readline()
    return (line.decode(errors="replace") if isinstance(line, bytes) else line).strip()
