"""Run an unmodified program as a domain of the simulated Xen.

    status = run_as_domain(["./my-backend", "-v"], runner=sim, domid=0)

The program gets the replacement ``libxenevtchn``, ``libxengnttab`` and ``libxenctrl``
(built on first use, see :mod:`harness.xen.sim.clibs.build`) through ``LD_LIBRARY_PATH``,
Debian's own ``libxenstore`` pointed at the sim's xenstored by ``XENSTORED_PATH``, and the
sim's environment for that domain (``XEN_SIM_DIR``, ``XEN_SIM_DOMID``,
``XEN_SIM_HYPERVISOR``). Its stdout and stderr are streamed line by line with a prefix; it
runs in its own process group: SIGINT, SIGTERM and SIGHUP sent to us are forwarded to that group,
which is SIGKILLed after :data:`KILL_GRACE` seconds if still there (also on timeout); the
program gets PR_SET_PDEATHSIG(SIGKILL), so it dies even when we are SIGKILLed.

``sndif-harness sim exec [--domid N] [--name NAME] -- COMMAND [ARGS]`` is
:func:`exec_command` (wired by ``harness/cli/sim_cmd.py``, which turns a
:class:`SimUsageError` into the CLI's one-line usage error).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

from harness.procs import pdeathsig_preexec, readline
from harness.xen.sim.clibs.build import build_libs
from harness.xen.sim.daemon import hypervisor_path, sim_env
from harness.xen.sim.simdir import (
    READY_FILE,
    SimUsageError,
    owner,
    read_pid_file,
    stale_files,
)

TIMEOUT_STATUS = 124  # what run_as_domain returns when it killed the program on timeout
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the process group
DRAIN_GRACE = 2.0  # seconds to wait for output after the program exits

OutputFn = Callable[[str, str], None]  # (stream name "stdout"/"stderr", prefixed line)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
START_TIMEOUT = 10.0  # seconds a simulator that holds its directory has to become ready

__all__ = ["SimUsageError", "ensure_domain", "exec_command", "run_as_domain"]


def _default_output(stream: str, line: str) -> None:
    out = sys.stderr if stream == "stderr" else sys.stdout
    try:
        out.write(line + "\n")
        out.flush()
    except (BrokenPipeError, ValueError):
        pass


def domain_env(sim_dir: str, domid: int, libdir: str | os.PathLike[str],
               base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process acting as ``domid`` with the replacement libraries."""
    env = dict(os.environ if base is None else base)
    env.update(sim_env(sim_dir, domid))
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = str(libdir) + (os.pathsep + old if old else "")
    return env


def ensure_domain(sim_dir: str, domid: int, name: str | None = None,
                  timeout: float = 5.0) -> None:
    """Create domain ``domid`` (named ``name``) unless the sim already has it; an existing
    domain is renamed to ``name`` when one is given (XenStore ``name`` nodes included)."""
    from harness.xen.sim.client import SimControl

    ctl = SimControl(hypervisor_path(sim_dir, 0), timeout)
    try:
        existing = {d.domid: d.name for d in ctl.list_domains()}
        if domid not in existing:
            try:
                ctl.create_domain(domid, name or f"domain-{domid}")
                return
            except FileExistsError:  # another process created it since we listed
                existing = {d.domid: d.name for d in ctl.list_domains()}
        if name and existing[domid] != name:
            ctl.rename_domain(domid, name)
    finally:
        ctl.close()


def _pump(pipe: IO[bytes], stream: str, prefix: str, output: OutputFn) -> None:
    with contextlib.suppress(ValueError, OSError):
        for raw in iter(pipe.readline, b""):
            output(stream, prefix + raw.decode("utf-8", "replace").rstrip("\r\n"))
    with contextlib.suppress(OSError):
        pipe.close()


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """``sig`` to the program's process group, SIGKILL to it after KILL_GRACE."""
    _killpg(proc.pid, sig)
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    _killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)


