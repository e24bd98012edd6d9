"""Xen shared-ring mechanics (``io/ring.h``) and the sndif event page, over a memoryview.

Pure index arithmetic plus loads/stores into the shared page: no I/O, no clock. Both the
reference frontend (producer of requests, consumer of events) and the reference backend
(the other two roles) use these, so the notification hold-off is written exactly once.
Indices are free-running u32 (SND-B-10): every difference is taken modulo 2**32.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol_models import codec
from protocol_models.constants import (
    XENSND_IN_RING_LEN,
    XENSND_IN_RING_OFFS,
    XENSND_MSG_SIZE,
    XENSND_RING_SIZE,
)

MASK32 = 0xFFFFFFFF
_U32 = struct.Struct("<I")

# Field offsets come from the models (checked against sndif.h by the header cross-check).
_RING = {f.name: f.offset for f in codec.RING_HEADER.fields}
_EVT_PAGE = {f.name: f.offset for f in codec.EVENT_PAGE_HEADER.fields}
REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT = (
    _RING[n] for n in ("req_prod", "req_event", "rsp_prod", "rsp_event"))
RING_HEADER_SIZE = codec.RING_HEADER.size
IN_CONS, IN_PROD = _EVT_PAGE["in_cons"], _EVT_PAGE["in_prod"]


def u32(value: int) -> int:
    return value & MASK32


def _get(page: memoryview, off: int) -> int:
    value: int = _U32.unpack_from(page, off)[0]
    return value


def _put(page: memoryview, off: int, value: int) -> None:
    _U32.pack_into(page, off, value & MASK32)


def notify_needed(old: int, new: int, event: int) -> bool:
    """ring.h's hold-off test: notify iff ``event`` lies in ``(old, new]`` (u32)."""
    return u32(new - event) < u32(new - old)


class RingError(Exception):
    """The peer broke the ring protocol (an overflowing index): SND-B-04, B-08, G-06."""


def _slot(page: memoryview, idx: int) -> memoryview:
    off = RING_HEADER_SIZE + (idx & (XENSND_RING_SIZE - 1)) * XENSND_MSG_SIZE
    return page[off:off + XENSND_MSG_SIZE]


@dataclass
class FrontRing:
    """The frontend side of the request ring: produces requests, consumes responses."""

    page: memoryview
    req_prod_pvt: int = 0
    rsp_cons: int = 0

    def init_shared(self, start: int = 0) -> None:
        """SHARED_RING_INIT (SND-B-01), optionally with indices started at ``start`` so the
        u32 wrap can be exercised; zeroes the header's pvt and padding."""
        self.page[:RING_HEADER_SIZE] = bytes(RING_HEADER_SIZE)
        start = u32(start)
        _put(self.page, REQ_PROD, start)
        _put(self.page, RSP_PROD, start)
        _put(self.page, REQ_EVENT, start + 1)
        _put(self.page, RSP_EVENT, start + 1)
        self.req_prod_pvt = self.rsp_cons = start

    @property
    def outstanding(self) -> int:
        return u32(self.req_prod_pvt - self.rsp_cons)

    def free_requests(self) -> int:
        return XENSND_RING_SIZE - self.outstanding

    def put_request(self, msg: bytes) -> int:
        """Write a 64-byte request into the next private slot; returns its index."""
        if len(msg) != XENSND_MSG_SIZE:
            raise ValueError(f"a request is {XENSND_MSG_SIZE} bytes, not {len(msg)}")
        idx = self.req_prod_pvt
        _slot(self.page, idx)[:] = msg
        self.req_prod_pvt = u32(idx + 1)
        return idx

    def push_requests(self) -> bool:
        """RING_PUSH_REQUESTS_AND_CHECK_NOTIFY (SND-B-02); True when to notify."""
        old = _get(self.page, REQ_PROD)
        new = self.req_prod_pvt
        _put(self.page, REQ_PROD, new)
        return notify_needed(old, new, _get(self.page, REQ_EVENT))

    def set_req_prod(self, value: int) -> None:
        """Publish an arbitrary req_prod (raw API for suites: lie about the index)."""
        _put(self.page, REQ_PROD, value)

    @property
    def rsp_prod(self) -> int:
        return _get(self.page, RSP_PROD)

    def unconsumed_responses(self) -> int:
        return u32(self.rsp_prod - self.rsp_cons)

    def check_response_overflow(self) -> None:
        """RING_RESPONSE_PROD_OVERFLOW: the backend produced more than it could have."""
        prod = self.rsp_prod
        if u32(prod - self.rsp_cons) > XENSND_RING_SIZE:
            raise RingError(f"rsp_prod {prod} is {u32(prod - self.rsp_cons)} past rsp_cons "
                            f"{self.rsp_cons} (ring size {XENSND_RING_SIZE})")

    def get_response(self) -> bytes:
        msg = bytes(_slot(self.page, self.rsp_cons))
        self.rsp_cons = u32(self.rsp_cons + 1)
        return msg

    def final_check_for_responses(self) -> bool:
        """RING_FINAL_CHECK_FOR_RESPONSES (SND-B-06): re-arm rsp_event, then re-check."""
        if self.unconsumed_responses():
            return True
        _put(self.page, RSP_EVENT, self.rsp_cons + 1)
        return bool(self.unconsumed_responses())


