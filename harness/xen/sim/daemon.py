"""The simulated Xen as one process: xenstored plus the hypervisor, on unix sockets in DIR.

    python -m harness.xen.sim.daemon --dir DIR

Layout: ``DIR/xenstored.sock`` (privileged dom0 xenstored), and per domain N (0 included)
``DIR/domN/xenstored.sock`` and ``DIR/domN/hypervisor.sock``. ``DIR/ready`` appears once
everything listens (and a ``ready`` line is printed); SIGTERM/SIGINT, the CTL_SHUTDOWN op or
the death of the parent process stop it, removing every socket it made (and DIR itself with
``--remove-dir``). It owns DIR through ``DIR/lock`` (:mod:`harness.xen.sim.simdir`): a
second daemon there is refused, what a killed one left is cleared first.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import shutil
import signal
import socket
import sys
from typing import TYPE_CHECKING, TextIO

from harness.procs import die_with_parent
from harness.xen.sim import domain_nodes
from harness.xen.sim.faults import FaultTable
from harness.xen.sim.hvserver import HvServer
from harness.xen.sim.hypervisor import Hypervisor
from harness.xen.sim.simdir import READY_FILE, Claim, SimUsageError, check_dir

if TYPE_CHECKING:
    from harness.xen.sim.xenstored import XenstoreState
    from harness.xen.sim.xs_server import XenstoreServer

log = logging.getLogger("harness.xen.sim.daemon")

__all__ = ["READY_FILE", "Daemon", "hypervisor_path", "main", "sim_env", "xenstored_path"]


def xenstored_path(dir: str, domid: int | None = None) -> str:
    """dom0's privileged socket for None, else the socket that speaks as ``domid``."""
    if domid is None:
        return os.path.join(dir, "xenstored.sock")
    return os.path.join(dir, f"dom{domid}", "xenstored.sock")


def hypervisor_path(dir: str, domid: int) -> str:
    return os.path.join(dir, f"dom{domid}", "hypervisor.sock")


def _raise_fd_limit() -> None:
    # one memfd per live page and two sockets per bound channel
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                        else 1 << 20, hard))
        except (ValueError, OSError):
            pass


