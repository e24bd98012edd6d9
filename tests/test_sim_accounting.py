"""Bounded accounting: map/unmap counters per (granter, mapper) are exact whatever the
volume, the unmapped-record history is a capped window, current mappings are always listed
in full; XenStore writes are counted per domain, in total and over a recent time span."""

from __future__ import annotations

import time

from harness.xen.sim import hypervisor
from harness.xen.sim.runner import Sim


def test_history_is_capped_and_counters_exact(sim: Sim) -> None:
    g1, g0 = sim.domain(1, store=False).grants, sim.domain(0, store=False).grants
    pages = g1.share_pages(4, 0)
    kept = g0.map(1, pages.refs[:1])  # a leak: never unmapped
    rounds = hypervisor.MAX_HISTORY // 2 + 10  # 2 pages a round: overflows the window
    for _ in range(rounds):
        g0.map(1, pages.refs[2:4]).unmap()
    hist = sim.mappings(granter=1, mapper=0, history=True)
    unmapped = [m for m in hist if m.until is not None]
    assert len(unmapped) == hypervisor.MAX_HISTORY
    assert [m.ref for m in hist if m.until is None] == [pages.refs[0]]  # the leak stays
    (c,) = sim.map_counters(granter=1, mapper=0)
    assert (c.maps, c.unmaps, c.mapped) == (2 * rounds + 1, 2 * rounds, 1)
    kept.unmap()
    assert sim.map_counters(1, 0)[0].mapped == 0
    assert sim.map_counters(granter=0) == []


def test_xenstore_writes_per_domain(sim: Sim) -> None:
    guest, dom0 = sim.domain(1).store, sim.domain(0).store
    assert sim.xs_writes(1) == 0  # the toolstack's own nodes are not the guest's writes
    for i in range(20):
        guest.write("data/x", str(i))
    guest.mkdir("data/d")
    guest.rm("data/d")
    guest.read("data/x")  # not a write
    dom0.write("/local/domain/0/y", "1")
    assert sim.xs_writes(1) == 22
    assert sim.xs_writes(0) == 1
    t = time.monotonic_ns()
    for _ in range(5):
        guest.write("data/x", "storm")
    assert sim.xs_writes(1, since=t) == 5
    assert sim.xs_writes(1, last=60.0) == 27
    time.sleep(0.3)
    assert sim.xs_writes(1, last=0.2) == 0
    assert sim.xs_writes(7) == 0  # never wrote (no such domain)