@dataclass
class BackRing:
    """The backend side of the request ring: consumes requests, produces responses."""

    page: memoryview
    req_cons: int = 0
    rsp_prod_pvt: int = 0

    def attach(self) -> None:
        """BACK_RING_ATTACH at the current shared indices (the frontend initialised them)."""
        self.req_cons = self.rsp_prod_pvt = _get(self.page, RSP_PROD)

    @property
    def req_prod(self) -> int:
        return _get(self.page, REQ_PROD)

    def check_request_overflow(self) -> int:
        """RING_REQUEST_PROD_OVERFLOW (SND-B-04, G-06): returns req_prod, or raises."""
        prod = self.req_prod
        if u32(prod - self.rsp_prod_pvt) > XENSND_RING_SIZE:
            raise RingError(f"req_prod {prod} is {u32(prod - self.rsp_prod_pvt)} past "
                            f"rsp_prod {self.rsp_prod_pvt} (ring size {XENSND_RING_SIZE})")
        return prod

    def unconsumed_requests(self) -> int:
        """RING_HAS_UNCONSUMED_REQUESTS: bounded by the free response slots, in ring.h's
        unsigned arithmetic (a backend that produced more responses than it consumed
        requests gets a wrapped, large bound, and goes on consuming, as C does)."""
        reqs = u32(self.req_prod - self.req_cons)
        room = u32(XENSND_RING_SIZE - u32(self.req_cons - self.rsp_prod_pvt))
        return min(reqs, room)

    def copy_request(self) -> bytes:
        """RING_COPY_REQUEST: the request is copied out before use (no double fetch)."""
        msg = bytes(_slot(self.page, self.req_cons))
        self.req_cons = u32(self.req_cons + 1)
        return msg

    def put_response(self, msg: bytes) -> int:
        if len(msg) != XENSND_MSG_SIZE:
            raise ValueError(f"a response is {XENSND_MSG_SIZE} bytes, not {len(msg)}")
        idx = self.rsp_prod_pvt
        _slot(self.page, idx)[:] = msg
        self.rsp_prod_pvt = u32(idx + 1)
        return idx

    def push_responses(self) -> bool:
        """RING_PUSH_RESPONSES_AND_CHECK_NOTIFY (SND-B-05); True when to notify."""
        old = _get(self.page, RSP_PROD)
        new = self.rsp_prod_pvt
        _put(self.page, RSP_PROD, new)
        return notify_needed(old, new, _get(self.page, RSP_EVENT))

    def final_check_for_requests(self) -> bool:
        """RING_FINAL_CHECK_FOR_REQUESTS (SND-B-03): re-arm req_event, then re-check."""
        if self.unconsumed_requests():
            return True
        _put(self.page, REQ_EVENT, self.req_cons + 1)
        return bool(self.unconsumed_requests())


