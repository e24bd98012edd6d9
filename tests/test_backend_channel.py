"""Ring service of the reference backend over a real ring page (SND-B-03..B-08, G-06)."""

from __future__ import annotations

import pytest
from test_backend_pacing import make_channel

from harness.backends.reference.channel import MAX_REQUESTS_PER_SERVICE
from harness.rings import RSP_EVENT, RingError, u32
from protocol_models import codec
from protocol_models.constants import Op


def test_each_request_gets_one_response_in_order_and_the_hold_off_is_rearmed():
    ch, _, front, _ = make_channel()
    for i in range(5):
        front.put_request(codec.encode_req(Op.CLOSE, id=100 + i))
    assert front.push_requests()  # req_event was 1: the BE must be told
    result = ch.service(0)
    assert (result.handled, result.more) == (5, False)
    assert result.notify  # rsp_event was 1 (SHARED_RING_INIT)
    ids = [codec.decode_resp(front.get_response()).id for _ in range(5)]
    assert ids == [100, 101, 102, 103, 104]
    # B-03: req_event = req_cons + 1, so the next single request notifies (Linux, B-03)
    front.put_request(codec.encode_req(Op.CLOSE, id=7))
    assert front.push_requests()


def test_no_notify_when_the_frontend_did_not_ask():
    ch, _, front, _ = make_channel()
    struct_off = RSP_EVENT
    front.page[struct_off:struct_off + 4] = (1000).to_bytes(4, "little")  # far ahead
    front.put_request(codec.encode_req(Op.CLOSE))
    front.push_requests()
    assert not ch.service(0).notify
    assert front.unconsumed_responses() == 1


def test_request_prod_overflow_is_an_unrecoverable_frontend_error():
    ch, _, front, _ = make_channel()
    front.set_req_prod(33)  # 33 past rsp_prod: more than a ring (G-06)
    with pytest.raises(RingError):
        ch.service(0)


def test_indices_across_the_u32_wrap():
    ch, _, front, _ = make_channel()
    front.init_shared(0xFFFF_FFF0)
    ch.ring.attach()
    for i in range(32):
        front.put_request(codec.encode_req(Op.CLOSE, id=i))
    front.push_requests()
    assert ch.service(0).handled == 32
    assert [codec.decode_resp(front.get_response()).id for _ in range(32)] == list(range(32))
    assert front.rsp_cons == u32(0xFFFF_FFF0 + 32)


def test_a_flooding_frontend_is_served_in_bounded_slices():
    """A FE that refills the ring while the BE serves it must not keep the BE in one
    service call forever (other streams, pacing and SIGTERM would starve)."""
    ch, _, front, _ = make_channel()

    def refill(req: bytes, resp: bytes) -> None:  # runs "concurrently" with the BE
        while front.unconsumed_responses():
            front.get_response()
        front.put_request(codec.encode_req(Op.CLOSE))
        front.push_requests()

    ch.on_request = refill
    front.put_request(codec.encode_req(Op.CLOSE))
    front.push_requests()
    result = ch.service(0)
    assert result.handled == MAX_REQUESTS_PER_SERVICE and result.more
