"""Start and stop the simulated Xen daemon around a block of code.

    with running_sim() as sim:
        sim.create_domain(1, "guest")
        front = sim.domain(1)
        ...

The daemon runs as a subprocess in its own process group and dies with its parent
(PR_SET_PDEATHSIG), removing its sockets and, when the runner made it, its directory: a
SIGKILLed caller leaves nothing behind either. On exit (normal, exception or
KeyboardInterrupt) it is stopped with SIGTERM, then SIGKILL, and the runner checks that
nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from harness.xen.api import PlatformDied, XenTimeout
from harness.xen.sim.client import (
    FaultRecord,
    MapCounterRecord,
    SimControl,
    SimDomain,
)
from harness.xen.sim.daemon import hypervisor_path, sim_env, xenstored_path
from harness.xen.sim.simdir import (
    READY_FILE,
    SimDirBusy,
    check_dir,
    clear_stale,
    owner,
    read_pid_file,
    stale_files,
)

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class SimLeak(RuntimeError):
    """The simulation left something behind (a process, a socket file, a directory)."""


class SimDied(PlatformDied):
    """The daemon died under a running block (killed, crashed): raised in place of the
    error the block met, which it caused (chained as its context)."""


class SimStartError(RuntimeError):
    """The daemon ended before it was ready (status 2: it said why on its stderr)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"xen-sim daemon exited with status {status} before it was ready")
        self.status = status


