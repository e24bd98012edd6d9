"""One stream's transport, sans-IO: the request ring and event page (mapped memoryviews)
bound to a :class:`StreamCore`. The driver maps the pages, binds the ports, and notifies
when these functions say so."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from harness.rings import IN_PROD, BackRing, EventProducer, event_slot_offset, u32
from protocol_models import codec
from protocol_models.constants import XENSND_IN_RING_LEN, Op

from .stream import StreamCore

#: Requests served per call before yielding to other streams (a flooding FE must not
#: starve the rest); the driver comes back at once when ``more`` is set.
MAX_REQUESTS_PER_SERVICE = 4 * 32

#: Defect "lose-request-under-load": requests queued beyond this are lost.
LOAD_LIMIT = 4

RequestHook = Callable[[bytes, bytes], None]
EventHook = Callable[[bytes], None]


@dataclass
class ServiceResult:
    handled: int
    notify: bool
    more: bool


@dataclass
class StreamChannel:
    core: StreamCore
    ring: BackRing
    events: EventProducer
    on_request: RequestHook | None = None  # (request, response), for the trace
    on_event: EventHook | None = None
    hung: bool = False  # defect "hang-on-hw-query" fired: the ring is never served again

    def service(self, now_ns: int) -> ServiceResult:
        """Consume every request, answer each (B-04, B-05, B-08), re-arm the hold-off with
        RING_FINAL_CHECK_FOR_REQUESTS before going idle (B-03). Raises ``RingError`` on an
        overflowing req_prod (G-06): the caller treats the FE as failed (A-19)."""
        defects = self.core.defects
        handled, notify = 0, False
        if self.hung:
            return ServiceResult(0, False, False)
        while True:
            self.ring.check_request_overflow()
            batch: list[bytes] = []
            while self.ring.unconsumed_requests():
                if handled >= MAX_REQUESTS_PER_SERVICE:
                    notify |= self.ring.push_responses()
                    return ServiceResult(handled, notify, True)
                lose = (defects.has("lose-request-under-load")
                        and self.ring.unconsumed_requests() > LOAD_LIMIT)
                req = self.ring.copy_request()  # copied before use (no double fetch)
                handled += 1
                if lose:
                    continue  # B-08: every request gets a response
                if (defects.has("hang-on-hw-query")
                        and codec.decode_req(req).operation == Op.HW_PARAM_QUERY):
                    self.hung = True  # G-07: never hang; the process itself lives on
                    return ServiceResult(handled, False, False)
                resp = self.core.handle(req, now_ns)
                if resp is None:
                    continue  # defect "unknown-op-no-response"
                if defects.has("responses-out-of-order"):
                    batch.insert(0, resp)  # B-08 (AMBIG-11): answered in reverse
                else:
                    self.ring.put_response(resp)
                if defects.has("duplicate-response"):
                    self.ring.put_response(resp)  # B-08: exactly one response per request
                if self.on_request is not None:
                    self.on_request(req, resp)
            for resp in batch:
                self.ring.put_response(resp)
            if defects.has("no-notify-after-response"):
                self.ring.push_responses()  # B-05: published, but the FE is not told
            else:
                notify |= self.ring.push_responses()
            if defects.has("no-req-event-rearm"):
                if not self.ring.unconsumed_requests():  # B-03: req_event never moves
                    return ServiceResult(handled, notify, False)
            elif not self.ring.final_check_for_requests():
                return ServiceResult(handled, notify, False)

    def flush_events(self, now_ns: int) -> int:
        """Write the CUR_POS events due, never over an unconsumed slot (B-13); returns how
        many were written (the caller notifies evt-event-channel when > 0)."""
        overwrite = self.core.defects.has("event-overwrites-unconsumed")
        room = XENSND_IN_RING_LEN if overwrite else self.events.free_slots()
        due = self.core.pending_events(now_ns, room)
        sent: list[tuple[int, int]] = []
        for evt_id, pos in due:
            msg = self.core.encode_event(evt_id, pos)
            if overwrite:
                self._put_over_unconsumed(msg)
            elif not self.events.put(msg):
                break
            sent.append((evt_id, pos))
            if self.on_event is not None:
                self.on_event(msg)
        self.core.commit_events(sent)
        return len(sent)

    def _put_over_unconsumed(self, msg: bytes) -> None:
        """Defect "event-overwrites-unconsumed": in_cons is never looked at (B-13)."""
        off = event_slot_offset(self.events.in_prod)
        self.events.page[off:off + len(msg)] = msg
        self.events.in_prod = u32(self.events.in_prod + 1)
        struct.pack_into("<I", self.events.page, IN_PROD, self.events.in_prod)

    def blocked(self, now_ns: int) -> bool:
        """Events are due but the event ring has no room (the FE is not consuming)."""
        return bool(self.core.pending_events(now_ns, 1)) and (
            self.events.free_slots() <= 0 or self.events.slot_busy())
