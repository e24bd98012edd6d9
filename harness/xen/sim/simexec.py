"""Run an unmodified program as a domain of the simulated Xen.

    status = run_as_domain(["./my-backend", "-v"], runner=sim, domid=0)

The program gets the replacement ``libxenevtchn``, ``libxengnttab`` and ``libxenctrl``
(built on first use, see :mod:`harness.xen.sim.clibs.build`) through ``LD_LIBRARY_PATH``,
Debian's own ``libxenstore`` pointed at the sim's xenstored by ``XENSTORED_PATH``, and the
sim's environment for that domain (``XEN_SIM_DIR``, ``XEN_SIM_DOMID``,
``XEN_SIM_HYPERVISOR``). Its stdout and stderr are streamed line by line with a prefix; it
runs in its own process group, which is killed on timeout or Ctrl-C.

``sndif-harness sim exec [--domid N] [--name NAME] -- COMMAND [ARGS]`` is
:func:`exec_command` (wired by :func:`register_exec`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

from harness.procs import readline
from harness.xen.sim.clibs.build import build_libs
from harness.xen.sim.daemon import READY_FILE, hypervisor_path, sim_env

TIMEOUT_STATUS = 124  # what run_as_domain returns when it killed the program on timeout
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of the process group
DRAIN_GRACE = 2.0  # seconds to wait for output after the program exits

OutputFn = Callable[[str, str], None]  # (stream name "stdout"/"stderr", prefixed line)


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
    """Create domain ``domid`` (named ``name``) unless the sim already has it."""
    from harness.xen.sim.client import SimControl

    ctl = SimControl(hypervisor_path(sim_dir, 0), timeout)
    try:
        if any(d.domid == domid for d in ctl.list_domains()):
            return
        ctl.create_domain(domid, name or f"domain-{domid}")
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


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the program's process group, SIGKILL it after KILL_GRACE."""
    _killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    _killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)


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
    proc = subprocess.Popen(list(argv), env=full_env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [threading.Thread(target=_pump, args=(pipe, stream, prefix, output), daemon=True)
             for pipe, stream in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            output("stderr", f"{prefix}killed after {timeout:g}s (timeout)")
            _stop_group(proc)
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
    if timed_out:
        return TIMEOUT_STATUS
    return int(proc.returncode)


# ---------------------------------------------------------------------------- the CLI


def _sim_ready(dir: str | None) -> bool:
    return bool(dir) and os.path.exists(os.path.join(str(dir), READY_FILE))


@contextlib.contextmanager
def _some_sim(dir: str | None) -> Iterator[str]:
    """The directory of a running sim: ``dir`` or ``$XEN_SIM_DIR`` when one runs there,
    else a sim started for the duration of the block."""
    for candidate in (dir, os.environ.get("XEN_SIM_DIR")):
        if _sim_ready(candidate):
            yield str(candidate)
            return
    from harness.xen.sim.runner import running_sim

    with running_sim(dir) as sim:
        yield sim.dir


def exec_command(args: argparse.Namespace) -> int:
    """``sndif-harness sim exec``: ``args.command`` (after ``--``), ``args.domid``,
    ``args.name``, and optionally ``args.dir`` and ``args.timeout``."""
    command = list(getattr(args, "command", None) or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        from harness.cli import UsageError

        raise UsageError("sim exec: no command given (sim exec [--domid N] -- COMMAND ...)")
    domid = int(getattr(args, "domid", 0) or 0)
    with _some_sim(getattr(args, "dir", None)) as dir:
        try:
            return run_as_domain(command, sim_dir=dir, domid=domid,
                                 name=getattr(args, "name", None),
                                 timeout=getattr(args, "timeout", None))
        except FileNotFoundError as exc:
            from harness.cli import UsageError

            raise UsageError(f"sim exec: {exc.strerror}: {command[0]}") from exc


def register_exec(sim_subcommands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``exec`` to the ``sim`` sub-commands."""
    p = sim_subcommands.add_parser(
        "exec", help="run a program as a domain of the simulated Xen",
        description="Run COMMAND with the sim's replacement Xen libraries, as domain N of "
                    "the sim running in --dir or $XEN_SIM_DIR (else of a new one).")
    from harness.cli import domid_arg

    p.add_argument("--domid", type=domid_arg, default=0, help="domain to act as (default 0)")
    p.add_argument("--name", help="name of the domain if it must be created")
    p.add_argument("--dir", help="directory of a running sim (`sim run --dir`)")
    p.add_argument("--timeout", type=float, help="kill the program after this many seconds")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS]")
    p.set_defaults(handler=exec_command)
    return p


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
