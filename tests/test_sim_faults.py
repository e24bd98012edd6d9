"""Platform fault injection seen by Python clients: each operation class fails for the
chosen domain only, the chosen number of times, with the chosen (or default) errno."""

from __future__ import annotations

import errno

import pytest

from harness.xen.sim.faults import OPS, FaultError
from harness.xen.sim.runner import Sim
from protocol_models.xenstore import XsError


def fails(fn, err: int) -> bool:  # type: ignore[no-untyped-def]
    try:
        fn()
    except OSError as exc:
        assert exc.errno == err, exc
        return True
    return False


def test_evtchn_faults(sim: Sim) -> None:
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    fid = sim.inject_fault(1, "evtchn.bind_interdomain", mode="once")
    p = back.alloc_unbound(1)
    assert fails(lambda: front.bind_interdomain(0, p), OPS["evtchn.bind_interdomain"])
    q = front.bind_interdomain(0, p)  # once: the next one works
    (f,) = sim.faults()
    assert (f.id, f.domid, f.op, f.fired, f.spent) == (fid, 1, "evtchn.bind_interdomain",
                                                      1, True)
    sim.inject_fault(1, "evtchn.alloc_unbound", "EPERM", "always")
    for _ in range(3):
        assert fails(lambda: front.alloc_unbound(0), errno.EPERM)
    assert back.alloc_unbound(1) > 0  # other domains are not affected
    sim.inject_fault(1, "evtchn.notify", "EIO", ("from", 2))
    front.notify(q)
    assert fails(lambda: front.notify(q), errno.EIO)
    assert fails(lambda: front.notify(q), errno.EIO)
    back.notify(p)
    sim.inject_fault(1, "evtchn.unbind", mode="once")
    assert fails(lambda: front.unbind(q), errno.EINVAL)
    assert sim.clear_faults(domid=1) == 4
    front.notify(q)
    front.unbind(q)
    assert sim.faults() == []


def test_grant_faults(sim: Sim) -> None:
    g1, g0 = sim.domain(1, store=False).grants, sim.domain(0, store=False).grants
    pages = g1.share_pages(2, 0)
    sim.inject_fault(0, "grant.map", mode=("from", 2))
    m = g0.map(1, pages.refs)
    assert fails(lambda: g0.map(1, pages.refs), errno.EINVAL)
    assert fails(lambda: g0.map(1, pages.refs[:1]), errno.EINVAL)
    sim.clear_faults(0)
    sim.inject_fault(0, "grant.unmap", "EFAULT")
    assert fails(m.unmap, errno.EFAULT)
    # the failed unmap left the pages mapped in the hypervisor: the evidence of a leak
    assert len(sim.mappings(granter=1, mapper=0)) == 2
    sim.inject_fault(1, "grant.share", mode="always")
    assert fails(lambda: g1.share_pages(1, 0), errno.ENOSPC)
    sim.inject_fault(1, "grant.alloc", "ENOMEM")
    assert fails(lambda: g1.alloc_pages(1), errno.ENOMEM)
    assert g0.share_pages(1, 1).refs  # domain 0 unaffected
    assert [f.fired for f in sim.faults() if f.domid == 1] == [1, 1]


@pytest.mark.parametrize("op,call", [
    ("xs.read", lambda s: s.read("domid")),
    ("xs.write", lambda s: s.write("data/a", "1")),
    ("xs.mkdir", lambda s: s.mkdir("data/b")),
    ("xs.rm", lambda s: s.rm("data/a")),
    ("xs.directory", lambda s: s.directory("data")),
    ("xs.watch", lambda s: s.watch("data", "tok")),
    ("xs.transaction_start", lambda s: s.transaction_start()),
])
def test_xenstore_faults(sim: Sim, op: str, call) -> None:  # type: ignore[no-untyped-def]
    sim.create_domain(2, "other")
    guest, other = sim.domain(1).store, sim.domain(2).store
    sim.inject_fault(1, op, "EACCES", "once")
    with pytest.raises(XsError) as exc:
        call(guest)
    assert exc.value.name == "EACCES"
    call(guest)  # once only
    call(other)  # another domain is not affected
    assert sim.faults()[0].fired == 1


def test_xenstore_transaction_end_default_is_eagain(sim: Sim) -> None:
    guest = sim.domain(1).store
    sim.inject_fault(1, "xs.transaction_end", mode="always")
    tx = guest.transaction_start()
    guest.write("data/t", "1", tx)
    assert guest.transaction_end(tx) is False  # EAGAIN: the client must retry
    sim.clear_faults()
    tx = guest.transaction_start()
    guest.write("data/t", "1", tx)
    assert guest.transaction_end(tx) is True


def test_bad_fault_requests(sim: Sim) -> None:
    with pytest.raises(FaultError):
        sim.inject_fault(1, "grant.nope")
    with pytest.raises(FaultError):
        sim.inject_fault(1, "grant.map", "ENOTANERRNO")
    with pytest.raises(FaultError):
        sim.inject_fault(1, "grant.map", mode="sometimes")
    with pytest.raises(OSError):  # xenstored can only answer its own error names
        sim.inject_fault(1, "xs.read", "EFAULT")
    assert sim.faults() == []
