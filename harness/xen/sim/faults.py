"""Platform fault injection: make a chosen operation of one domain fail with an errno.

One :class:`FaultTable` is shared by the simulated hypervisor (main thread) and xenstored
(its own thread), so it locks. An operation asks :meth:`FaultTable.check` before doing
anything; a matching armed fault answers the errno the operation then fails with, exactly as
if Xen (or Linux's device, or xenstored) had refused it. Operation names are listed in
:data:`OPS` with the errno real Xen / Linux gives for the commonest refusal of each.
"""

from __future__ import annotations

import errno as E
import threading
from collections.abc import Callable
from dataclasses import dataclass

from protocol_models.xenstore import XS_ERRORS

#: operation name -> default errno (what the real platform answers most often)
OPS: dict[str, int] = {
    # event channels (libxenevtchn / /dev/xen/evtchn)
    "evtchn.alloc_unbound": E.ENOSPC,  # EVTCHNOP_alloc_unbound: no free port
    "evtchn.bind_interdomain": E.EINVAL,  # remote port not unbound/offered to us
    "evtchn.notify": E.EINVAL,  # EVTCHNOP_send on a bad port
    "evtchn.unbind": E.EINVAL,  # EVTCHNOP_close on a bad port
    # grant tables (libxengnttab: gntdev maps, gntalloc shares)
    "grant.alloc": E.ENOMEM,  # gntalloc: no memory for the pages
    "grant.share": E.ENOSPC,  # gntalloc: grant table full (no free ref)
    "grant.revoke": E.EINVAL,
    "grant.map": E.EINVAL,  # gntdev mmap of a map whose GNTTABOP status is not okay
    "grant.unmap": E.EINVAL,  # the unmap hypercall failed: the page stays mapped
    # xenstored (the reply is the errno's name, as C xenstored sends)
    "xs.read": E.EIO,
    "xs.write": E.EIO,
    "xs.mkdir": E.EIO,
    "xs.rm": E.EIO,
    "xs.directory": E.EIO,
    "xs.get_perms": E.EIO,
    "xs.set_perms": E.EIO,
    "xs.watch": E.EIO,
    "xs.unwatch": E.EIO,
    "xs.transaction_start": E.EIO,
    "xs.transaction_end": E.EAGAIN,  # the conflict every client must retry on
}

MODE_ONCE = 0
MODE_ALWAYS = 1
MODE_FROM = 2  # from the n-th matching call on (1-based), every time
MODES = {"once": MODE_ONCE, "always": MODE_ALWAYS, "from": MODE_FROM}


class FaultError(ValueError):
    """A fault request names an unknown operation, mode or errno."""


@dataclass
class Fault:
    id: int
    domid: int
    op: str
    errno: int
    mode: int
    n: int = 1  # MODE_FROM: first failing call (1-based)
    calls: int = 0  # matching calls seen since the fault was set
    fired: int = 0

    @property
    def spent(self) -> bool:
        return self.mode == MODE_ONCE and self.fired > 0


def parse_errno(value: int | str | None, op: str) -> int:
    """An errno number from a number, a name ("EIO") or None (the op's default)."""
    if value is None:
        return OPS[op]
    if isinstance(value, int):
        if value <= 0 or value not in E.errorcode:
            raise FaultError(f"unknown errno {value}")
        return value
    num = getattr(E, value.upper(), None)
    if not isinstance(num, int) or num not in E.errorcode:
        raise FaultError(f"unknown errno name {value!r}")
    return num


class FaultTable:
    """The faults armed in the whole simulation, by domain and operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[int, Fault] = {}
        self._next = 1
        # called with the domid whose faults changed
        self._listeners: list[Callable[[int], None]] = []

    def add_listener(self, fn: Callable[[int], None]) -> None:
        self._listeners.append(fn)

    def _changed(self, domids: set[int]) -> None:
        for fn in self._listeners:
            for d in domids:
                fn(d)

    def inject(self, domid: int, op: str, err: int, mode: int, n: int = 1) -> int:
        if op not in OPS:
            raise FaultError(f"unknown operation {op!r} (one of: {', '.join(OPS)})")
        if mode not in (MODE_ONCE, MODE_ALWAYS, MODE_FROM):
            raise FaultError(f"unknown mode {mode}")
        if mode == MODE_FROM and n < 1:
            raise FaultError("mode 'from' needs n >= 1")
        if err <= 0 or err not in E.errorcode:
            raise FaultError(f"unknown errno {err}")
        if op.startswith("xs.") and E.errorcode[err] not in XS_ERRORS:
            raise FaultError(f"xenstored can't answer {E.errorcode[err]} "
                             f"(one of: {', '.join(XS_ERRORS)})")
        with self._lock:
            fid = self._next
            self._next += 1
            self._faults[fid] = Fault(fid, domid, op, err, mode, n)
        self._changed({domid})
        return fid

    def clear(self, fault_id: int | None = None, domid: int | None = None) -> int:
        """Remove one fault, or every fault (of ``domid``); returns how many."""
        with self._lock:
            gone = [f for f in self._faults.values()
                    if (fault_id is None or f.id == fault_id)
                    and (domid is None or f.domid == domid)]
            for f in gone:
                del self._faults[f.id]
        self._changed({f.domid for f in gone})
        return len(gone)

    def list(self) -> list[Fault]:
        with self._lock:
            return [Fault(**vars(f)) for _, f in sorted(self._faults.items())]

    def armed_ops(self, domid: int) -> set[str]:
        with self._lock:
            return {f.op for f in self._faults.values() if f.domid == domid and not f.spent}

    def check(self, domid: int, op: str) -> int:
        """0, or the errno this call of ``op`` by ``domid`` must fail with."""
        if not self._faults:  # fast path, no lock: a dict read is atomic
            return 0
        spent = False
        with self._lock:
            err = 0
            for f in self._faults.values():
                if f.domid != domid or f.op != op or f.spent:
                    continue
                f.calls += 1
                if f.mode == MODE_FROM and f.calls < f.n:
                    continue
                if not err:
                    f.fired += 1
                    err = f.errno
                    spent = f.spent
        if spent:
            self._changed({domid})
        return err
