"""Area B: request ring and event page synchronisation (clauses.md §4 B), against the
supervised backend. Id and operation echo, one response per request, the req_event
hold-off re-armed between single requests, response notification, pipelining up to a full
ring, non-zero reserved bytes, garbage in unproduced slots, spurious notifications, a
producer index jump (G-06), and an event page the frontend stops consuming.

Clauses of the area NOT tested here, and why:

* SND-B-01, B-02, B-06, B-07, B-14 [FE]: the frontend's own ring duties (tested by the
  reference frontend's tests).
* SND-B-04 [SHOULD part: RING_COPY_REQUEST]: a double fetch is not observable from the
  frontend side without racing the backend's reads; the MUST part (overflow) is tested.
* SND-B-10 (u32 index wrap): the supervised connection's rings start at index 0 and the
  frontend cannot re-initialise them while connected; the wrap is covered by the ring
  tests of ``harness.rings`` and the backend's unit tests, not from here.
* SND-B-17 [REF]: a statement about the frontend (it zeroes the event page), on which the
  backend may rely; nothing of the backend to judge.
"""

from __future__ import annotations

import time

import pytest

from harness.certify.outcomes import not_applicable
from harness.frontend.errors import RequestTimeout
from harness.frontend.hostile import (
    call,
    exchange,
    index_ahead,
    late_responses,
    pick_open_params,
    raw_id,
    wait_until,
)
from harness.frontend.stream import FrontendStream
from harness.frontend.violations import (
    DUPLICATE_RESPONSE,
    EVENT_RING_JUMP,
    ID_NOT_ECHOED,
    OPERATION_NOT_ECHOED,
    UNSOLICITED_RESPONSE,
)
from harness.rings import u32
from protocol_models import codec
from protocol_models.constants import XENSND_IN_RING_LEN, XENSND_RING_SIZE, Op

KINDS = {"p": "playback", "c": "capture"}
ECHO_KINDS = {DUPLICATE_RESPONSE, ID_NOT_ECHOED, OPERATION_NOT_ECHOED, UNSOLICITED_RESPONSE}
#: Requests valid in any state, each with fields: the backend answers them all.
FULL_QUERY = dict(formats=(1 << 25) - 1, rates_min=1, rates_max=0xFFFFFFFF, channels_min=1,
                  channels_max=0xFF, buffer_min=1, buffer_max=0xFFFFFFFF, period_min=1,
                  period_max=0xFFFFFFFF)


def stream_of(case, kind: str) -> FrontendStream:
    for s in case.dev.streams:
        if s.type == kind:
            return s
    not_applicable(f"no {KINDS[kind]} stream on this card")


def echo_violations(s: FrontendStream, since: int) -> list[str]:
    return [str(v) for v in s.violations[since:] if v.kind in ECHO_KINDS]


#: Every operation, as a raw request on a stream that is not open (most fail: fine, the
#: status is not what is judged here).
OPERATIONS = {
    Op.OPEN: dict(pcm_rate=48000, pcm_format=2, pcm_channels=2, buffer_sz=0,
                  gref_directory=0, period_sz=0),
    Op.CLOSE: {}, Op.READ: dict(offset=0, length=64), Op.WRITE: dict(offset=0, length=64),
    Op.SET_VOLUME: dict(offset=0, length=8), Op.GET_VOLUME: dict(offset=0, length=8),
    Op.MUTE: dict(offset=0, length=2), Op.UNMUTE: dict(offset=0, length=2),
    Op.TRIGGER: dict(type=2), Op.HW_PARAM_QUERY: FULL_QUERY,
}


@pytest.mark.clause("SND-B-08", "SND-B-09", "SND-B-11")
@pytest.mark.parametrize("rid", [0, 0x7FFF, 0xFFFF])
def test_every_operation_echoes_id_and_operation(backend_case, rid):
    """Each of the ten operations, sent one at a time with the same id (ids are the
    frontend's and need not be unique), gets exactly one response echoing that id and
    its operation."""
    s = stream_of(backend_case, "p")
    s.close()
    since = len(s.violations)
    for op, fields in OPERATIONS.items():
        r, strays = exchange(s, codec.encode_req(op, id=rid, **fields), timeout=3.0)
        assert r is not None, (f"SND-B-08: no response with id {rid:#x} to {op.name}; "
                               f"other responses: {[(x.id, x.operation) for x in strays]}")
        assert r.operation == op, (f"SND-B-09: response to {op.name} id {rid:#x} carries "
                                   f"operation {r.operation}")
        assert not strays, f"SND-B-08: extra responses {[(x.id, x.operation) for x in strays]}"
    extra = late_responses(s)
    assert not extra, ("SND-B-08: responses nobody asked for: "
                       f"{[(x.id, x.operation) for x in extra]}")
    bad = echo_violations(s, since)
    assert not bad, f"SND-B-08: {bad[0]}"
    s.close()


