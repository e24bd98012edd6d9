"""The backend under test as a process: started in its own process group with its output
in the run's backend log, stopped by SIGTERM to the group and SIGKILL after a grace
period, and always reaped. It dies with the harness (PR_SET_PDEATHSIG): a harness killed
by SIGKILL has no chance to stop it, and a backend such as snd_be lives on without its
Xen."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.runner.verdicts import signal_name


@dataclass(frozen=True)
class Stopped:
    """How a stop went: the exit status, and whether SIGTERM was not enough."""

    status: int | None
    killed: bool  # it outlived the grace period after SIGTERM: SIGKILL was needed
    was_running: bool  # it was still alive when the stop began


def status_text(status: int | None) -> str:
    if status is None:
        return "running"
    name = signal_name(status)
    return f"killed by {name}" if name else f"exit status {status}"


_PR_SET_PDEATHSIG = 1


def _die_with_parent(libc: ctypes.CDLL | None, parent: int) -> None:
    """preexec_fn (in the child, before exec): SIGKILL when the parent dies; if it died
    already (before prctl), go now. libc was loaded before the fork: no dlopen here."""
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class BackendProcess:
    """One life of the backend process."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int,
                 cwd: str) -> None:
        self.argv = list(argv)
        libc, parent = _libc(), os.getpid()
        try:
            self.proc = subprocess.Popen(self.argv, env=dict(env), stdin=subprocess.DEVNULL,
                                         stdout=log_fd, stderr=log_fd, cwd=cwd,
                                         start_new_session=True,
                                         preexec_fn=lambda: _die_with_parent(libc, parent))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot start {self.argv[0]}: {exc.strerror}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, grace: float) -> Stopped:
        """SIGTERM the process group, SIGKILL after ``grace``; whatever it started in its
        group goes too. Bounded: at most about ``2 * grace``."""
        running = self.proc.poll() is None
        killed = False
        if running:
            killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                killed = True
        killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        return Stopped(self.proc.returncode, killed, running)
