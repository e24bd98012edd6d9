"""Child processes: stopping them (one way, with a timeout on every wait) and tying their
life to their parent's (PR_SET_PDEATHSIG), so that a killed parent leaves nothing behind."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (the thread that
    forked it) dies; False when prctl is unavailable."""
    prctl = _prctl()
    if prctl is None:
        return False
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def pdeathsig_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` making the child get ``sig`` when the thread that forked it dies;
    a child whose parent died before the prctl goes at once. libc is loaded here, before
    the fork: no dlopen in the child."""
    prctl = _prctl()
    parent = os.getpid()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(128 + sig)

    return preexec


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