def event_slot_offset(idx: int) -> int:
    """Byte offset of event index ``idx`` (XENSND_IN_RING_REF: u32 index modulo 63)."""
    return XENSND_IN_RING_OFFS + (u32(idx) % XENSND_IN_RING_LEN) * XENSND_MSG_SIZE


@dataclass
class EventProducer:
    """The backend side of the event page (SND-B-13): it writes only in_prod."""

    page: memoryview
    in_prod: int = 0

    def attach(self) -> None:
        self.in_prod = _get(self.page, IN_PROD)

    @property
    def in_cons(self) -> int:
        return _get(self.page, IN_CONS)

    def free_slots(self) -> int:
        return XENSND_IN_RING_LEN - u32(self.in_prod - self.in_cons)

    def slot_busy(self) -> bool:
        """Whether in_prod's slot still holds an unconsumed event.

        Besides a full ring this happens at the u32 wrap: 2**32 mod 63 == 4, so with more
        than 59 events outstanding across the wrap two live indices share a slot (sndif.h's
        XENSND_IN_RING_REF arithmetic). Checking the index difference alone would overwrite
        an event the frontend has not read.
        """
        cons, prod = self.in_cons, self.in_prod
        if u32(prod - cons) >= XENSND_IN_RING_LEN:
            return True
        if cons <= prod:  # the live range does not cross the wrap: slots are distinct
            return False
        slot = prod % XENSND_IN_RING_LEN
        return any(u32(cons + i) % XENSND_IN_RING_LEN == slot
                   for i in range(u32(prod - cons)))

    def put(self, msg: bytes) -> bool:
        """Write one event and publish in_prod; False (nothing written) when its slot is
        still unconsumed (SND-B-13: never overwrite)."""
        if len(msg) != XENSND_MSG_SIZE:
            raise ValueError(f"an event is {XENSND_MSG_SIZE} bytes, not {len(msg)}")
        if self.slot_busy():
            return False
        off = event_slot_offset(self.in_prod)
        self.page[off:off + XENSND_MSG_SIZE] = msg
        self.in_prod = u32(self.in_prod + 1)
        _put(self.page, IN_PROD, self.in_prod)
        return True


@dataclass
class EventConsumer:
    """The frontend side of the event page (SND-B-14): it writes only in_cons."""

    page: memoryview

    def init_shared(self, start: int = 0) -> None:
        """The page as Linux hands it over: zeroed (SND-B-17), or indices at ``start``."""
        self.page[:] = bytes(len(self.page))
        _put(self.page, IN_CONS, start)
        _put(self.page, IN_PROD, start)

    @property
    def in_cons(self) -> int:
        return _get(self.page, IN_CONS)

    @property
    def in_prod(self) -> int:
        return _get(self.page, IN_PROD)

    def pending(self) -> int:
        return u32(self.in_prod - self.in_cons)

    def take_all(self) -> list[bytes]:
        """Read every event in ``[in_cons, in_prod)`` and publish in_cons.

        Raises RingError when in_prod ran more than a ring's length ahead (the backend
        overwrote events the frontend had not consumed); the caller records a violation.
        """
        cons, prod = self.in_cons, self.in_prod
        count = u32(prod - cons)
        if count > XENSND_IN_RING_LEN:
            _put(self.page, IN_CONS, prod)  # resynchronise so the stream can go on
            raise RingError(f"in_prod {prod} jumped {count} past in_cons {cons} "
                            f"(event ring holds {XENSND_IN_RING_LEN})")
        out = []
        for i in range(count):
            off = event_slot_offset(cons + i)
            out.append(bytes(self.page[off:off + XENSND_MSG_SIZE]))
        _put(self.page, IN_CONS, prod)
        return out