class Daemon:
    def __init__(self, dir: str, out: TextIO | None = None, watch_parent: bool = True,
                 remove_dir: bool = False, parent: int | None = None) -> None:
        self.dir = os.path.abspath(dir)
        self.watch_parent = watch_parent
        self.parent = parent  # the pid that started us, when known (else our parent now)
        self.remove_dir = remove_dir  # DIR was made for this daemon alone: it goes too
        self._claim: Claim | None = None
        self.out = out
        self.faults = FaultTable()
        self.hv = Hypervisor(self.faults)
        self.server = HvServer(self.hv, on_create=self._create, on_destroy=self._destroy,
                               on_shutdown=self.stop, on_rename=self._rename,
                               xs_writes=self._xs_writes)
        self.server.sim_dir = self.dir
        self._stop = False
        self.xs_state: XenstoreState | None = None
        self.xs_server: XenstoreServer | None = None
        self._made_dirs: list[str] = []

    # xenstored is another module; the hypervisor works without it (for its own tests).
    def _start_xenstored(self) -> None:
        try:
            from harness.xen.sim.xenstored import XenstoreState
            from harness.xen.sim.xs_server import XenstoreServer
        except ImportError as exc:
            log.warning("no simulated xenstored (%s): hypervisor only", exc)
            return
        self.xs_state = XenstoreState(faults=self.faults)
        self.xs_server = XenstoreServer(self.xs_state)
        self.xs_server.sim_dir = self.dir
        self.xs_server.add_listener(xenstored_path(self.dir), 0)
        self.xs_server.start()

    def _domain_dir(self, domid: int) -> str:
        return os.path.join(self.dir, f"dom{domid}")

    def _create(self, domid: int, name: str) -> None:
        ddir = self._domain_dir(domid)
        os.makedirs(ddir, exist_ok=True)
        self.server.add_domain_socket(domid, hypervisor_path(self.dir, domid))
        if self.xs_server is not None and self.xs_state is not None:
            # the toolstack's nodes first, so a process of the domain finds them at once
            self.xs_state.toolstack(domain_nodes.dom0_ops() if domid == 0
                                    else domain_nodes.guest_ops(domid, name))
            self.xs_server.add_listener(xenstored_path(self.dir, domid), domid)
            if domid != 0:
                self.xs_state.introduce(domid)

    def _rename(self, domid: int, name: str) -> None:
        if self.xs_state is not None:
            self.xs_state.toolstack(domain_nodes.rename_ops(domid, name))

    def _xs_writes(self, domid: int | None, since: int,
                   exclude_pid: int = 0) -> list[tuple[int, int, int]]:
        if self.xs_state is None:
            return []
        return self.xs_state.write_counts(domid, since, exclude_pid)

    def _destroy(self, domid: int) -> None:
        self.server.remove_domain_socket(domid)
        if self.xs_server is not None and self.xs_state is not None:
            self.xs_server.remove_listener(xenstored_path(self.dir, domid))
            self.xs_state.release(domid)
            self.xs_state.toolstack(domain_nodes.destroy_ops(domid))
        shutil.rmtree(self._domain_dir(domid), ignore_errors=True)

    def stop(self) -> None:
        self._stop = True

    def run(self) -> int:
        try:
            os.makedirs(self.dir, exist_ok=True)
            self._claim = Claim(self.dir)  # refuses a live daemon's DIR, clears a dead one's
        except (OSError, SimUsageError):
            self.server.close()  # nothing started: release what __init__ made (pages, fds)
            self.hv.close()
            raise
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        handlers = {s: signal.signal(s, lambda *_: self.stop())
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        self.server.add_reader(wake_r, lambda: wake_r.recv(4096))
        parent = os.getppid() if self.parent is None else self.parent
        try:
            self._start_xenstored()
            self._create(0, "Domain-0")
            with open(os.path.join(self.dir, READY_FILE), "w") as f:
                f.write(f"{os.getpid()}\n")
            if self.out is not None:
                self._announce()
            while not self._stop:
                self.server.poll(0.5)
                # PDEATHSIG may be unavailable, or the parent died before prctl
                if self.watch_parent and os.getppid() != parent:
                    log.warning("parent died; stopping")
                    break
        finally:
            self._cleanup()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in handlers.items():
                signal.signal(s, h)
            wake_r.close()
            wake_w.close()
        return 0

    def _announce(self) -> None:
        assert self.out is not None
        print(f"xen-sim: dir {self.dir}", file=self.out)
        print(f"xen-sim: dom0 xenstored (privileged): {xenstored_path(self.dir)}", file=self.out)
        print(f"xen-sim: dom0 hypervisor (control):   {hypervisor_path(self.dir, 0)}",
              file=self.out)
        print("xen-sim: environment for a dom0 process:", file=self.out)
        for k, v in sim_env(self.dir, 0).items():
            print(f"  export {k}={v}", file=self.out)
        print("ready", file=self.out, flush=True)

    def _cleanup(self) -> None:
        for domid in [d.domid for d in self.hv.list_domains()]:
            if self.xs_server is not None:
                try:
                    self.xs_server.remove_listener(xenstored_path(self.dir, domid))
                except Exception:
                    pass
            shutil.rmtree(self._domain_dir(domid), ignore_errors=True)
        if self.xs_server is not None:
            try:
                self.xs_server.remove_listener(xenstored_path(self.dir))
            except Exception:
                pass
            self.xs_server.stop()
        self.server.close()
        self.hv.close()
        for name in (READY_FILE, "xenstored.sock"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        if self._claim is not None:
            self._claim.release()
        if self.remove_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.dir)


def sim_env(dir: str, domid: int) -> dict[str, str]:
    """Environment for a process acting as ``domid`` (read by our clients and C libraries)."""
    xs = xenstored_path(dir, None if domid == 0 else domid)
    return {
        "XENSTORED_PATH": xs,
        "XEN_SIM_DIR": dir,
        "XEN_SIM_DOMID": str(domid),
        "XEN_SIM_HYPERVISOR": hypervisor_path(dir, domid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.xen.sim.daemon",
                                     description="Run the simulated Xen (xenstored + "
                                                 "hypervisor) on unix sockets in DIR.")
    parser.add_argument("--dir", required=True, help="directory for the sockets")
    parser.add_argument("--quiet", action="store_true", help="don't print the ready banner")
    parser.add_argument("--remove-dir", action="store_true",
                        help="remove DIR when stopping (it was made for this daemon)")
    parser.add_argument("--make-dir", action="store_true",
                        help="create DIR (it must not exist; mode 0700) and remove it when "
                             "stopping: nothing of ours is on disk before we run")
    parser.add_argument("--parent", type=int, metavar="PID",
                        help="the pid starting us: if it is gone already (killed before "
                             "we could ask for PDEATHSIG), stop at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="xen-sim: %(message)s")
    # stop with the parent (a killed test run, `sim run` or `sim exec` leaks nothing)
    if not die_with_parent(signal.SIGTERM):
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable")
    if args.parent is not None and os.getppid() != args.parent:
        log.warning("parent %d died before we started; not starting", args.parent)
        if args.remove_dir:
            with contextlib.suppress(OSError):
                os.rmdir(args.dir)
        return 1
    _raise_fd_limit()
    try:
        if args.make_dir:
            try:
                os.mkdir(args.dir, 0o700)
            except OSError as exc:
                raise SimUsageError(f"{args.dir}: cannot create it: "
                                    f"{exc.strerror or exc}") from None
        daemon = Daemon(check_dir(args.dir), None if args.quiet else sys.stdout,
                        remove_dir=args.remove_dir or args.make_dir, parent=args.parent)
        return daemon.run()
    except SimUsageError as exc:  # a bad or busy DIR: one line, as the CLI says it
        print(f"xen-sim: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
