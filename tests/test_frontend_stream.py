"""The sans-IO stream core of the reference frontend, on bytearray pages (no sockets):
request ids (SND-B-11), matching (B-08, B-09), every violation kind, re-arming (B-06),
event ids (E-04), positions and periods (E-03, E-05), event legality (E-06)."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.frontend import violations as V
from harness.frontend.stream_core import Phase, PositionTracker, StreamChannel, StreamCore
from harness.rings import RSP_EVENT, BackRing, EventProducer
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, Op, Trigger

OPEN = dict(pcm_rate=48000, pcm_format=2, pcm_channels=2, buffer_sz=65536,
            gref_directory=8, period_sz=4096)


class Rig:
    """A channel on two bytearray pages plus the backend's side of both."""

    def __init__(self, core: StreamCore | None = None) -> None:
        self.core = core or StreamCore("0/0")
        self.ring_mem = bytearray(XEN_PAGE_SIZE)
        self.evt_mem = bytearray(XEN_PAGE_SIZE)
        self.ch = StreamChannel(self.core, memoryview(self.ring_mem), memoryview(self.evt_mem))
        self.ch.init_shared()
        self.back = BackRing(memoryview(self.ring_mem))
        self.back.attach()
        self.prod = EventProducer(memoryview(self.evt_mem))
        self.prod.attach()
        self.next_evt_id = 0

    def send(self, op: Op | str, **fields: object) -> bytes:
        raw = self.core.build(op, **fields)
        self.ch.put(raw)
        self.ch.push()
        return raw

    def answer(self, status: int = 0, *, id: int | None = None, op: int | None = None,
               **hw: int) -> None:
        """The backend consumes one request and answers it (echoing unless told)."""
        req = codec.decode_req(self.back.copy_request())
        self.respond(id=req.id if id is None else id,
                     op=req.operation if op is None else op, status=status, **hw)

    def respond(self, *, id: int, op: int, status: int = 0, **hw: int) -> None:
        self.back.put_response(codec.encode_resp(id=id, operation=op, status=status, **hw))
        self.back.push_responses()

    def event(self, position: int, id: int | None = None) -> None:
        if id is None:
            id, self.next_evt_id = self.next_evt_id, (self.next_evt_id + 1) & 0xFFFF
        assert self.prod.put(codec.CUR_POS_EVT.encode(id=id, position=position))

    def kinds(self) -> list[str]:
        return [v.kind.name for v in self.core.violations]


# -- request ids and matching -------------------------------------------------------------

def test_request_ids_count_from_zero_and_reset_like_linux() -> None:
    rig = Rig()
    ids = []
    for _ in range(3):
        ids.append(codec.decode_req(rig.send(Op.HW_PARAM_QUERY)).id)
        rig.answer()
    rig.core.reset_ids()  # ALSA hw_params (SND-B-11)
    ids.append(codec.decode_req(rig.send(Op.OPEN, **OPEN)).id)
    rig.answer()
    ids.append(codec.decode_req(rig.core.build(Op.CLOSE, id=777)).id)
    assert ids == [0, 1, 2, 0, 777]
    responses = rig.ch.consume_responses()
    assert [r.id for r in responses] == [0, 1, 2, 0]
    assert all(r.ok and r.request is not None and not r.violations for r in responses)
    assert rig.core.violations == []


def test_request_id_wraps_at_u16() -> None:
    core = StreamCore()
    core.next_id = 0xFFFF
    assert [codec.decode_req(core.build(Op.CLOSE)).id for _ in range(2)] == [0xFFFF, 0]


def test_hw_param_response_payload_and_status_name() -> None:
    rig = Rig()
    rig.send(Op.HW_PARAM_QUERY, formats=4, rates_min=8000, rates_max=48000)
    rig.answer(-22, formats=4, rates_min=44100, rates_max=48000)
    (resp,) = rig.ch.consume_responses()
    assert resp.status == "-EINVAL" and not resp.ok
    assert resp.hw_param is not None and resp.hw_param["rates_min"] == 44100
    assert rig.core.violations == []


def test_unsolicited_response() -> None:
    rig = Rig()
    rig.respond(id=5, op=Op.OPEN)
    (resp,) = rig.ch.consume_responses()
    assert resp.request is None
    # one response with no request at all also overflows the produced count
    assert rig.kinds() == ["response_prod_overflow", "unsolicited_response"]
    v = rig.core.violations[1]
    assert v.clauses == ("SND-B-08",) and v.raw == resp.raw and v.actual == 5


