"""Simulated grant tables: contiguous shared mappings, access checks, read-only grants,
deferred revocation, accounting, and domain destruction."""

from __future__ import annotations

import errno
import mmap
import os
import time

import pytest

from harness.xen.api import Grants
from harness.xen.sim import shm
from harness.xen.sim.hvproto import PortState

PAGE = shm.PAGE_SIZE


def test_handle_satisfies_the_seam(sim):
    assert isinstance(sim.domain(0, store=False).grants, Grants)


def test_16_pages_shared_across_processes(sim, peer):
    g = sim.domain(0, store=False).grants
    pages = g.alloc_pages(16)
    assert len(pages.view) == 16 * PAGE
    refs = [g.grant(pages, i, 1) for i in range(16)]
    assert 0 not in refs and len(set(refs)) == 16
    for i in range(16):
        pages.page(i)[:] = bytes([i + 1]) * PAGE
    other = peer(1, """
        refs = [int(r) for r in line().split()]
        m = dom.grants.map(0, refs)
        v = m.view
        ok = all(v[i * 4096:(i + 1) * 4096] == bytes([i + 1]) * 4096 for i in range(16))
        v[4095:4097] = b"XY"  # across a page boundary: the mapping is contiguous
        v[-1:] = b"Z"
        m.unmap()
        say("ok" if ok else "bad")
        """)
    assert other.ask(" ".join(map(str, refs))) == "ok"
    assert other.finish() == 0
    assert bytes(pages.view[4095:4097]) == b"XY" and bytes(pages.view[-1:]) == b"Z"
    assert sim.mappings() == []
    assert len(sim.mappings(history=True)) == 16


def test_share_pages_grants_every_page_to_one_domain(sim):
    sim.create_domain(2, "other")
    g0 = sim.domain(0, store=False).grants
    pages = g0.share_pages(3, 1)
    assert len(pages.refs) == 3 and 0 not in pages.refs
    assert bytes(pages.view) == bytes(3 * PAGE)  # shared pages start zeroed
    pages.page(2)[:4] = b"ring"
    m = sim.domain(1, store=False).grants.map(0, pages.refs)
    assert bytes(m.view[2 * PAGE:2 * PAGE + 4]) == b"ring"
    m.unmap()
    with pytest.raises(OSError):  # granted to domain 1, not 2
        sim.domain(2, store=False).grants.map(0, pages.refs[:1])
    ro = g0.share_pages(1, 1, readonly=True)
    with pytest.raises(OSError):
        sim.domain(1, store=False).grants.map(0, ro.refs)  # writable map of a read-only grant
    sim.domain(1, store=False).grants.map(0, ro.refs, readonly=True).unmap()


def test_mapping_a_ref_not_granted_to_you_fails(sim):
    sim.create_domain(2, "other")
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(2)
    ref = g0.grant(pages, 0, 2)
    g1 = sim.domain(1, store=False).grants
    for domid, refs in ((0, [ref]), (0, [12345]), (0, [0])):
        with pytest.raises(OSError) as exc:
            g1.map(domid, refs)
        assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        g1.map(9, [ref])
    assert exc.value.errno == errno.ESRCH
    # one bad ref spoils the batch; nothing stays mapped
    good = g0.grant(pages, 1, 1)
    with pytest.raises(OSError):
        g1.map(0, [good, ref])
    assert sim.mappings() == []
    g1.map(0, [good]).unmap()


def test_mapping_after_revoke_fails(sim):
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(1)
    ref = g0.grant(pages, 0, 1)
    assert g0.revoke(ref) is True
    with pytest.raises(OSError) as exc:
        sim.domain(1, store=False).grants.map(0, [ref])
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        g0.revoke(ref)  # already gone


def test_read_only_grant_maps_read_only(sim):
    g0 = sim.domain(0, store=False).grants
    g1 = sim.domain(1, store=False).grants
    pages = g0.alloc_pages(1)
    pages.view[:4] = b"ro!!"
    ref = g0.grant(pages, 0, 1, readonly=True)
    with pytest.raises(OSError) as exc:
        g1.map(0, [ref])  # writable map of a read-only grant is refused
    assert exc.value.errno == errno.EPERM
    m = g1.map(0, [ref], readonly=True)
    assert m.view.readonly and bytes(m.view[:4]) == b"ro!!"
    with pytest.raises(TypeError):
        m.view[0] = 0
    m.unmap()


