"""Semantics of the replacement libxenevtchn (loaded with ctypes, acting as domain 0)
against a Python domain 1 of the sim: a pollable fd readable only while a port is pending
(Linux's evtchn_poll), one pending event per delivery, Linux-style masking until
xenevtchn_unmask, coalescing, Xen's event on a freshly bound port, unbound ports bound later
by the peer, a peer that goes away (no wake-up), bad handles and restricted handles."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import threading
from collections.abc import Iterator

import pytest
from requires import need_xen_c_toolchain

from harness.xen.sim.clibs import build
from harness.xen.sim.runner import Sim


def need_gcc() -> None:
    need_xen_c_toolchain("libxenevtchn.so.1")


class Evtchn:
    """ctypes view of the replacement libxenevtchn."""

    def __init__(self, libdir: str) -> None:
        lib = ctypes.CDLL(os.path.join(libdir, "libxenevtchn.so.1"), use_errno=True)
        vp, i, u = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
        sig = {
            "xenevtchn_open": (vp, [vp, ctypes.c_uint]),
            "xenevtchn_fdopen": (vp, [vp, i, ctypes.c_uint]),
            "xenevtchn_close": (i, [vp]),
            "xenevtchn_fd": (i, [vp]),
            "xenevtchn_notify": (i, [vp, u]),
            "xenevtchn_bind_unbound_port": (i, [vp, u]),
            "xenevtchn_bind_interdomain": (i, [vp, u, u]),
            "xenevtchn_bind_virq": (i, [vp, ctypes.c_uint]),
            "xenevtchn_unbind": (i, [vp, u]),
            "xenevtchn_pending": (i, [vp]),
            "xenevtchn_unmask": (i, [vp, u]),
            "xenevtchn_restrict": (i, [vp, ctypes.c_uint16]),
        }
        for name, (res, args) in sig.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
            setattr(self, name.removeprefix("xenevtchn_"), f)
        self.lib = lib

    @staticmethod
    def errno() -> int:
        return ctypes.get_errno()


@pytest.fixture
def evtchn(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> Iterator[Evtchn]:
    need_gcc()
    for k, v in sim.env(0).items():
        if k.startswith("XEN"):
            monkeypatch.setenv(k, v)
    yield Evtchn(str(build.build_libs()))


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def consume_bind_event(evtchn: Evtchn, h: int, port: int) -> None:
    """Xen's evtchn_bind_interdomain sets the new local port pending: take that event."""
    assert readable(evtchn.fd(h), 2.0)
    assert evtchn.pending(h) == port
    assert evtchn.unmask(h, port) == 0


def test_pending_masks_until_unmask_and_coalesces(sim: Sim, evtchn: Evtchn) -> None:
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = evtchn.open(None, 0)
    assert h
    try:
        fd = evtchn.fd(h)
        port = evtchn.bind_interdomain(h, 1, remote)
        assert port > 0
        consume_bind_event(evtchn, h, port)
        assert not readable(fd, 0.05)
        front.notify(remote)
        assert readable(fd, 2.0)
        assert evtchn.pending(h) == port
        # delivered: masked; more notifications stay pending, unseen
        front.notify(remote)
        front.notify(remote)
        assert not readable(fd, 0.2)
        assert evtchn.unmask(h, port) == 0
        assert readable(fd, 2.0)
        assert evtchn.pending(h) == port  # the two coalesced into one delivery
        assert evtchn.unmask(h, port) == 0
        assert not readable(fd, 0.2)
        # and the other way
        assert evtchn.notify(h, port) == 0
        assert front.wait(2.0) == [remote]
        assert evtchn.unbind(h, port) == 0
    finally:
        assert evtchn.close(h) == 0


def test_unbound_port_bound_later_by_the_peer(sim: Sim, evtchn: Evtchn) -> None:
    front = sim.domain(1, store=False).evtchn
    h = evtchn.open(None, 0)
    try:
        port = evtchn.bind_unbound_port(h, 1)
        assert port > 0
        assert evtchn.notify(h, port) == 0  # nobody bound yet: dropped silently
        remote = front.bind_interdomain(0, port)
        assert front.wait(0) == [remote]  # the bind's own event, nothing from our notify
        assert front.wait(0.05) == []
        fd = evtchn.fd(h)
        assert not readable(fd, 0.1)  # the peer's bind is no event for us (as on Xen)
        assert evtchn.notify(h, port) == 0
        assert front.wait(2.0) == [remote]
        front.notify(remote)
        assert readable(fd, 2.0)
        assert evtchn.pending(h) == port
        assert evtchn.notify(h, port) == 0
        assert front.wait(2.0) == [remote]
    finally:
        evtchn.close(h)