def test_duplicate_response() -> None:
    rig = Rig()
    rig.send(Op.CLOSE)
    rig.answer()
    rig.respond(id=0, op=Op.CLOSE)  # the same answer again
    first, second = rig.ch.consume_responses()
    assert first.request is not None and second.request is None
    assert "duplicate_response" in rig.kinds()


def test_id_not_echoed_leaves_request_outstanding() -> None:
    rig = Rig()
    rig.send(Op.TRIGGER, type=Trigger.START)
    rig.answer(id=9)
    (resp,) = rig.ch.consume_responses()
    assert resp.request is None and len(rig.core.pending) == 1  # Linux: waiter times out
    (v,) = rig.core.violations
    assert v.kind is V.ID_NOT_ECHOED and v.expected == [0] and v.actual == 9
    assert v.clauses == ("SND-B-08", "SND-B-09")


def test_operation_not_echoed_still_completes() -> None:
    rig = Rig()
    rig.send(Op.WRITE, offset=0, length=64)
    rig.answer(op=Op.READ)
    (resp,) = rig.ch.consume_responses()
    assert resp.request is not None and resp.request.operation == Op.WRITE
    (v,) = resp.violations
    assert v.kind is V.OPERATION_NOT_ECHOED and (v.expected, v.actual) == (Op.WRITE, Op.READ)


def test_late_response_after_timeout() -> None:
    rig = Rig()
    rig.send(Op.OPEN, **OPEN)
    (pending,) = rig.core.pending
    rig.core.expire(pending)
    rig.answer()
    (resp,) = rig.ch.consume_responses()
    assert resp.request is None and rig.kinds() == ["late_response"]


def test_status_checks() -> None:
    rig = Rig()
    for status in (3, -1000, -4, -95):
        rig.send(Op.CLOSE)
        rig.answer(status)
    rig.ch.consume_responses()
    assert rig.kinds() == ["positive_status", "status_not_a_xen_errno",
                           "status_xen_internal_errno"]


def test_response_prod_overflow_corrupt_index_resyncs() -> None:
    rig = Rig()
    rig.send(Op.CLOSE)
    struct.pack_into("<I", rig.ring_mem, 8, 1000)  # rsp_prod far ahead (corrupt)
    assert rig.ch.consume_responses() == []
    assert rig.kinds() == ["response_prod_overflow"]
    assert rig.ch.ring.rsp_cons == 1000


def test_more_responses_than_requests() -> None:
    rig = Rig()
    rig.send(Op.CLOSE)
    rig.answer()
    rig.respond(id=0, op=Op.CLOSE)
    rig.respond(id=1, op=Op.CLOSE)
    out = rig.ch.consume_responses()
    assert len(out) == 3 and out[0].request is not None
    assert rig.kinds().count("response_prod_overflow") == 1


def test_final_check_rearms_rsp_event() -> None:
    rig = Rig()
    rig.send(Op.CLOSE)
    rig.answer()
    rig.ch.consume_responses()
    assert struct.unpack_from("<I", rig.ring_mem, RSP_EVENT)[0] == rig.ch.ring.rsp_cons + 1


def test_pipelined_answers_out_of_order() -> None:
    rig = Rig()
    for i in range(4):
        rig.ch.put(rig.core.build(Op.TRIGGER, id=10 + i, type=0))
    rig.ch.push()
    reqs = [codec.decode_req(rig.back.copy_request()) for _ in range(4)]
    for r in reversed(reqs):
        rig.respond(id=r.id, op=r.operation)
    out = rig.ch.consume_responses()
    assert [r.request.id for r in out if r.request] == [13, 12, 11, 10]
    assert rig.core.violations == []


# -- events -------------------------------------------------------------------------------

def started(rig: Rig) -> None:
    rig.send(Op.OPEN, **OPEN)
    rig.answer()
    rig.send(Op.TRIGGER, type=Trigger.START)
    rig.answer()
    rig.ch.consume_responses()


def test_event_ring_jump() -> None:
    rig = Rig()
    struct.pack_into("<I", rig.evt_mem, 4, 500)  # in_prod 500 past in_cons 0
    assert rig.ch.consume_events() == []
    (v,) = rig.core.violations
    assert v.kind is V.EVENT_RING_JUMP and v.actual == 500
    assert rig.ch.events.in_cons == 500 and rig.ch.evt_abs == 500