class _Forwarder:
    """While installed (main thread only), SIGINT/SIGTERM/SIGHUP sent to us go to the
    program's process group; the first one arms a SIGKILL of the group KILL_GRACE later."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None  # set once started
        self.signum: int | None = None
        self.deadline: float | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Forwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in FORWARDED:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.proc is not None:
            _killpg(self.proc.pid, signum)
        if self.signum is None:
            self.signum = signum
            self.deadline = time.monotonic() + KILL_GRACE

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        if self.signum is not None:  # arrived while starting: deliver it now
            _killpg(proc.pid, self.signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_as_domain(argv: Sequence[str], *, sim_dir: str | None = None, runner: Any = None,
                  domid: int = 0, name: str | None = None, prefix: str | None = None,
                  timeout: float | None = None, env: Mapping[str, str] | None = None,
                  output: OutputFn | None = None, cwd: str | None = None) -> int:
    """Run ``argv`` as domain ``domid`` of the sim in ``sim_dir`` (or of ``runner``, a
    :class:`harness.xen.sim.runner.Sim`); return its exit status.

    The domain is created (named ``name``) if the sim doesn't have it. Output lines go to
    ``output(stream, line)`` (default: this process's stdout/stderr), each prefixed with
    ``prefix`` (default ``"[<name or domN>] "``). ``env`` adds variables (over
    ``os.environ``). A negative status is the signal that ended the program; on timeout
    its process group is killed and :data:`TIMEOUT_STATUS` returned; on Ctrl-C the group
    is killed and KeyboardInterrupt propagates.
    """
    if not argv:
        raise ValueError("no command to run")
    if sim_dir is None:
        if runner is None:
            raise ValueError("give sim_dir or runner")
        sim_dir = runner.dir
    assert sim_dir is not None
    if domid != 0:
        ensure_domain(sim_dir, domid, name)
    libdir = build_libs()
    full_env = domain_env(sim_dir, domid, libdir)
    if env:
        full_env.update(env)
    if prefix is None:
        prefix = f"[{name or f'dom{domid}'}] "
    output = output or _default_output
    fwd = _Forwarder()
    with fwd:  # from before the start: a signal must never find the program unattended
        proc = subprocess.Popen(list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True,
                                preexec_fn=pdeathsig_preexec(signal.SIGKILL))
        fwd.started(proc)
        return _supervise(proc, fwd, prefix, output, timeout)


def _supervise(proc: subprocess.Popen[bytes], fwd: _Forwarder, prefix: str,
               output: OutputFn, timeout: float | None) -> int:
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [threading.Thread(target=_pump, args=(pipe, stream, prefix, output), daemon=True)
             for pipe, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        start = time.monotonic()
        while proc.poll() is None:
            now = time.monotonic()
            if fwd.deadline is not None and now >= fwd.deadline:
                _killpg(proc.pid, signal.SIGKILL)  # the grace after a signal is over
                fwd.deadline = None
            if timeout is not None and now - start >= timeout:
                timed_out = True
                output("stderr", f"{prefix}killed after {timeout:g}s (timeout)")
                _stop_group(proc)
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.1)
    except BaseException:  # Ctrl-C and friends: nothing of the program may outlive us
        _stop_group(proc)
        raise
    finally:
        deadline = time.monotonic() + DRAIN_GRACE
        for t in pumps:
            t.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in pumps):
            # a child of the program still holds its output open: end the group
            _killpg(proc.pid, signal.SIGKILL)
            for t in pumps:
                t.join(DRAIN_GRACE)
    # the group may hold more than the program: nothing of it outlives the run
    _killpg(proc.pid, signal.SIGKILL)
    if timed_out:
        return TIMEOUT_STATUS
    if fwd.signum is not None:
        return 128 + fwd.signum  # stopped by a signal sent to us, as a shell reports it
    return int(proc.returncode)


# ---------------------------------------------------------------------------- the CLI


def _sim_runs_in(dir: str) -> bool:
    """A live daemon owns ``dir`` (its lock, not a file a killed one left) and is ready;
    one still starting is waited for."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        pid = owner(dir)
        if pid is None:
            return False
        if pid and read_pid_file(os.path.join(dir, READY_FILE)) == pid:
            return True
        if time.monotonic() > deadline:
            raise SimUsageError(f"sim exec: the simulator in {dir} (pid {pid}) is not ready "
                                f"after {START_TIMEOUT:g} s")
        time.sleep(0.02)


@contextlib.contextmanager
def _some_sim(dir: str | None) -> Iterator[str]:
    """The directory of a running sim: ``dir`` or ``$XEN_SIM_DIR`` when one runs there,
    else a sim started for the duration of the block (in ``dir`` if given, after clearing
    what a dead one left there)."""
    from harness.xen.sim.runner import SimStartError, running_sim

    env_dir = os.environ.get("XEN_SIM_DIR")
    for candidate in (dir, env_dir):
        if candidate and _sim_runs_in(candidate):
            yield candidate
            return
    if dir and stale_files(dir):
        print(f"sim exec: no simulator runs in {dir} any more (its files are stale): "
              "starting a new one there", file=sys.stderr, flush=True)
    try:
        with running_sim(dir) as sim:
            yield sim.dir
    except SimStartError as exc:
        raise SimUsageError(f"sim exec: {exc}") from None


def exec_command(args: argparse.Namespace) -> int:
    """``sndif-harness sim exec``: ``args.command`` (after ``--``), ``args.domid``,
    ``args.name``, and optionally ``args.dir`` and ``args.timeout``."""
    command = list(getattr(args, "command", None) or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SimUsageError("sim exec: no command given (sim exec [--domid N] -- COMMAND ...)")
    domid = int(getattr(args, "domid", 0) or 0)
    with _some_sim(getattr(args, "dir", None)) as dir:
        try:
            status = run_as_domain(command, sim_dir=dir, domid=domid,
                                   name=getattr(args, "name", None),
                                   timeout=getattr(args, "timeout", None))
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise SimUsageError(f"sim exec: {exc.strerror}: {command[0]}") from exc
        except OSError as exc:
            if exc.errno not in (errno.ENOEXEC, errno.ENOTDIR, errno.ENAMETOOLONG):
                raise
            raise SimUsageError(f"sim exec: {exc.strerror}: {command[0]}") from exc
    if status < 0:  # as a shell reports it: 128 + the signal, and which one
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        print(f"sim exec: {command[0]} killed by {name}", file=sys.stderr, flush=True)
        return 128 - status
    return status


# ---------------------------------------------------------------------- benchmark


@contextlib.contextmanager
def c_evtchn_pinger(sim: Any) -> Iterator[Callable[[], None]]:
    """A step doing one event-channel round trip between Python (domain 0, the sim's
    client) and a small C program (domain 1) on the replacement libxenevtchn: Python
    notifies, the C side's poll/pending/unmask/notify echoes, Python waits."""
    libdir = build_libs()
    ensure_domain(sim.dir, 1, "bench")
    ev = sim.domain(0, store=False).evtchn
    port = ev.alloc_unbound(1)
    child = subprocess.Popen([os.path.join(libdir, "evtchn-echo"), "0", str(port)],
                             env=domain_env(sim.dir, 1, libdir), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        if readline(child, 30.0) != "bound":
            raise RuntimeError("evtchn-echo failed to bind")
        ev.wait(0)  # the bind announcement may wake the handle once

        def step() -> None:
            ev.notify(port)
            if not ev.wait(5.0):
                raise TimeoutError("evtchn-echo stopped answering")

        yield step
    finally:
        with contextlib.suppress(OSError):
            ev.unbind(port)
        _killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            _stop_group(child)
        if child.stdout is not None:
            child.stdout.close()