def test_blocking_pending_wakes_on_event(sim: Sim, evtchn: Evtchn) -> None:
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = evtchn.open(None, 0)
    try:
        port = evtchn.bind_interdomain(h, 1, remote)
        consume_bind_event(evtchn, h, port)
        timer = threading.Timer(0.2, front.notify, (remote,))
        timer.start()
        assert evtchn.pending(h) == port  # ctypes drops the GIL while it blocks
        timer.join()
    finally:
        evtchn.close(h)


def test_peer_gone(sim: Sim, evtchn: Evtchn) -> None:
    """notify on a port whose peer unbound succeeds; pending doesn't spin or report it."""
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = evtchn.open(None, 0)
    try:
        port = evtchn.bind_interdomain(h, 1, remote)
        consume_bind_event(evtchn, h, port)
        front.unbind(remote)
        assert evtchn.notify(h, port) == 0
        fd = evtchn.fd(h)
        assert not readable(fd, 0.2)  # a peer's close is no event (Linux's evtchn_poll)
        os.set_blocking(fd, False)  # O_NONBLOCK: pending answers EAGAIN like read(2)
        assert evtchn.pending(h) == -1
        assert evtchn.errno() == errno.EAGAIN
        assert evtchn.notify(h, port) == 0
        assert evtchn.unbind(h, port) == 0
    finally:
        evtchn.close(h)


def test_ports_released_on_close(sim: Sim, evtchn: Evtchn) -> None:
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = evtchn.open(None, 0)
    port = evtchn.bind_interdomain(h, 1, remote)
    assert any(p.domid == 0 and p.port == port for p in sim.ports(0))
    assert evtchn.close(h) == 0
    assert not any(p.domid == 0 and p.port == port for p in sim.ports(0))


def test_bad_handles_and_ports(sim: Sim, evtchn: Evtchn) -> None:
    assert evtchn.close(None) == 0
    assert evtchn.fd(None) == -1 and evtchn.errno() == errno.EBADF
    assert evtchn.notify(None, 1) == -1 and evtchn.errno() == errno.EBADF
    assert evtchn.pending(None) == -1 and evtchn.errno() == errno.EBADF
    h = evtchn.open(None, 0)
    try:
        assert evtchn.notify(h, 77) == -1 and evtchn.errno() == errno.ENOTCONN
        assert evtchn.unbind(h, 77) == -1 and evtchn.errno() == errno.ENOTCONN
        # Linux's evtchn_write skips ports that aren't the fd's: unmask "succeeds"
        assert evtchn.unmask(h, 77) == 0
        assert evtchn.bind_interdomain(h, 1, 4000) == -1
        assert evtchn.errno() == errno.EINVAL  # not offered to us
        assert evtchn.bind_virq(h, 1) == -1 and evtchn.errno() == errno.ENOSYS
    finally:
        evtchn.close(h)


def test_restrict(sim: Sim, evtchn: Evtchn) -> None:
    sim.create_domain(2, "other")
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = evtchn.open(None, 0)
    try:
        assert evtchn.restrict(h, 2) == 0
        assert evtchn.bind_interdomain(h, 1, remote) == -1
        assert evtchn.errno() == errno.EACCES
        assert evtchn.bind_unbound_port(h, 2) == -1
    finally:
        evtchn.close(h)


def test_not_on_the_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    need_gcc()
    ev = Evtchn(str(build.build_libs()))
    for k in ("XEN_SIM_HYPERVISOR", "SNDIF_SIM_HV", "XEN_SIM_DIR"):
        monkeypatch.delenv(k, raising=False)
    assert ev.open(None, 0) is None
    assert ev.errno() == errno.ENOENT


def test_threads_each_with_a_handle(sim: Sim, evtchn: Evtchn) -> None:
    """Four threads, four handles, four channels, ping-pong at once."""
    peers = [sim.domain(1, store=False).evtchn for _ in range(4)]
    remotes = [p.alloc_unbound(0) for p in peers]
    errors: list[str] = []
    rounds = 100

    def run(i: int) -> None:
        h = evtchn.open(None, 0)
        try:
            port = evtchn.bind_interdomain(h, 1, remotes[i])
            if evtchn.pending(h) != port:  # the bind's own event
                errors.append(f"thread {i}: no bind event")
            evtchn.unmask(h, port)
            ready[i].set()
            for _ in range(rounds):
                if evtchn.pending(h) != port:
                    errors.append(f"thread {i}: wrong pending")
                    return
                evtchn.unmask(h, port)
                evtchn.notify(h, port)
        finally:
            evtchn.close(h)

    ready = [threading.Event() for _ in range(4)]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        assert all(e.wait(5) for e in ready)
        for _ in range(rounds):
            for p, r in zip(peers, remotes, strict=True):
                p.notify(r)
            for p, r in zip(peers, remotes, strict=True):
                assert p.wait(5.0) == [r]
    finally:
        for t in threads:
            t.join(10)
    assert errors == []


