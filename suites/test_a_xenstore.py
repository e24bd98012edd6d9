"""Area A: XenStore configuration and XenBus state transitions (clauses.md §4 A), against
the supervised backend. InitWait and Connected with the rings mapped, ``versions``, the
frontend restarting or closing, handshake faults (transport nodes missing, non-numeric,
out of range; states out of order) followed by a Linux-style frontend restart, toolstack
removal and re-creation with hostile entries beside the device.

Cases that close the frontend (handshake faults, removal) play the handshake by hand
(:class:`~harness.frontend.hostile.ManualFrontend`) and end with the backend back in
InitWait and everything released; the supervisor then restarts the backend and recreates
the device before the next case (``begin_case``: "frontend closed by the previous case").

Clauses of the area NOT tested here, and why:

* SND-A-01, A-02, A-03 [TS]: paths, initial states and permissions are the toolstack's
  (the harness's toolstack tests cover them).
* SND-A-05, A-06, A-07, A-08, A-10, A-11, A-13, A-14, A-15, A-20, A-21 [FE]: frontend
  discovery, parsing, handshake and recovery (the reference frontend's tests).
* SND-A-22 [MAY]: unique-id syntax is backend-defined; nothing to judge.
* SND-A-24 [AMBIG-19]: transient states before InitWait are allowed; no case records them
  (the frontend tolerates them, which the other cases exercise).
"""

from __future__ import annotations

import contextlib

import pytest

from harness.certify.outcomes import NO_TOOLSTACK, not_applicable
from harness.frontend.hostile import ManualFrontend, taken_over, wait_until
from harness.judge.evidence import accounting, backend_maps
from harness.toolstack.apply import DeviceTimeout, create_device, remove_device
from harness.toolstack.plan import plan_device, plan_removal
from harness.world.world import BackendStartError
from protocol_models.constants import XsField
from protocol_models.xenbus import XenbusState as S
from protocol_models.xenstore import XsError

RECONNECT_S = 5.0  # the backend back in InitWait and the frontend connected again
SETTLE_S = 3.0  # the backend reacting to one XenStore write


def be_state(dev) -> str | None:
    try:
        return dev.store.read(f"{dev.be_path}/{XsField.STATE}").decode(errors="replace")
    except XsError:
        return None


def reconnects(dev, gen: int) -> bool:
    """The frontend connected again after ``gen`` connections: it saw BE InitWait (only
    that state makes it publish and reconnect, A-14) and then BE Connected."""
    return bool(wait_until(lambda: dev.generation > gen and dev.state == S.Connected
                           and all(s.connected for s in dev.streams), RECONNECT_S))


@pytest.mark.clause("SND-A-09", "SND-A-12", "SND-A-04")
def test_backend_reaches_initwait_and_connects(request):
    """After the toolstack creates the device the backend reaches InitWait by itself, and
    once the frontend (which writes no ``version`` node, as Linux) is Initialised it maps
    every stream's ring and event page, binds both ports and goes Connected."""
    try:
        sup = request.getfixturevalue("backend_supervisor")
    except BackendStartError as exc:
        first = str(exc).splitlines()[0]
        clause = "SND-A-09" if "InitWait" in first else "SND-A-12/SND-A-04"
        raise AssertionError(f"{clause}: {first}") from None
    case = request.getfixturevalue("backend_case")
    dev, c = case.dev, sup.world.spec
    assert be_state(dev) == str(int(S.Connected)), f"SND-A-12: BE state {be_state(dev)!r}"
    maps = {m.ref for m in backend_maps(sup)}
    ports = {p.remote_port for p in accounting(sup).ports(c.backend_domid)
             if p.interdomain and p.remote_domid == c.frontend_domid}
    for s in dev.streams:
        assert {s.ring_ref, s.evt_ring_ref} <= maps, (
            f"SND-A-12: stream {s.path}: ring/event grefs {s.ring_ref}/{s.evt_ring_ref} not "
            f"mapped by the backend (it maps {sorted(maps)})")
        assert {s.req_port, s.evt_port} <= ports, (
            f"SND-A-12: stream {s.path}: ports {s.req_port}/{s.evt_port} not bound by the "
            f"backend (bound: {sorted(ports)})")