@pytest.mark.clause("SND-B-03", "SND-B-05")
def test_one_request_at_a_time_is_always_noticed(backend_case):
    """Ten requests sent one at a time, each waiting for its answer as Linux does, are all
    noticed (the backend re-arms req_event) and answered with a notification."""
    s = stream_of(backend_case, "p")
    for i in range(10):
        try:
            r = s.hw_param_query(timeout_ms=1500)
        except RequestTimeout:
            ch = s.channel
            published = ch is not None and ch.ring.unconsumed_responses() > 0
            raise AssertionError(
                f"request #{i + 1} unanswered after 1.5 s: "
                + ("SND-B-05: the response was published without a notification"
                   if published else "SND-B-03: the backend did not notice it "
                   "(req_event not re-armed)")) from None
        assert r.request is not None


@pytest.mark.clause("SND-B-08", "SND-B-04")
@pytest.mark.parametrize("n", [8, XENSND_RING_SIZE])
def test_pipelined_requests_each_answered_once(backend_case, n):
    """``n`` requests pushed at once (up to a full ring) get exactly one response each, with
    their ids; none is lost or answered twice."""
    s = stream_of(backend_case, "p")
    s.close()
    since = len(s.violations)
    ids = [raw_id() for _ in range(n)]
    msgs = [codec.encode_req(Op.HW_PARAM_QUERY if i % 2 else Op.CLOSE, id=rid,
                             **(FULL_QUERY if i % 2 else {})) for i, rid in enumerate(ids)]
    s.send_many(msgs)
    got = s.collect(n, timeout=3.0)
    got += late_responses(s)
    answered = sorted(r.id for r in got)
    missing = sorted(set(ids) - set(answered))
    assert not missing, f"SND-B-08: {len(missing)} of {n} pipelined requests unanswered: {missing}"
    assert answered == sorted(ids), f"SND-B-08: ids answered {answered}, sent {sorted(ids)}"
    bad = echo_violations(s, since)
    assert not bad, f"SND-B-08: {bad[0]}"


@pytest.mark.clause("AMBIG-11")
def test_pipelined_response_order(backend_case, observe):
    """In what order the responses to a pipelined batch come (AMBIG-11: unspecified)."""
    s = stream_of(backend_case, "p")
    s.close()
    ids = [raw_id() for _ in range(6)]
    s.send_many([codec.encode_req(Op.CLOSE, id=rid) for rid in ids])
    got = s.collect(6, timeout=3.0)
    order = [ids.index(r.id) if r.id in ids else f"id {r.id}" for r in got]
    observe("order of the responses to 6 pipelined CLOSEs (0 = first sent)", order)


@pytest.mark.clause("SND-B-12")
def test_nonzero_reserved_bytes_are_ignored(backend_case):
    """Requests whose reserved bytes hold stale data (as Linux leaves them) are answered
    exactly as the same requests with zeroed reserved bytes."""
    s = stream_of(backend_case, "p")
    s.close()
    results = []
    for op, fields, reserved in (
            (Op.CLOSE, {}, range(3, 64)),
            (Op.HW_PARAM_QUERY, FULL_QUERY, [*range(3, 8), *range(48, 64)]),
            (Op.TRIGGER, dict(type=2), [*range(3, 8), *range(9, 64)])):
        clean = call(s, op, **fields)
        raw = bytearray(codec.encode_req(op, id=raw_id(), **fields))
        for i in reserved:
            raw[i] = 0xEA  # e.g. an old status and hw_param left in the slot
        dirty, _ = exchange(s, bytes(raw), timeout=3.0)
        results.append((op.name, None if clean is None else clean.status,
                        None if dirty is None else dirty.status))
        if clean is not None and dirty is not None and op == Op.HW_PARAM_QUERY:
            assert clean.hw_param == dirty.hw_param, (
                f"SND-B-12: HW_PARAM_QUERY with stale reserved bytes answered "
                f"{dirty.hw_param}, with zeroed ones {clean.hw_param}")
    differ = [x for x in results if x[1] != x[2]]
    assert not differ, f"SND-B-12: (operation, status clean, status with stale bytes): {differ}"