class Sim:
    """A running simulated Xen: paths, environments, domains and accounting."""

    def __init__(self, dir: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
        self.dir = dir
        self.proc = proc
        self.timeout = timeout
        self._control: SimControl | None = None
        self._domains: list[SimDomain] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def control(self) -> SimControl:
        if self._control is None:
            self._control = SimControl(hypervisor_path(self.dir, 0), self.timeout)
        return self._control

    def xenstored_path(self, domid: int) -> str:
        """The xenstored socket that speaks as ``domid`` (dom0: the privileged one)."""
        return xenstored_path(self.dir, None if domid == 0 else domid)

    def hypervisor_path(self, domid: int) -> str:
        return hypervisor_path(self.dir, domid)

    def env(self, domid: int) -> dict[str, str]:
        """os.environ plus what a process acting as ``domid`` needs."""
        return {**os.environ, **sim_env(self.dir, domid)}

    def create_domain(self, domid: int, name: str = "") -> None:
        self.control.create_domain(domid, name or f"domain-{domid}")

    def destroy_domain(self, domid: int) -> None:
        self.control.destroy_domain(domid)

    def domain(self, domid: int, store: bool = True) -> SimDomain:
        """A connected :class:`SimDomain`; closed when the simulation stops."""
        dom = SimDomain(self.dir, domid, self.timeout, store=store)
        self._domains.append(dom)
        return dom

    def mappings(self, granter: int | None = None, mapper: int | None = None,
                 history: bool = False) -> list[Any]:
        return self.control.mappings(granter, mapper, history)

    def ports(self, domid: int | None = None) -> list[Any]:
        return self.control.ports(domid)

    def grants(self, domid: int | None = None) -> list[Any]:
        return self.control.grants(domid)

    def busy_revokes(self, granter: int | None = None) -> list[Any]:
        return self.control.busy_revokes(granter)

    def map_counters(self, granter: int | None = None,
                     mapper: int | None = None) -> list[MapCounterRecord]:
        """Pages mapped/unmapped per (granter, mapper) since the start. The record history
        (``mappings(history=True)``) keeps only the last ``hypervisor.MAX_HISTORY``
        unmapped records; current mappings are always listed in full."""
        return self.control.map_counters(granter, mapper)

    def xs_writes(self, domid: int, since: int | None = None,
                  last: float | None = None, exclude_pid: int = 0) -> int:
        """XenStore write requests (write, mkdir, rm, set-perms) made by ``domid``: all of
        them, those at or after ``since`` (``time.monotonic_ns()``), or those in the
        ``last`` seconds. Only the last ``xenstored.WRITE_WINDOW`` writes of a domain
        carry times: an older ``since`` counts that window."""
        if last is not None:
            since = time.monotonic_ns() - int(last * 1e9)
        rows = self.control.xs_writes(domid, since or 0, exclude_pid)
        if not rows:
            return 0
        return rows[0].since if since or exclude_pid else rows[0].total

    def inject_fault(self, domid: int, op: str, errno: int | str | None = None,
                     mode: str | tuple[str, int] = "once") -> int:
        """Make ``op`` of ``domid`` fail (ops and default errnos: ``faults.OPS``, listed in
        PROTOCOL.md): ``mode`` ``"once"``, ``"always"`` or ``("from", n)``. C programs on
        the replacement libraries see it too. Returns the fault's id (for
        :meth:`clear_faults`)."""
        return self.control.inject_fault(domid, op, errno, mode)

    def clear_faults(self, domid: int | None = None, fault_id: int | None = None) -> int:
        """Remove the faults of ``domid`` (every domain's when None), or just ``fault_id``;
        returns how many were removed."""
        return self.control.clear_faults(domid, fault_id)

    def faults(self) -> list[FaultRecord]:
        """The faults set and not cleared, with how many calls matched and failed."""
        return self.control.faults()

    def rename_domain(self, domid: int, name: str) -> None:
        self.control.rename_domain(domid, name)

    def close_clients(self) -> None:
        for dom in self._domains:
            with contextlib.suppress(OSError):
                dom.close()
        self._domains.clear()
        if self._control is not None:
            self._control.close()
            self._control = None


def wait_ready(dir: str, pid: int, timeout: float,
               exited: Callable[[], int | None] = lambda: None) -> None:
    """Until daemon ``pid`` has written ``DIR/ready`` (a file naming another pid is a dead
    daemon's); :class:`SimStartError` if ``exited()`` gives a status first."""
    deadline = time.monotonic() + timeout
    ready = os.path.join(dir, READY_FILE)
    while True:
        if read_pid_file(ready) == pid:
            return
        status = exited()
        if status is not None:
            raise SimStartError(status)
        if time.monotonic() > deadline:
            raise XenTimeout(f"xen-sim daemon not ready after {timeout:.0f}s")
        time.sleep(0.01)


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL to the whole process group after ``timeout`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    # anything the daemon started in its group goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def leftovers(dir: str) -> list[str]:
    """Socket files, ready marker and lock file still present under ``dir``."""
    return stale_files(dir)


@contextlib.contextmanager
def running_sim(dir: str | None = None, *, timeout: float = 5.0,
                start_timeout: float = START_TIMEOUT, banner: bool = False) -> Iterator[Sim]:
    """Run the simulated Xen daemon for the duration of the block (in a new temporary
    directory, or in ``dir``: :class:`SimUsageError` if it cannot hold the sockets or a
    simulator runs there; what a dead one left is cleared). ``banner``: the daemon prints
    its paths and ``ready`` on our stdout."""
    made = dir is None
    if dir is None:
        # a fresh name only: the daemon makes the directory (--make-dir), so a kill of
        # ours before it runs leaves nothing on disk, and after, it removes it itself
        dir = os.path.join(tempfile.gettempdir(), f"xen-sim-{secrets.token_hex(6)}")
    else:
        dir = check_dir(dir)
        pid = owner(dir)
        if pid is not None:
            raise SimDirBusy(dir, pid)
        clear_stale(dir)
    argv = [sys.executable, "-m", "harness.xen.sim.daemon", "--dir", dir,
            "--parent", str(os.getpid())]
    argv += ["--make-dir"] if made else []
    argv += [] if banner else ["--quiet"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=None if banner else subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
    sim: Sim | None = None
    died: str | None = None
    try:
        wait_ready(dir, proc.pid, start_timeout, proc.poll)
        sim = Sim(dir, proc, timeout)
        yield sim
    finally:
        if proc.poll() is not None and proc.returncode not in (0, -signal.SIGTERM):
            died = _status_text(proc.returncode)  # before we stopped it: it died
        if sim is not None:
            sim.close_clients()
        stop_daemon(proc)
        problems = []
        if proc.returncode not in (0, -signal.SIGTERM):
            problems.append(f"daemon exit status {proc.returncode}")
        left = leftovers(dir)
        if left:
            # A daemon that died unclean (SIGKILL, crash) could not remove its sockets:
            # report it, then remove them, so a dead sim never leaves files behind.
            problems.append(f"files left: {left}")
            clear_stale(dir)
        if made:
            try:
                os.rmdir(dir)  # the daemon removes it when it stops cleanly
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"directory not empty: {dir}: {exc}")
        in_flight = sys.exc_info()[0]
        if problems and in_flight is None:
            raise SimLeak("; ".join(problems))
        if (died is not None and in_flight is not None
                and not issubclass(in_flight, (KeyboardInterrupt, PlatformDied))):
            raise SimDied(f"the simulated Xen died under the run ({died}); what failed "
                          f"then: {sys.exc_info()[1]}")


def _status_text(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


def _pythonpath() -> str:
    # the daemon must import this very package, whatever the caller's working directory
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    old = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + old if old else "")