def test_read_only_fd_refuses_a_writable_mmap():
    # what the daemon hands a read-only mapper: no writable mapping can be made of it
    fd = shm.new_page_fd()
    ro = shm.reopen_readonly(fd)
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(ro, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(OSError):
            os.ftruncate(ro, 2 * PAGE)
        with pytest.raises(PermissionError):  # sealed: even the owner can't resize it
            os.ftruncate(fd, 2 * PAGE)
        mmap.mmap(ro, PAGE, mmap.MAP_SHARED, mmap.PROT_READ).close()
    finally:
        os.close(ro)
        os.close(fd)


def test_revoke_of_a_mapped_grant_is_busy_until_unmap(sim):
    g0 = sim.domain(0, store=False).grants
    g1 = sim.domain(1, store=False).grants
    pages = g0.alloc_pages(1)
    ref = g0.grant(pages, 0, 1)
    m = g1.map(0, [ref])
    assert g0.revoke(ref) is False
    [rec] = sim.busy_revokes(0)
    assert (rec.ref, rec.grantee, rec.released) == (ref, 1, None)
    assert [(g.ref, g.busy, g.nmaps) for g in sim.grants(0)] == [(ref, True, 1)]
    with pytest.raises(OSError):
        g1.map(0, [ref])  # no new mappings of a revoked grant
    m.view[:2] = b"ok"  # the existing mapping still works
    m.unmap()
    assert sim.grants(0) == []
    [rec] = sim.busy_revokes(0)
    assert rec.released is not None and rec.released >= rec.at


def test_accounting_answers_who_maps_what_since_when(sim):
    sim.create_domain(2, "other")
    g1 = sim.domain(1, store=False).grants
    pages = g1.alloc_pages(4)
    refs = [g1.grant(pages, i, 0, readonly=(i == 3)) for i in range(4)]
    before = time.monotonic_ns()
    m = sim.domain(0, store=False).grants.map(1, refs[:3])
    m_ro = sim.domain(0, store=False).grants.map(1, [refs[3]], readonly=True)
    after = time.monotonic_ns()
    now = sim.mappings(granter=1, mapper=0)
    assert sorted((r.ref, r.readonly) for r in now) == [(refs[0], False), (refs[1], False),
                                                       (refs[2], False), (refs[3], True)]
    assert all(before <= r.since <= after and r.until is None for r in now)
    assert sim.mappings(granter=1, mapper=2) == [] and sim.mappings(granter=0) == []
    m.unmap()
    assert [r.ref for r in sim.mappings(granter=1, mapper=0)] == [refs[3]]
    hist = sim.mappings(granter=1, mapper=0, history=True)
    done = [r for r in hist if r.until is not None]
    assert sorted(r.ref for r in done) == refs[:3]
    assert all(r.until >= r.since for r in done)
    m_ro.unmap()


def test_a_dead_mapper_process_is_unmapped(sim, peer):
    g0 = sim.domain(0, store=False).grants
    pages = g0.alloc_pages(2)
    refs = [g0.grant(pages, i, 1) for i in range(2)]
    other = peer(1, """
        m = dom.grants.map(0, [int(r) for r in line().split()])
        say("mapped")
        line()
        """)
    assert other.ask(" ".join(map(str, refs))) == "mapped"
    assert len(sim.mappings(granter=0, mapper=1)) == 2
    other.proc.kill()
    other.proc.wait(5)
    deadline = time.monotonic() + 5
    while sim.mappings(granter=0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.mappings(granter=0) == []
    assert len(sim.mappings(granter=0, history=True)) == 2


def test_destroyed_domain_grants_and_ports_are_gone(sim):
    d1 = sim.domain(1, store=False)
    g0 = sim.domain(0, store=False).grants
    back = sim.domain(0, store=False).evtchn
    # domain 1 grants to 0 and maps from 0, binds a port to 0, offers one to 0
    pages = d1.grants.alloc_pages(2)
    refs = [d1.grants.grant(pages, i, 0) for i in range(2)]
    m0 = g0.map(1, [refs[0]])
    mine = g0.alloc_pages(1)
    m1 = d1.grants.map(0, [g0.grant(mine, 0, 1)])
    p = back.alloc_unbound(1)
    d1.evtchn.bind_interdomain(0, p)
    offered = d1.evtchn.alloc_unbound(0)
    sim.destroy_domain(1)
    assert 1 not in [d.domid for d in sim.control.list_domains()]
    assert sim.ports(1) == [] and sim.grants(1) == []
    assert sim.mappings(mapper=1) == []  # its mappings were torn down
    assert m1.mapped  # (the process still has the memory; the daemon no longer counts it)
    # its granted page stays alive while domain 0 maps it; new maps fail
    m0.view[:3] = b"abc"
    assert [r.ref for r in sim.mappings(granter=1)] == [refs[0]]
    with pytest.raises(OSError) as exc:
        g0.map(1, [refs[1]])
    assert exc.value.errno == errno.ESRCH
    m0.unmap()
    assert sim.mappings(granter=1) == []
    # domain 0's port is disconnected; the port offered by 1 is gone
    assert back.status(p)[0] == PortState.UNBOUND
    back.notify(p)
    with pytest.raises(OSError):
        back.bind_interdomain(1, offered)
    assert not os.path.exists(sim.hypervisor_path(1))
