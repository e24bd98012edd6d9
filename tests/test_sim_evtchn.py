"""Simulated event channels: binding rules, notification, coalescing, polling, unbinding."""

from __future__ import annotations

import errno
import select

import pytest

from harness.xen.api import EventChannels
from harness.xen.sim.hvproto import PortState


def test_handle_satisfies_the_seam(sim):
    assert isinstance(sim.domain(0, store=False).evtchn, EventChannels)


def test_notify_reaches_the_bound_peer_both_ways(sim):
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    p = back.alloc_unbound(1)
    q = front.bind_interdomain(0, p)
    # Xen's bind_interdomain sets the binder's new port pending ("we may have lost
    # notifications on the remote unbound port"); the allocator gets nothing
    assert front.wait(0) == [q]
    assert back.wait(0.05) == [] and front.wait(0.05) == []
    front.notify(q)
    assert back.wait(2.0) == [p]
    back.notify(p)
    assert front.wait(2.0) == [q]
    assert back.wait(0.05) == []


def test_notify_across_processes(sim, peer):
    back = sim.domain(0, store=False).evtchn
    p = back.alloc_unbound(1)
    other = peer(1, """
        ev = dom.evtchn
        q = ev.bind_interdomain(0, int(line()))
        assert ev.wait(0) == [q]  # the bind's own event
        ev.notify(q)
        say("fired", *ev.wait(5.0))
        """)
    other.proc.stdin.write(f"{p}\n")
    other.proc.stdin.flush()
    assert back.wait(10.0) == [p]
    back.notify(p)
    assert other.ask() == "fired 1"
    assert other.finish() == 0


def test_notifications_coalesce(sim):
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    q = front.bind_interdomain(0, back.alloc_unbound(1))
    for _ in range(10_000):  # more than the socket buffer holds: must not block or fail
        front.notify(q)
    assert len(back.wait(2.0)) == 1
    assert back.wait(0.05) == []


def test_fileno_is_pollable_with_select(sim):
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    p = back.alloc_unbound(1)
    q = front.bind_interdomain(0, p)
    # only a pending port makes the fd readable
    assert select.select([back], [], [], 0.05)[0] == []
    assert select.select([front], [], [], 0)[0] == [front]  # the bind's own event
    assert front.wait(0) == [q]
    assert select.select([front], [], [], 0.05)[0] == []
    front.notify(q)
    assert select.select([back, front], [], [], 2.0)[0] == [back]
    assert back.wait(0) == [p]
    assert select.select([back], [], [], 0.05)[0] == []


def test_binding_a_port_not_offered_to_you_fails(sim):
    sim.create_domain(2, "other")
    back = sim.domain(0, store=False).evtchn
    p = back.alloc_unbound(2)
    front = sim.domain(1, store=False).evtchn
    with pytest.raises(OSError) as exc:
        front.bind_interdomain(0, p)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        front.bind_interdomain(0, 99)  # no such port
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        front.bind_interdomain(7, 1)  # no such domain
    assert exc.value.errno == errno.ESRCH
    # already bound: a second bind fails too
    third = sim.domain(2, store=False).evtchn
    third.bind_interdomain(0, p)
    with pytest.raises(OSError) as exc:
        sim.domain(2, store=False).evtchn.bind_interdomain(0, p)
    assert exc.value.errno == errno.EINVAL


def test_unbind_closes_both_ends(sim):
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    p = back.alloc_unbound(1)
    q = front.bind_interdomain(0, p)
    front.unbind(q)
    assert [r.port for r in sim.ports(1)] == []
    # the peer's port is no longer connected (Xen puts it back to unbound, offered to 1)
    rec = sim.ports(0)[0]
    assert (rec.port, rec.state, rec.remote_domid) == (p, PortState.UNBOUND, 1)
    assert back.status(p)[0] == PortState.UNBOUND
    assert back.wait(0.1) == []  # closing is not an event
    back.notify(p)  # goes nowhere, silently
    with pytest.raises(OSError) as exc:
        front.notify(q)  # no longer ours
    assert exc.value.errno == errno.ENOTCONN


def test_notify_to_gone_peer_succeeds_silently(sim, peer):
    back = sim.domain(0, store=False).evtchn
    p = back.alloc_unbound(1)
    other = peer(1, """
        q = dom.evtchn.bind_interdomain(0, int(line()))
        say("bound", q)
        line()
        """)
    assert other.ask(str(p)) == "bound 1"
    other.proc.kill()
    other.proc.wait(5)
    back.notify(p)
    assert back.wait(0.2) == []
    back.notify(p)
    # and a port that was never bound by anyone
    back.notify(back.alloc_unbound(1))


def test_notify_before_the_bind_message_was_read(sim):
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    p = back.alloc_unbound(1)
    q = front.bind_interdomain(0, p)
    assert front.wait(0) == [q]  # the bind's own event
    back.notify(p)  # the channel end came with alloc_unbound: no announcement needed
    assert front.wait(2.0) == [q]


def test_many_ports_per_handle(sim):
    back, front = sim.domain(0, store=False).evtchn, sim.domain(1, store=False).evtchn
    pairs = []
    for _ in range(50):
        p = back.alloc_unbound(1)
        pairs.append((p, front.bind_interdomain(0, p)))
    assert sorted(front.wait(0)) == sorted(q for _, q in pairs)  # the binds' own events
    assert len({p for p, _ in pairs}) == 50 and len({q for _, q in pairs}) == 50
    for _, q in pairs[::2]:
        front.notify(q)
    assert sorted(back.wait(2.0)) == sorted(p for p, _ in pairs[::2])
    back.notify(pairs[7][0])
    back.notify(pairs[9][0])
    got: list[int] = []
    while len(got) < 2:
        new = front.wait(2.0)
        assert new
        got += new
    assert sorted(got) == sorted([pairs[7][1], pairs[9][1]])


def test_closing_the_handle_frees_its_ports(sim):
    back = sim.domain(0, store=False).evtchn
    front = sim.domain(1, store=False).evtchn
    p = back.alloc_unbound(1)
    front.bind_interdomain(0, p)
    front.close()
    assert sim.ports(1) == []
    assert back.status(p)[0] == PortState.UNBOUND
