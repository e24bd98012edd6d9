"""One stream's transport, sans-IO: the request ring and event page (mapped memoryviews)
bound to a :class:`StreamCore`. The driver maps the pages, binds the ports, and notifies
when these functions say so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.rings import BackRing, EventProducer

from .stream import StreamCore

#: Requests served per call before yielding to other streams (a flooding FE must not
#: starve the rest); the driver comes back at once when ``more`` is set.
MAX_REQUESTS_PER_SERVICE = 4 * 32

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

    def service(self, now_ns: int) -> ServiceResult:
        """Consume every request, answer each (B-04, B-05, B-08), re-arm the hold-off with
        RING_FINAL_CHECK_FOR_REQUESTS before going idle (B-03). Raises ``RingError`` on an
        overflowing req_prod (G-06): the caller treats the FE as failed (A-19)."""
        handled, notify = 0, False
        while True:
            self.ring.check_request_overflow()
            while self.ring.unconsumed_requests():
                if handled >= MAX_REQUESTS_PER_SERVICE:
                    notify |= self.ring.push_responses()
                    return ServiceResult(handled, notify, True)
                req = self.ring.copy_request()  # copied before use (no double fetch)
                resp = self.core.handle(req, now_ns)
                self.ring.put_response(resp)
                handled += 1
                if self.on_request is not None:
                    self.on_request(req, resp)
            notify |= self.ring.push_responses()
            if not self.ring.final_check_for_requests():
                return ServiceResult(handled, notify, False)

    def flush_events(self, now_ns: int) -> int:
        """Write the CUR_POS events due, never over an unconsumed slot (B-13); returns how
        many were written (the caller notifies evt-event-channel when > 0)."""
        due = self.core.pending_events(now_ns, self.events.free_slots())
        sent: list[tuple[int, int]] = []
        for evt_id, pos in due:
            msg = self.core.encode_event(evt_id, pos)
            if not self.events.put(msg):
                break
            sent.append((evt_id, pos))
            if self.on_event is not None:
                self.on_event(msg)
        self.core.commit_events(sent)
        return len(sent)

    def blocked(self, now_ns: int) -> bool:
        """Events are due but the event ring has no room (the FE is not consuming)."""
        return bool(self.core.pending_events(now_ns, 1)) and (
            self.events.free_slots() <= 0 or self.events.slot_busy())