@pytest.mark.clause("SND-A-04")
def test_versions_published(backend_case):
    """The backend publishes ``versions``, a comma-separated list containing protocol
    version 2."""
    dev = backend_case.dev
    try:
        raw = dev.store.read(f"{dev.be_path}/{XsField.BE_VERSIONS}").decode(errors="replace")
    except XsError as exc:
        raise AssertionError(f"SND-A-04: no {dev.be_path}/versions node ({exc})") from None
    versions = [v.strip() for v in raw.split(",")]
    assert "2" in versions, f"SND-A-04: versions {raw!r} does not list 2"


def _fe_write_state(case, state: int, clause: str) -> None:
    """Write the FE state node behind the frontend's back and expect a reconnection; on
    failure close the frontend so that the supervisor restarts everything."""
    dev = case.dev
    gen = dev.generation
    dev.store.write(f"{dev.fe_path}/{XsField.STATE}", str(state))
    ok = reconnects(dev, gen)
    if not ok:
        last = be_state(dev)
        dev.close()
        raise AssertionError(f"{clause}: FE state {state} while connected: expected BE "
                             f"InitWait and a reconnection within {RECONNECT_S:g} s; BE "
                             f"state {last!r}")


@pytest.mark.clause("SND-A-17")
def test_frontend_restart_returns_backend_to_initwait(backend_case):
    """The frontend going back to Initialising while connected makes the backend tear down
    and return to InitWait, so the frontend can connect again."""
    _fe_write_state(backend_case, int(S.Initialising), "SND-A-17")
    assert backend_case.dev.stream(0).hw_param_query().request is not None


@pytest.mark.clause("SND-A-16")
@pytest.mark.parametrize("state", [S.Closing, S.Closed], ids=lambda s: s.name)
def test_frontend_close_returns_backend_to_initwait(backend_case, state):
    """The frontend going Closing or Closed while connected makes the backend release the
    connection and end in InitWait (not Closed), ready for the frontend to reconnect."""
    _fe_write_state(backend_case, int(state), "SND-A-16")
    assert backend_case.dev.stream(0).hw_param_query().request is not None


def connect_by_hand(mf: ManualFrontend, clause: str) -> None:
    """Linux's probe after a restart: Initialising, publish, Initialised; then the backend
    must be Connected and serve every ring."""
    mf.set_state(int(S.Initialising))
    mf.publish()
    mf.set_state(int(S.Initialised))
    last = mf.wait_be_state([S.Connected], RECONNECT_S)
    assert last == str(int(S.Connected)), (
        f"{clause}: after the frontend restarted and published valid transport nodes: "
        f"expected BE Connected, got {last!r}")
    for path in mf.paths:
        r = mf.probe(path)
        assert r is not None, f"{clause}: stream {path}: no answer on the reconnected ring"


def restart_like_linux(mf: ManualFrontend, clause: str) -> None:
    """``xen_drv_remove``: Closing, wait for BE InitWait, Closed."""
    mf.set_state(int(S.Closing))
    last = mf.wait_be_state([S.InitWait], SETTLE_S)
    assert last == str(int(S.InitWait)), (
        f"{clause}: frontend Closing after a failed handshake: expected BE InitWait "
        f"within {SETTLE_S:g} s, got {last!r}")
    mf.set_state(int(S.Closed))


FAULTS = {  # transport-node overrides of the first stream
    "ring-ref-non-numeric": {XsField.RING_REF: "ring"},
    "ring-ref-negative": {XsField.RING_REF: "-1"},
    "ring-ref-over-u32": {XsField.RING_REF: "4294967296"},
    "ring-ref-not-granted": {XsField.RING_REF: "999999"},
    "event-channel-not-allocated": {XsField.EVT_CHNL: "4000"},
    "evt-ring-ref-empty": {XsField.EVT_RING_REF: ""},
    "evt-event-channel-missing": {XsField.EVT_EVT_CHNL: None},
}


