"""The backend under test as a process: started in its own process group with its output
in the run's backend log, stopped by SIGTERM to the group and SIGKILL after a grace
period, and always reaped. It dies with the harness (PR_SET_PDEATHSIG): a harness killed
by SIGKILL has no chance to stop it, and a backend such as snd_be lives on without its
Xen.

A backend that daemonizes (forks, starts a new session, lets its first process exit)
leaves its process group: its processes are found by a token in their environment
(inherited across fork and exec), so that it counts as running while any of them lives,
and a stop stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.procs import pdeathsig_preexec
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


#: The environment variable that marks every process of one backend life.
TOKEN_VAR = "SNDIF_HARNESS_BACKEND"


def processes_with(token: str, exclude: int = 0) -> list[int]:
    """Live processes whose environment carries ``TOKEN_VAR=token`` (as the kernel gave
    it at exec), but ``exclude``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == exclude:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                zombie = fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
        except OSError:  # gone, or not ours to read
            continue
        if not zombie and needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


class BackendProcess:
    """One life of the backend process (and of whatever it started, daemonized or not)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_fd: int,
                 cwd: str) -> None:
        self.argv = list(argv)
        self.token = uuid.uuid4().hex
        #: the processes that outlived the first one (a daemonized backend), last seen
        self.escaped: list[int] = []
        env = {**env, TOKEN_VAR: self.token}
        try:
            self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log_fd, stderr=log_fd, cwd=cwd,
                                         start_new_session=True,
                                         preexec_fn=pdeathsig_preexec(signal.SIGKILL))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot start {self.argv[0]}: {exc.strerror}") from exc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """None while the backend runs: its first process, or, once that has exited,
        any process it left behind (a daemon)."""
        status = self.proc.poll()
        if status is None:
            return None
        # only scanned once the first process is gone: the daemonizing case
        self.escaped = processes_with(self.token, exclude=self.proc.pid)
        return None if self.escaped else status

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, grace: float) -> Stopped:
        """SIGTERM the process group and every process left outside it, SIGKILL after
        ``grace``; whatever it started goes too. Bounded: at most about ``2 * grace``."""
        others = processes_with(self.token, exclude=self.proc.pid)
        running = self.proc.poll() is None or bool(others)
        killed = False
        if running:
            self._signal_all(others, signal.SIGTERM)
            if not self._gone(grace):
                killed = True
        self._signal_all(processes_with(self.token, exclude=self.proc.pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        self._gone(grace)
        return Stopped(self.proc.returncode, killed, running)

    def _signal_all(self, others: Sequence[int], sig: int) -> None:
        killpg(self.proc.pid, sig)
        mine = os.getpgid(0)
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                pgid = os.getpgid(pid)
                if pgid != mine:  # never our own group
                    os.killpg(pgid, sig)
                else:
                    os.kill(pid, sig)

    def _gone(self, timeout: float) -> bool:
        """Wait until the first process and every escaped one are gone."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)
            if self.proc.returncode is not None \
                    and not processes_with(self.token, exclude=self.proc.pid):
                return True
            if time.monotonic() >= deadline:
                return False
