"""The backend under test as a process: started in its own process group with its output
in the run's backend log, stopped by SIGTERM to the group and SIGKILL after a grace
period, and always reaped."""

from __future__ import annotations

import contextlib
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


def killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class BackendProcess:
    """One life of the backend process."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int,
                 cwd: str) -> None:
        self.argv = list(argv)
        try:
            self.proc = subprocess.Popen(self.argv, env=dict(env), stdin=subprocess.DEVNULL,
                                         stdout=log_fd, stderr=log_fd, cwd=cwd,
                                         start_new_session=True)
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