@pytest.mark.clause("SND-A-12", "SND-A-19", "SND-A-23")
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_transport_node_then_frontend_restart(backend_case, fault):
    """A transport node that is missing, not a decimal u32, or names no page or port of
    the frontend does not connect the backend on garbage; after a Linux-style frontend
    restart (Closing, Closed, Initialising, publish, Initialised) the backend is back in
    InitWait and connects every stream."""
    with taken_over(backend_case.dev, SETTLE_S) as mf:
        mf.set_state(int(S.Initialising))
        mf.publish({mf.paths[0]: FAULTS[fault]})
        mf.set_state(int(S.Initialised))
        after = mf.wait_be_state([S.Connected, S.Closing, S.Closed], SETTLE_S)
        if after == str(int(S.Connected)):
            # only acceptable if the bad stream is not served on garbage: it must answer
            r = mf.probe(mf.paths[0], timeout=1.0)
            assert r is None, (f"SND-A-12: {fault}: the backend went Connected and "
                               "answered on the stream whose transport node is bad")
        restart_like_linux(mf, "SND-A-19")
        connect_by_hand(mf, "SND-A-19")


@pytest.mark.clause("SND-A-12")
@pytest.mark.parametrize("order", ["initialised-before-publish", "connected-first"])
def test_states_out_of_order_then_frontend_restart(backend_case, order):
    """FE Initialised before its transport nodes exist, or FE Connected without passing
    Initialised, does not crash or wedge the backend: after a frontend restart it
    connects every stream."""
    with taken_over(backend_case.dev, SETTLE_S) as mf:
        mf.set_state(int(S.Initialising))
        if order == "initialised-before-publish":
            mf.set_state(int(S.Initialised))
            mf.wait_be_state([S.Closing, S.Closed, S.Connected], 1.0)
            mf.publish()
        else:
            mf.publish()
            mf.set_state(int(S.Connected))
            mf.wait_be_state([S.Closing, S.Closed, S.Connected], 1.0)
        restart_like_linux(mf, "SND-A-12")
        connect_by_hand(mf, "SND-A-12")


JUNK = ("junk/0/state", "{fe}/x1/frontend", "{fe}/7/state")


@pytest.mark.clause("SND-A-18", "SND-A-09")
def test_removal_and_recreation_beside_hostile_entries(backend_case, backend_supervisor):
    """With non-numeric and unconfigured entries under ``backend/vsnd`` beside the device,
    toolstack removal (online 0, state 5) takes the backend to Closed within 10 s, and
    the device created again reaches InitWait within 10 s and connects."""
    c = backend_supervisor.world.spec
    if not c.toolstack:
        not_applicable(NO_TOOLSTACK)
    root = f"/local/domain/{c.backend_domid}/backend/vsnd"
    junk = [f"{root}/{j.format(fe=c.frontend_domid)}" for j in JUNK]
    tool = backend_supervisor.world.platform.domain(0)
    try:
        with taken_over(backend_case.dev, SETTLE_S) as mf:
            for path in junk:
                tool.store.write(path, "1" if path.endswith("state") else "garbage")
            removed = remove_device(tool.store, plan_removal(c.frontend_domid,
                                                             c.backend_domid, c.devid))
            assert removed.reached_closed, (
                f"SND-A-18: toolstack removal: expected BE Closed within 10 s, last state "
                f"{removed.last_state!r}")
            try:
                # the world's card: with the run's unique-id template applied
                create_device(tool.store, plan_device(backend_supervisor.world.card,
                                                      c.frontend_domid,
                                                      c.backend_domid, c.devid))
            except DeviceTimeout as exc:
                raise AssertionError(f"SND-A-09: re-created device: {exc}") from None
            connect_by_hand(mf, "SND-A-09")
    finally:
        # remove each hostile entry whole (``junk``, ``<fe>/x1``, ``<fe>/7``): a leftover
        # non-numeric directory would stay in the way of every later case
        for path in junk:
            rel = path[len(root) + 1:].split("/")
            top = rel[:2] if rel[0] == str(c.frontend_domid) else rel[:1]
            with contextlib.suppress(XsError):
                tool.store.rm("/".join([root, *top]))
        tool.close()
