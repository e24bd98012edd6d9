"""Which simulated domain a connecting process was started as.

A program run as domain N (``Sim.env(N)``: ``XEN_SIM_DIR`` and ``XEN_SIM_DOMID`` in its
environment) has no business on another domain's sockets: on Xen a guest has no way to
reach dom0's privileged xenstored connection or another domain's hypercall identity. The
sim's servers ask this at accept time and refuse such a connection. It is a guard against
mistakes (a guest program with dom0's socket path), not a security boundary: a process
may change its environment, and the socket files share one user.
"""

from __future__ import annotations

import os


def started_as(pid: int, sim_dir: str) -> int | None:
    """The domain ``pid`` was started as in the sim at ``sim_dir``, or None (not one of its
    domain programs, or not ours to read)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    except OSError:
        return None
    sdir, sdom = env.get(b"XEN_SIM_DIR"), env.get(b"XEN_SIM_DOMID")
    if sdir is None or sdom is None:
        return None
    if os.path.abspath(os.fsdecode(sdir)) != os.path.abspath(sim_dir):
        return None
    try:
        return int(sdom)
    except ValueError:
        return None


def foreign(pid: int, sim_dir: str | None, domid: int) -> int | None:
    """The other domain ``pid`` was started as, when it isn't ``domid``; else None."""
    if sim_dir is None:
        return None
    dom = started_as(pid, sim_dir)
    return dom if dom is not None and dom != domid else None
