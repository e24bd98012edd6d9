"""Ring mechanics of ring.h and the event page, including the u32 wrap (SND-B-01..B-14)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.rings import (
    BackRing,
    EventConsumer,
    EventProducer,
    FrontRing,
    RingError,
    event_slot_offset,
    notify_needed,
    u32,
)
from protocol_models.constants import XENSND_IN_RING_LEN, XENSND_RING_SIZE

NEAR_WRAP = st.one_of(st.integers(0, 100), st.integers(2**32 - 100, 2**32 - 1))


def msg(n: int) -> bytes:
    return struct.pack("<I", u32(n)) + bytes(60)


def pair(start: int) -> tuple[FrontRing, BackRing, memoryview]:
    page = memoryview(bytearray(4096))
    front = FrontRing(page)
    front.init_shared(start)
    back = BackRing(page)
    back.attach()
    return front, back, page


def test_shared_ring_init_layout():
    _, _, page = pair(0)
    assert struct.unpack_from("<IIII", page) == (0, 1, 0, 1)  # SHARED_RING_INIT
    assert bytes(page[16:64]) == bytes(48)


@pytest.mark.parametrize(("old", "new", "event", "expected"), [
    (0, 1, 1, True), (0, 1, 2, False), (5, 9, 9, True), (5, 9, 5, False),
    (2**32 - 1, 0, 0, True), (2**32 - 2, 1, 2**32 - 1, True), (2**32 - 2, 1, 2, False),
])
def test_notify_hold_off(old, new, event, expected):
    assert notify_needed(old, new, event) is expected


@settings(max_examples=200, deadline=None)
@given(start=NEAR_WRAP, batches=st.lists(st.integers(1, XENSND_RING_SIZE), max_size=30))
def test_no_lost_wakeup_across_wrap(start, batches):
    """A backend that sleeps until notified, re-arming with FINAL_CHECK, sees every request;
    the frontend, notified by the same rule, sees every response in order."""
    front, back, _ = pair(start)
    sent = got_by_back = got_by_front = 0
    back_wake = front_wake = True  # both look once at start
    for batch in batches:
        for _ in range(batch):
            front.put_request(msg(sent))
            sent += 1
        back_wake |= front.push_requests()
        while back_wake:
            back_wake = False
            while back.unconsumed_requests():
                req = back.copy_request()
                assert struct.unpack_from("<I", req)[0] == u32(got_by_back)
                got_by_back += 1
                back.put_response(req)
            front_wake |= back.push_responses()
            back_wake = back.final_check_for_requests()
        assert got_by_back == sent, "a request was left without a wakeup"
        while front_wake:
            front_wake = False
            while front.unconsumed_responses():
                rsp = front.get_response()
                assert struct.unpack_from("<I", rsp)[0] == u32(got_by_front)
                got_by_front += 1
            front_wake = front.final_check_for_responses()
        assert got_by_front == sent, "a response was left without a wakeup"
        assert front.free_requests() == XENSND_RING_SIZE


@given(start=NEAR_WRAP, excess=st.integers(1, 1000))
def test_request_prod_overflow_detected(start, excess):
    front, back, _ = pair(start)
    front.set_req_prod(start + XENSND_RING_SIZE + excess)
    with pytest.raises(RingError, match="req_prod"):
        back.check_request_overflow()


@given(start=NEAR_WRAP)
def test_full_ring_is_not_overflow(start):
    front, back, _ = pair(start)
    for i in range(XENSND_RING_SIZE):
        front.put_request(msg(i))
    front.push_requests()
    assert back.check_request_overflow() == u32(start + XENSND_RING_SIZE)
    assert back.unconsumed_requests() == XENSND_RING_SIZE
    assert front.free_requests() == 0


@given(start=NEAR_WRAP, excess=st.integers(1, 1000))
def test_response_prod_overflow_detected(start, excess):
    front, _, page = pair(start)
    struct.pack_into("<I", page, 8, u32(start + XENSND_RING_SIZE + excess))
    with pytest.raises(RingError, match="rsp_prod"):
        front.check_response_overflow()


def test_event_slots_jump_at_the_u32_wrap():
    # 2**32 mod 63 == 4: slot 3 (0xFFFFFFFF % 63) is followed by slot 0 (clauses.md 2.4).
    assert event_slot_offset(0xFFFFFFFF) == 64 + 3 * 64
    assert event_slot_offset(0x100000000) == 64
    assert event_slot_offset(62) == 64 + 62 * 64
    assert event_slot_offset(63) == 64


@settings(max_examples=200, deadline=None)
@given(start=NEAR_WRAP, bursts=st.lists(st.integers(0, 80), max_size=20))
def test_events_in_order_across_wrap_and_never_overwritten(start, bursts):
    page = memoryview(bytearray(4096))
    cons = EventConsumer(page)
    cons.init_shared(start)
    prod = EventProducer(page)
    prod.attach()
    produced = consumed = 0
    for burst in bursts:
        for _ in range(burst):
            if prod.put(msg(produced)):
                produced += 1
            else:  # refused only when full, or when the wrap makes slots collide
                assert cons.pending() == XENSND_IN_RING_LEN or cons.in_cons > prod.in_prod
        for ev in cons.take_all():
            assert struct.unpack_from("<I", ev)[0] == u32(consumed)
            consumed += 1
        assert consumed == produced


def test_event_index_jump_is_reported_and_resynchronised():
    page = memoryview(bytearray(4096))
    cons = EventConsumer(page)
    cons.init_shared(10)
    struct.pack_into("<I", page, 4, 10 + XENSND_IN_RING_LEN + 1)
    with pytest.raises(RingError, match="jumped 64"):
        cons.take_all()
    assert cons.pending() == 0


def test_wrong_message_size_refused():
    front, back, _ = pair(0)
    with pytest.raises(ValueError, match="64 bytes, not 63"):
        front.put_request(bytes(63))
    with pytest.raises(ValueError, match="64 bytes, not 65"):
        back.put_response(bytes(65))


def test_wrap_slot_collision_is_refused_not_overwritten():
    """Indices 2**32-5 and 2**32 share slot 0: with 61 events outstanding across the wrap,
    the next event must wait although the index difference says the ring has room."""
    page = memoryview(bytearray(4096))
    cons = EventConsumer(page)
    start = 2**32 - 61
    cons.init_shared(start)
    prod = EventProducer(page)
    prod.attach()
    for i in range(61):
        assert prod.put(msg(i))
    assert prod.free_slots() == 2
    assert prod.slot_busy()
    assert not prod.put(msg(61))
    assert [struct.unpack_from("<I", e)[0] for e in cons.take_all()] == list(range(61))
    assert prod.put(msg(61))


@given(start=NEAR_WRAP, extra=st.integers(1, 5))
def test_back_ring_room_uses_ring_h_unsigned_arithmetic(start, extra):
    """A backend that answered more than it consumed (answering twice) still sees the
    requests waiting: RING_SIZE - (req_cons - rsp_prod_pvt) wraps in C, it is not 0."""
    front, back, _ = pair(start)
    for i in range(3):
        front.put_request(msg(i))
    front.push_requests()
    back.copy_request()
    for _ in range(1 + extra):
        back.put_response(msg(0))
    assert back.unconsumed_requests() == 2