def test_event_id_gap_and_linux_skips() -> None:
    rig = Rig()
    started(rig)
    rig.event(4096, id=0)
    rig.event(8192, id=2)  # gap: 1 missing
    rig.event(12288, id=3)
    evs = rig.ch.consume_events()
    assert [e.linux_skips for e in evs] == [False, True, True]
    assert [e.expected_id for e in evs] == [0, 1, 2]
    (v,) = rig.core.violations
    assert v.kind is V.EVENT_ID_GAP and (v.expected, v.actual) == (1, 2)
    assert rig.core.linux_skipped == 2


def test_ids_restarting_at_open_is_a_gap() -> None:
    rig = Rig()
    started(rig)
    rig.event(4096, id=0)
    rig.event(8192, id=1)
    rig.ch.consume_events()
    rig.send(Op.TRIGGER, type=Trigger.STOP)
    rig.answer()
    rig.send(Op.CLOSE)
    rig.answer()
    rig.ch.consume_responses()
    started(rig)
    rig.event(4096, id=0)  # a backend that resets ids at OPEN (AMBIG-1)
    (ev,) = rig.ch.consume_events()
    assert ev.linux_skips and rig.kinds() == ["event_id_gap"]


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0xFF00, 0xFFFF), n=st.integers(1, 300),
       gaps=st.lists(st.tuples(st.integers(0, 299), st.integers(1, 5)), max_size=3))
def test_event_ids_across_the_u16_wrap(start: int, n: int,
                                       gaps: list[tuple[int, int]]) -> None:
    """A continuous sequence across 0xFFFF -> 0 is clean; each gap is recorded once, and
    Linux skips every event whose id differs from its running counter."""
    core = StreamCore(first_event_id=start)
    core.sent(core.build(Op.TRIGGER, type=0), 0)
    skip = dict(gaps)
    ids, cur = [], start
    for i in range(n):
        cur = (cur + skip.get(i, 0)) & 0xFFFF
        ids.append(cur)
        cur = (cur + 1) & 0xFFFF
    infos = []
    for i, eid in enumerate(ids):
        infos.append(core.on_event(codec.CUR_POS_EVT.encode(id=eid, position=4 * i), i))
    n_gaps = sum(1 for i in range(n) if skip.get(i, 0))
    assert [v.kind for v in core.violations] == [V.EVENT_ID_GAP] * n_gaps
    linux = [(start + i) & 0xFFFF for i in range(n)]
    assert [e.linux_skips for e in infos] == [a != b for a, b in zip(ids, linux, strict=True)]
    assert core.evt_expected == (start + n) & 0xFFFF


def test_unknown_event_type_counts_id_but_is_ignored() -> None:
    rig = Rig()
    started(rig)
    rig.prod.put(codec.EVT.encode(id=0, type=7))
    rig.event(4096, id=1)
    a, b = rig.ch.consume_events()
    assert a.position is None and not a.linux_skips and not b.linux_skips
    assert rig.core.violations == []


def test_position_tracking_period_elapsed_strictly_greater() -> None:
    tr = PositionTracker(frame_size=4, buffer_frames=16384, period_frames=1024)
    # exactly one period per event: ALSA woken on every other event (SND-E-05)
    assert [tr.update(4096 * k)[1] for k in range(1, 7)] == [False, True, False, True,
                                                             False, True]
    assert tr.hw_ptr == 6 * 1024 and tr.out_frames == 0
    tr.update(4096 * 6 + 4100)  # 1025 frames: > period
    assert tr.periods_elapsed == 4 and tr.out_frames == 1


def test_hw_ptr_wraps_modulo_buffer() -> None:
    tr = PositionTracker(frame_size=4, buffer_frames=1000, period_frames=100)
    tr.update(4 * 2500)
    assert tr.hw_ptr == 500


def test_position_backwards_and_not_whole_frames() -> None:
    rig = Rig()
    started(rig)
    rig.event(8192)
    rig.event(4096)
    rig.event(4098)
    evs = rig.ch.consume_events()
    assert rig.kinds() == ["position_backwards", "position_not_whole_frames"]
    assert evs[1].violations[0].clauses == ("SND-E-03",)