def test_daemon_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the sim dies, calls fail fast (EPIPE), pending doesn't spin, nothing crashes."""
    need_gcc()
    from harness.xen.sim.runner import SimLeak, running_sim

    libdir = str(build.build_libs())
    with pytest.raises(SimLeak), running_sim() as sim:
        sim.create_domain(1, "guest")
        for k, v in sim.env(0).items():
            if k.startswith("XEN"):
                monkeypatch.setenv(k, v)
        ev = Evtchn(libdir)
        front = sim.domain(1, store=False).evtchn
        h = ev.open(None, 0)
        port = ev.bind_interdomain(h, 1, front.alloc_unbound(0))
        assert port > 0
        assert ev.pending(h) == port and ev.unmask(h, port) == 0  # the bind's event
        sim.proc.kill()
        sim.proc.wait(5)
        assert ev.bind_unbound_port(h, 1) == -1
        assert ev.errno() in (errno.EPIPE, errno.ECONNRESET)
        assert ev.notify(h, port) == 0
        os.set_blocking(ev.fd(h), False)
        assert ev.pending(h) == -1 and ev.errno() == errno.EAGAIN
        assert not readable(ev.fd(h), 0.1)  # the dead connection left the epoll set
        assert ev.close(h) == 0


def test_fdopen_owns_the_fd(sim: Sim, evtchn: Evtchn) -> None:
    r, w = os.pipe()
    os.close(w)
    h = evtchn.fdopen(None, r, 0)
    assert h
    assert evtchn.bind_unbound_port(h, 1) > 0
    assert evtchn.close(h) == 0
    with pytest.raises(OSError):
        os.fstat(r)  # closed with the handle, as the real library does
    assert evtchn.fdopen(None, 12345, 0) is None and evtchn.errno() == errno.EBADF


@pytest.mark.parametrize("how", ["unbind", "close", "destroy"])
def test_peer_going_away_never_wakes_the_fd(sim: Sim, evtchn: Evtchn, how: str) -> None:
    """The trial's hang: a frontend that unbinds (or crashes, or whose guest is destroyed)
    made the backend's fd readable, and the next (blocking) xenevtchn_pending never
    returned. On Linux /dev/xen/evtchn is readable only when a port is pending."""
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = evtchn.open(None, 0)
    try:
        port = evtchn.bind_interdomain(h, 1, remote)
        consume_bind_event(evtchn, h, port)
        if how == "unbind":
            front.unbind(remote)
        elif how == "close":
            front.close()  # as the process dying: its connection closes
        else:
            sim.destroy_domain(1)
        fd = evtchn.fd(h)
        assert not readable(fd, 0.3)
        assert evtchn.notify(h, port) == 0  # dropped, silently (Xen: port unbound)
        assert not readable(fd, 0.1)
        if how == "destroy":
            return
        # the port is unbound again, offered to domain 1: a new frontend binds it, and
        # events flow again on the same port
        again = sim.domain(1, store=False).evtchn
        q = again.bind_interdomain(0, port)
        assert again.wait(0) == [q]  # the bind's own event; nothing stale from our notify
        assert not readable(fd, 0.1)
        again.notify(q)
        assert readable(fd, 2.0)
        assert evtchn.pending(h) == port
        assert evtchn.unmask(h, port) == 0
        assert evtchn.notify(h, port) == 0
        assert again.wait(2.0) == [q]
    finally:
        evtchn.close(h)


def test_readable_means_pending_never_blocks(sim: Sim, evtchn: Evtchn) -> None:
    """Whenever the fd polls readable, a blocking xenevtchn_pending returns at once."""
    front = sim.domain(1, store=False).evtchn
    remotes = [front.alloc_unbound(0) for _ in range(3)]
    h = evtchn.open(None, 0)
    try:
        ports = [evtchn.bind_interdomain(h, 1, r) for r in remotes]
        seen = []
        fd = evtchn.fd(h)
        while readable(fd, 0.2):
            # blocking fd: pending would hang if nothing were pending; bounded by a thread
            got: list[int] = []
            t = threading.Thread(target=lambda g=got: g.append(evtchn.pending(h)), daemon=True)
            t.start()
            t.join(5.0)
            assert got, "xenevtchn_pending blocked although the fd polled readable"
            seen.append(got[0])
        assert sorted(seen) == sorted(ports)  # one bind event each, then not readable
    finally:
        evtchn.close(h)