@pytest.mark.clause("SND-B-04", "SND-B-08")
def test_garbage_in_unproduced_slots_is_not_consumed(backend_case):
    """Slots past req_prod filled with garbage are not requests: one real request is
    answered once and nothing else comes back."""
    s = stream_of(backend_case, "p")
    since = len(s.violations)
    with s.cond:
        ch = s.channel
        assert ch is not None
        start = ch.ring.req_prod_pvt
        for k in range(1, XENSND_RING_SIZE):
            idx = (start + k) & (XENSND_RING_SIZE - 1)
            off = 64 + idx * 64
            ch.ring_page[off:off + 64] = bytes([0x5A]) * 2 + bytes([7]) + bytes([0xC3]) * 61
    s.kick()
    r = s.hw_param_query()
    assert r.request is not None
    extra = late_responses(s, 0.3)
    assert not extra, (f"SND-B-04: {len(extra)} responses to slots beyond req_prod, e.g. id "
                       f"{extra[0].id:#x}")
    bad = echo_violations(s, since)
    assert not bad, f"SND-B-08: {bad[0]}"


@pytest.mark.clause("SND-B-16")
def test_spurious_notifications_are_harmless(backend_case):
    """Notifications with nothing new on the ring or the event page produce no response
    and leave the ring working."""
    s = stream_of(backend_case, "p")
    for _ in range(5):
        s.kick()
        backend_case.dev.notify(s.evt_port, s.path)
    extra = late_responses(s, 0.2)
    assert not extra, f"SND-B-16: responses to nothing: {[(x.id, x.operation) for x in extra]}"
    assert s.hw_param_query().request is not None


@pytest.mark.clause("SND-G-06", "SND-B-04", "SND-A-19")
@pytest.mark.parametrize("jump", [XENSND_RING_SIZE + 1, 1 << 31])
def test_request_producer_overflow_is_fe_failure(backend_case, jump):
    """A req_prod more than a ring ahead of the responses is an unrecoverable frontend
    error: the backend tears the connection down to InitWait, as for a closed frontend, and
    the frontend reconnects (no crash, no serving of phantom requests)."""
    dev = backend_case.dev
    s = stream_of(backend_case, "p")
    gen = dev.generation
    s.set_req_prod(index_ahead(s, jump))
    reconnected = wait_until(lambda: dev.generation > gen and all(x.connected for x in
                                                                   dev.streams), 5.0)
    assert reconnected, (f"SND-G-06: req_prod {jump} past rsp_prod: expected the backend to "
                         f"go back to InitWait (the frontend then reconnects); BE state "
                         f"{dev.be_state}, connections {dev.generation - gen} new")
    assert s.hw_param_query().request is not None


@pytest.mark.clause("SND-B-13")
def test_event_page_is_not_overwritten(backend_case):
    """While the frontend does not consume events, the backend never has more than 63
    unconsumed events on the event page (it must not overwrite unread slots)."""
    s = stream_of(backend_case, "c") if any(x.type == "c" for x in backend_case.dev.streams) \
        else stream_of(backend_case, "p")
    s.close()
    p = pick_open_params(s.config.hw, buffer_bytes=16384)
    small = max(p.frame, 64 // p.frame * p.frame)  # many events per second
    assert s.open(p.rate, p.fmt, p.channels, p.buffer_sz, small).ok
    if s.type == "p":
        s.write(0, bytes(p.buffer_sz))
    since = len(s.violations)
    worst = 0
    assert s.trigger("START").ok
    with s.cond:  # the frontend's consumer waits for this lock: nothing is consumed
        ch = s.channel
        assert ch is not None
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            worst = max(worst, u32(ch.events.in_prod - ch.events.in_cons))
            time.sleep(0.005)
    s.trigger("STOP")
    s.close()
    jumps = [str(v) for v in s.violations[since:] if v.kind is EVENT_RING_JUMP]
    assert worst <= XENSND_IN_RING_LEN and not jumps, (
        f"SND-B-13: up to {worst} unconsumed events (the page holds {XENSND_IN_RING_LEN})"
        + (f"; {jumps[0]}" if jumps else ""))
