"""C programs on the replacement libraries see the sim's injected faults (they ask the
hypervisor daemon, where faults live) and gntdev's unmap notification (a byte cleared, an
event sent, by the sim at unmap, as Linux's gntdev does)."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator

import pytest
from test_clibs_evtchn import Evtchn, readable
from test_clibs_gnttab import PROT_READ, PROT_WRITE, Gnttab, need_gcc, u32s

from harness.xen.sim.clibs import build
from harness.xen.sim.runner import Sim


@pytest.fixture
def libs(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gnttab, Evtchn]]:
    need_gcc()
    for k, v in sim.env(0).items():
        if k.startswith("XEN"):
            monkeypatch.setenv(k, v)
    libdir = str(build.build_libs())
    gt = Gnttab(libdir)
    f = gt.lib_notify = ctypes.CDLL(os.path.join(libdir, "libxengnttab.so.1"),
                                    use_errno=True).xengnttab_map_grant_ref_notify
    u = ctypes.c_uint32
    f.restype, f.argtypes = ctypes.c_void_p, [ctypes.c_void_p, u, u, ctypes.c_int, u, u]
    yield gt, Evtchn(libdir)


def test_c_map_fails_with_the_injected_errno(sim: Sim, libs: tuple[Gnttab, Evtchn]) -> None:
    gt, _ = libs
    pages = sim.domain(1, store=False).grants.share_pages(2, 0)
    sim.inject_fault(0, "grant.map", "EFAULT", ("from", 2))
    h = gt.xengnttab_open(None, 0)
    try:
        a = gt.xengnttab_map_domain_grant_refs(h, 2, 1, u32s(pages.refs), PROT_READ)
        assert a
        for _ in range(2):
            assert not gt.xengnttab_map_domain_grant_refs(h, 2, 1, u32s(pages.refs),
                                                          PROT_READ)
            assert gt.errno() == errno.EFAULT
        assert gt.xengnttab_unmap(h, a, 2) == 0
    finally:
        gt.xengnttab_close(h)
    assert sim.faults()[0].fired == 2 and sim.mappings(mapper=0) == []


def test_c_bind_fails_with_the_injected_errno(sim: Sim, libs: tuple[Gnttab, Evtchn]) -> None:
    _, ev = libs
    remote = sim.domain(1, store=False).evtchn.alloc_unbound(0)
    sim.inject_fault(0, "evtchn.bind_interdomain", "ENOSPC", "once")
    sim.inject_fault(0, "evtchn.alloc_unbound", mode="once")
    h = ev.open(None, 0)
    try:
        assert ev.bind_interdomain(h, 1, remote) == -1 and ev.errno() == errno.ENOSPC
        assert ev.bind_interdomain(h, 1, remote) > 0
        assert ev.bind_unbound_port(h, 1) == -1 and ev.errno() == errno.ENOSPC
        assert ev.bind_unbound_port(h, 1) > 0
    finally:
        ev.close(h)


def test_c_notify_fault(sim: Sim, libs: tuple[Gnttab, Evtchn]) -> None:
    _, ev = libs
    front = sim.domain(1, store=False).evtchn
    remote = front.alloc_unbound(0)
    h = ev.open(None, 0)
    try:
        port = ev.bind_interdomain(h, 1, remote)
        sim.inject_fault(0, "evtchn.notify", "EIO", "once")
        assert ev.notify(h, port) == -1 and ev.errno() == errno.EIO
        assert ev.notify(h, port) == 0
        assert front.wait(0) == [remote]  # only the second one went out
    finally:
        ev.close(h)


@pytest.mark.parametrize("how", ["unmap", "close"])
def test_unmap_notify_clears_the_byte_and_sends_the_event(
        sim: Sim, libs: tuple[Gnttab, Evtchn], how: str) -> None:
    gt, ev = libs
    g1, front = sim.domain(1, store=False).grants, sim.domain(1, store=False).evtchn
    pages = g1.share_pages(1, 0)
    pages.view[100] = 0xAA
    remote = front.alloc_unbound(0)
    e = ev.open(None, 0)
    h = gt.xengnttab_open(None, 0)
    try:
        port = ev.bind_interdomain(e, 1, remote)
        assert front.wait(0) == []
        a = gt.lib_notify(h, 1, pages.refs[0], PROT_READ | PROT_WRITE, 100, port)
        assert a, os.strerror(gt.errno())
        assert pages.view[100] == 0xAA and front.wait(0.05) == []
        if how == "unmap":
            assert gt.xengnttab_unmap(h, a, 1) == 0
        else:
            assert gt.xengnttab_close(h) == 0  # also what the process's death does
            h = None
        assert pages.view[100] == 0  # gntdev: UNMAP_NOTIFY_CLEAR_BYTE
        assert front.wait(2.0) == [remote]  # gntdev: UNMAP_NOTIFY_SEND_EVENT
    finally:
        if h is not None:
            gt.xengnttab_close(h)
        ev.close(e)


def test_unmap_notify_rules(sim: Sim, libs: tuple[Gnttab, Evtchn]) -> None:
    gt, _ = libs
    pages = sim.domain(1, store=False).grants.share_pages(1, 0)
    pages.view[0] = 7
    h = gt.xengnttab_open(None, 0)
    try:
        # a read-only map can't have a byte cleared: the map fails (EINVAL), as on Linux
        assert not gt.lib_notify(h, 1, pages.refs[0], PROT_READ, 0, 0xFFFFFFFF)
        assert gt.errno() == errno.EINVAL
        # a port this domain hasn't bound: EINVAL (Linux's evtchn_get)
        assert not gt.lib_notify(h, 1, pages.refs[0], PROT_READ | PROT_WRITE, 0xFFFFFFFF, 99)
        assert gt.errno() == errno.EINVAL
        # an offset past the page just means "no byte to clear" (not an error)
        a = gt.lib_notify(h, 1, pages.refs[0], PROT_READ | PROT_WRITE, 5000, 0xFFFFFFFF)
        assert a
        assert gt.xengnttab_unmap(h, a, 1) == 0
        assert pages.view[0] == 7
        assert sim.mappings(mapper=0) == []
    finally:
        gt.xengnttab_close(h)
    assert not readable(sim.domain(0, store=False).evtchn.fileno(), 0)