def test_positions_reset_at_open() -> None:
    rig = Rig()
    started(rig)
    rig.event(65536)
    rig.ch.consume_events()
    rig.send(Op.TRIGGER, type=Trigger.STOP)
    rig.answer()
    rig.send(Op.CLOSE)
    rig.answer()
    rig.ch.consume_responses()
    rig.core.reset_ids()
    started(rig)
    rig.event(4096)  # starts again from 0 after the new OPEN: not backwards
    (ev,) = rig.ch.consume_events()
    assert rig.core.violations == [] and ev.hw_ptr == 1024


def test_event_before_start() -> None:
    rig = Rig()
    rig.send(Op.OPEN, **OPEN)
    rig.answer()
    rig.ch.consume_responses()
    rig.event(0)
    rig.ch.consume_events()
    assert rig.kinds() == ["event_before_start"]


def test_event_before_start_response_is_fine() -> None:
    """SND-E-09: CUR_POS may precede the START response."""
    rig = Rig()
    rig.send(Op.OPEN, **OPEN)
    rig.answer()
    rig.send(Op.TRIGGER, type=Trigger.START)
    rig.event(4096)
    rig.ch.consume_events()
    rig.answer()
    rig.ch.consume_responses()
    assert rig.core.violations == [] and rig.core.phase is Phase.RUNNING


def test_in_flight_event_before_stop_response_is_fine_but_later_is_not() -> None:
    rig = Rig()
    started(rig)
    rig.send(Op.TRIGGER, type=Trigger.STOP)
    rig.event(4096)  # produced before the STOP answer
    rig.answer()
    rig.ch.consume_responses()
    rig.event(8192)  # produced after we consumed the STOP answer
    evs = rig.ch.consume_events()
    assert [bool(e.violations) for e in evs] == [False, True]
    assert rig.kinds() == ["event_while_stopped"]


def test_reopen_while_running_judges_earlier_events_by_the_running_period() -> None:
    """An OPEN sent while running: CUR_POS the backend wrote before it took the OPEN (before
    its response) are the running period's, not the new one's (period 0, not started)."""
    rig = Rig()
    started(rig)
    rig.event(4096)
    rig.send(Op.OPEN, **{**OPEN, "period_sz": 0})
    rig.event(8192)  # still the old run: the backend has not taken the OPEN yet
    assert [e.violations for e in rig.ch.consume_events()] == [(), ()]
    rig.answer()
    rig.ch.consume_responses()
    assert rig.core.violations == [] and rig.core.phase is Phase.OPENED
    rig.event(0)  # after the OPEN's response: the new period, not started
    rig.ch.consume_events()
    assert rig.kinds() == ["event_before_start"]


def test_event_while_paused_and_after_close() -> None:
    rig = Rig()
    started(rig)
    rig.send(Op.TRIGGER, type=Trigger.PAUSE)
    rig.answer()
    rig.ch.consume_responses()
    rig.event(4096)
    rig.ch.consume_events()
    rig.send(Op.CLOSE)
    rig.answer()
    rig.ch.consume_responses()
    rig.event(8192)
    rig.ch.consume_events()
    assert rig.kinds() == ["event_while_stopped", "event_after_close"]
    assert rig.core.violations[1].kind.level == "MUST"


def test_failed_start_returns_to_previous_phase() -> None:
    rig = Rig()
    rig.send(Op.OPEN, **OPEN)
    rig.answer()
    rig.send(Op.TRIGGER, type=Trigger.START)
    rig.answer(-22)
    rig.ch.consume_responses()
    rig.event(4096)
    rig.ch.consume_events()
    assert rig.core.phase is Phase.OPENED and rig.kinds() == ["event_before_start"]


def test_event_with_period_zero() -> None:
    rig = Rig()
    rig.send(Op.OPEN, **{**OPEN, "period_sz": 0})
    rig.answer()
    rig.send(Op.TRIGGER, type=Trigger.START)
    rig.answer()
    rig.ch.consume_responses()
    rig.event(4096)
    rig.ch.consume_events()
    assert rig.kinds() == ["event_with_period_sz_0"]


def test_fail_all_releases_pending() -> None:
    rig = Rig()
    rig.send(Op.CLOSE)
    rig.send(Op.CLOSE)
    assert len(rig.core.fail_all()) == 2 and rig.core.pending == []


def test_every_violation_kind_cites_a_clause() -> None:
    assert len(V.ALL_KINDS) >= 15
    for kind in V.ALL_KINDS:
        assert kind.clauses and all(c.startswith("SND-") for c in kind.clauses)
        assert kind.level in ("MUST", "SHOULD", "REF")
