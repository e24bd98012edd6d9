"""Sans-IO per-stream protocol core of the reference frontend.

:class:`StreamCore` is pure: request bytes out, response and event bytes in, with the
bookkeeping the Linux frontend does (request ids B-11, matching by id B-09, event ids E-04,
positions E-03/E-05) plus every check Linux skips, recorded as :class:`Violation` s and
never raised. :class:`StreamChannel` binds a core to the two shared pages (request ring and
event page) with :mod:`harness.rings`: still no syscalls, so tests run on bytearrays; the
driver adds event channels, threads and clocks.

Event legality (E-06) is judged in "event-index time": a state change is stamped with the
event producer's index at the moment it became visible (a START when it is pushed, a STOP,
PAUSE or CLOSE when its response is consumed). An event at index ``i`` is judged by the last
change stamped ``<= i``, so an event the backend produced before it saw our START, or
before it answered STOP, is never a false positive.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from harness.rings import REQ_PROD, EventConsumer, FrontRing, RingError, u32
from protocol_models import codec
from protocol_models.constants import (
    XEN_INTERNAL_ERRNOS,
    XENSND_RING_SIZE,
    Evt,
    Op,
    Trigger,
    XenErrno,
    frame_size,
    status_name,
)

from . import violations as V
from .violations import Violation

U16 = 0xFFFF
U64 = (1 << 64) - 1
HW_PARAM_FIELDS = ("formats", "rates_min", "rates_max", "channels_min", "channels_max",
                   "buffer_min", "buffer_max", "period_min", "period_max")
#: How many answered / timed-out requests are remembered to classify stray responses.
_HISTORY = 64


class Phase(enum.Enum):
    """What the frontend has told the backend about the stream (for E-06)."""

    NEVER_OPENED = "never opened"
    OPENED = "opened, not started"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    CLOSED = "closed"


def _now(t_ns: int | None) -> int:
    return time.monotonic_ns() if t_ns is None else t_ns


def op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"op{op}"


@dataclass
class Pending:
    """A request on the ring waiting for its response."""

    seq: int  # local sequence number (unique per core)
    id: int
    operation: int
    raw: bytes
    t_sent_ns: int
    trigger: int | None = None  # TRIGGER type
    tag: Any = None  # the driver's marker (typed call vs raw)
    timed_out: bool = False
    phase_before: Phase | None = None  # for a START/RESUME the backend refuses
    open_req: Any = None  # an OPEN's decoded request: its period starts at the response


@dataclass(frozen=True)
class _Mark:
    """From event index ``index`` on, the stream is in ``phase``; its events are judged
    against that period's OPEN (``tracker``, ``open_params``)."""

    index: int
    phase: Phase
    tracker: PositionTracker | None
    open_params: dict[str, int] | None
    seq: int  # the request whose sending or response made it (0: none)


@dataclass(frozen=True)
class Response:
    """A response as the frontend saw it; ``request`` is None when it matched nothing."""

    id: int
    operation: int
    status_code: int
    raw: bytes
    t_ns: int
    request: Pending | None
    hw_param: dict[str, int] | None = None
    violations: tuple[Violation, ...] = ()
    data: bytes | None = None  # READ: the region read back from the buffer
    values: tuple[int, ...] | None = None  # GET_VOLUME: the channel values

    @property
    def status(self) -> str:
        """``"OK"``, ``"-EINVAL"``... (a number for non-errno statuses)."""
        return status_name(self.status_code)

    @property
    def ok(self) -> bool:
        return self.status_code == 0

    @property
    def latency_ms(self) -> float | None:
        if self.request is None:
            return None
        return (self.t_ns - self.request.t_sent_ns) / 1e6


@dataclass(frozen=True)
class EventInfo:
    """One event consumed from the event page."""

    index: int  # absolute (unwrapped) index on the event page since connection
    id: int
    type: int
    raw: bytes
    t_ns: int
    expected_id: int  # Linux's evt_id at this event (E-04)
    linux_skips: bool  # Linux drops this event (id mismatch)
    position: int | None = None  # CUR_POS, octets
    period_elapsed: bool = False
    hw_ptr: int | None = None  # frames, after this event
    violations: tuple[Violation, ...] = ()


@dataclass
class PositionTracker:
    """``xen_snd_front_alsa_handle_cur_pos`` (SND-E-03, E-05): frames, u64 deltas,
    hw_ptr modulo the buffer, period_elapsed when accumulated frames > period_size."""

    frame_size: int
    buffer_frames: int
    period_frames: int
    be_cur_frame: int = 0
    hw_ptr: int = 0
    out_frames: int = 0
    last_position: int | None = None
    periods_elapsed: int = 0

    def update(self, position: int) -> tuple[int, bool]:
        """Apply one CUR_POS; returns (delta frames, period_elapsed)."""
        cur = position // self.frame_size
        delta = (cur - self.be_cur_frame) & U64  # snd_pcm_uframes_t arithmetic
        self.be_cur_frame = cur
        if self.buffer_frames:
            self.hw_ptr = (self.hw_ptr + delta) % self.buffer_frames
        self.out_frames = (self.out_frames + delta) & U64
        self.last_position = position
        elapsed = False
        if self.period_frames and self.out_frames > self.period_frames:  # strictly (E-05)
            self.out_frames %= self.period_frames
            self.periods_elapsed += 1
            elapsed = True
        return delta, elapsed


class StreamCore:
    """Protocol state of one stream; not thread-safe (the driver holds a lock)."""

    def __init__(self, path: str = "0/0", *, first_event_id: int = 0) -> None:
        self.path = path
        self.violations: list[Violation] = []
        self.next_id = 0
        self._seq = 0
        self.pending: list[Pending] = []  # in send order
        self._answered: deque[Pending] = deque(maxlen=_HISTORY)
        self._expired: deque[Pending] = deque(maxlen=_HISTORY)
        # events (E-04): one u16 sequence per connection, never reset by OPEN/CLOSE
        self.evt_expected = first_event_id & U16  # Linux's evt_id (0 at connection)
        self._last_evt_id: int | None = (first_event_id - 1) & U16 if first_event_id else None
        self.linux_skipped = 0
        self.events_seen = 0
        # positions (E-03, E-05), reset like Linux's stream_clear
        self.tracker: PositionTracker | None = None
        self.open_params: dict[str, int] | None = None
        self._marks: deque[_Mark] = deque([_Mark(0, Phase.NEVER_OPENED, None, None, 0)])

    # -- bookkeeping -------------------------------------------------------------------

    def record(self, kind: V.Kind, message: str, expected: Any = None, actual: Any = None,
               raw: bytes | None = None, t_ns: int | None = None) -> Violation:
        v = Violation(kind, message, expected, actual, raw, self.path, _now(t_ns))
        self.violations.append(v)
        return v

    @property
    def phase(self) -> Phase:
        """The current phase (the latest mark)."""
        return self._marks[-1].phase

    def _mark(self, index: int, phase: Phase, seq: int) -> None:
        self._marks.append(_Mark(index, phase, self.tracker, self.open_params, seq))

    def _mark_at(self, index: int) -> _Mark:
        marks = self._marks
        while len(marks) > 1 and marks[1].index <= index:  # events are consumed in order
            marks.popleft()
        return marks[0]

    def reset_ids(self) -> None:
        """``stream_clear`` / ``evtchnl_pair_clear`` (SND-B-11): next request id is 0.
        Linux does this at ALSA open, hw_params and hw_free."""
        self.next_id = 0

    def reset_positions(self) -> None:
        """The position part of ``stream_clear`` (be_cur_frame, out_frames, hw_ptr)."""
        if self.tracker is not None:
            self.tracker = PositionTracker(self.tracker.frame_size,
                                           self.tracker.buffer_frames,
                                           self.tracker.period_frames)
            last = self._marks[-1]  # the current period counts from here
            self._marks[-1] = _Mark(last.index, last.phase, self.tracker, last.open_params,
                                    last.seq)

    # -- requests ----------------------------------------------------------------------

    def build(self, operation: Op | int | str, *, id: int | None = None,
              **fields: Any) -> bytes:
        """Encode a request. Without ``id`` the Linux per-stream counter is used."""
        if id is None:
            id = self.next_id
            self.next_id = (self.next_id + 1) & U16
        return codec.encode_req(operation, id=id, **fields)

    def sent(self, raw: bytes, evt_mark: int, t_ns: int | None = None,
             tag: Any = None) -> Pending:
        """``raw`` was pushed onto the ring; ``evt_mark`` is the event producer's index
        at that moment."""
        raw = bytes(raw)
        req = codec.decode_req(raw)
        self._seq += 1
        p = Pending(self._seq, req.id, req.operation, raw, _now(t_ns), tag=tag)
        if req.operation == Op.OPEN:
            # the new period starts when the backend has taken the OPEN (its response):
            # events it writes before that are the running period's (an OPEN while open)
            p.open_req = req
        elif req.operation == Op.TRIGGER:
            p.trigger = req.type
            if req.type in (Trigger.START, Trigger.RESUME):
                p.phase_before = self.phase
                self._mark(evt_mark, Phase.RUNNING, p.seq)  # events may precede the response (E-09)
        self.pending.append(p)
        return p

    def _on_open_done(self, p: Pending, evt_mark: int) -> None:
        req = p.open_req
        self.open_params = {"pcm_rate": req.pcm_rate, "pcm_format": req.pcm_format,
                            "pcm_channels": req.pcm_channels, "buffer_sz": req.buffer_sz,
                            "period_sz": req.period_sz, "gref_directory": req.gref_directory}
        try:
            fsz = frame_size(req.pcm_format, req.pcm_channels)
        except ValueError:  # unknown/compressed format or 0 channels: count octets
            fsz = 1
        self.tracker = PositionTracker(fsz, req.buffer_sz // fsz, req.period_sz // fsz)
        # requests sent after this OPEN and before its response (pipelined) belong to the
        # new period: the OPENED mark goes before their marks, which judge by this OPEN
        tail: list[_Mark] = []
        while self._marks and self._marks[-1].seq > p.seq:
            tail.append(self._marks.pop())
        tail.reverse()
        self._mark(min([evt_mark, *(m.index for m in tail[:1])]), Phase.OPENED, p.seq)
        self._marks.extend(_Mark(m.index, m.phase, self.tracker, self.open_params, m.seq)
                           for m in tail)
        for q in self.pending:  # a pipelined START the backend refuses returns to OPENED
            if q.seq > p.seq and q.phase_before is not None:
                q.phase_before = Phase.OPENED

    def expire(self, pending: Pending) -> None:
        """The caller gave up waiting (SND-G-02): a later response is "late"."""
        if pending in self.pending:
            self.pending.remove(pending)
            pending.timed_out = True
            self._expired.append(pending)

    def fail_all(self) -> list[Pending]:
        """The channels are gone: every waiter is released (Linux: -EIO)."""
        gone, self.pending = self.pending, []
        return gone

    # -- responses ---------------------------------------------------------------------

    def on_response(self, raw: bytes, evt_mark: int, t_ns: int | None = None) -> Response:
        """Match one response by id (SND-B-09) and check it (B-08, G-01, G-05)."""
        raw = bytes(raw)
        t = _now(t_ns)
        rec = codec.decode_resp(raw)
        found: list[Violation] = []
        req = self._match(rec, raw, t, found)
        hw = None
        if rec.operation == Op.HW_PARAM_QUERY:
            hw = {k: getattr(rec, k) for k in HW_PARAM_FIELDS}
        if req is not None:
            self._check_status(rec.status, raw, t, found)
            self._advance_phase(req, rec.status, evt_mark)
        return Response(rec.id, rec.operation, rec.status, raw, t, req, hw, tuple(found))

    def _match(self, rec: Any, raw: bytes, t: int, found: list[Violation]) -> Pending | None:
        for p in self.pending:
            if p.id == rec.id:
                self.pending.remove(p)
                self._answered.append(p)
                if p.operation != rec.operation:
                    found.append(self.record(
                        V.OPERATION_NOT_ECHOED,
                        f"response to {op_name(p.operation)} id {p.id} carries operation "
                        f"{op_name(rec.operation)}", p.operation, rec.operation, raw, t))
                return p
        for p in self._expired:
            if p.id == rec.id:
                self._expired.remove(p)
                self._answered.append(p)
                found.append(self.record(
                    V.LATE_RESPONSE, f"response to {op_name(p.operation)} id {p.id} after "
                    f"the frontend gave up ({(t - p.t_sent_ns) / 1e6:.0f} ms)",
                    "a response within the timeout", "late", raw, t))
                return None
        if any(p.id == rec.id for p in self._answered):
            found.append(self.record(V.DUPLICATE_RESPONSE,
                                     f"second response to id {rec.id}",
                                     "exactly one response per request", rec.id, raw, t))
        elif self.pending:
            ids = [p.id for p in self.pending]
            found.append(self.record(V.ID_NOT_ECHOED,
                                     f"response id {rec.id} matches no outstanding request "
                                     f"({op_name(rec.operation)})", ids, rec.id, raw, t))
        else:
            found.append(self.record(V.UNSOLICITED_RESPONSE,
                                     f"response id {rec.id} ({op_name(rec.operation)}) "
                                     "with no request outstanding", None, rec.id, raw, t))
        return None

    def _check_status(self, status: int, raw: bytes, t: int, found: list[Violation]) -> None:
        if status > 0:
            found.append(self.record(V.POSITIVE_STATUS, f"positive status {status}",
                                     "0 or -XEN_Exx", status, raw, t))
        elif status < 0:
            try:
                errno = XenErrno(-status)
            except ValueError:
                found.append(self.record(V.NON_ERRNO_STATUS,
                                         f"status {status} is not -XEN_Exx",
                                         "a Xen errno (clauses §1.4)", status, raw, t))
                return
            if errno in XEN_INTERNAL_ERRNOS:
                found.append(self.record(V.INTERNAL_ERRNO_STATUS,
                                         f"status -{errno.name} is Xen-internal",
                                         "an errno a guest may see", status, raw, t))

    def _advance_phase(self, req: Pending, status: int, evt_mark: int) -> None:
        ok = status == 0
        if req.operation == Op.OPEN and ok and req.open_req is not None:
            self._on_open_done(req, evt_mark)
        elif req.operation == Op.OPEN and not ok:
            self._mark(evt_mark, Phase.CLOSED, req.seq)
        elif req.operation == Op.CLOSE:
            self._mark(evt_mark, Phase.CLOSED, req.seq)  # Linux frees it whatever the status
        elif req.operation == Op.TRIGGER and req.trigger is not None:
            if not ok and req.phase_before is not None:
                self._mark(evt_mark, req.phase_before, req.seq)
            elif ok and req.trigger == Trigger.STOP:
                self._mark(evt_mark, Phase.STOPPED, req.seq)
            elif ok and req.trigger == Trigger.PAUSE:
                self._mark(evt_mark, Phase.PAUSED, req.seq)

    def on_response_overflow(self, rsp_prod: int, rsp_cons: int, limit: int,
                             t_ns: int | None = None) -> Violation:
        """More responses published than requests produced (RING_RESPONSE_PROD_OVERFLOW)."""
        n = u32(rsp_prod - rsp_cons)
        return self.record(V.RESPONSE_PROD_OVERFLOW,
                           f"rsp_prod {rsp_prod} is {n} past rsp_cons {rsp_cons}, but only "
                           f"{limit} requests are unanswered", f"<= {limit}", n, None, t_ns)

    # -- events ------------------------------------------------------------------------

    def on_event_ring_jump(self, message: str, in_cons: int, in_prod: int,
                           t_ns: int | None = None) -> Violation:
        return self.record(V.EVENT_RING_JUMP, message, "in_prod - in_cons <= 63",
                           u32(in_prod - in_cons), None, t_ns)

    def on_event(self, raw: bytes, index: int, t_ns: int | None = None) -> EventInfo:
        """One event at absolute index ``index`` (E-03..E-08)."""
        raw = bytes(raw)
        t = _now(t_ns)
        rec = codec.decode_evt(raw)
        found: list[Violation] = []
        expected = self.evt_expected
        self.evt_expected = (expected + 1) & U16  # Linux: `event->id != channel->evt_id++`
        skips = rec.id != expected
        want = 0 if self._last_evt_id is None else (self._last_evt_id + 1) & U16
        if rec.id != want:
            found.append(self.record(
                V.EVENT_ID_GAP,
                f"event id {rec.id} after {self._last_evt_id}: Linux expects {expected} and "
                + ("skips this event and every later one until reconnection"
                   if skips else "accepts it again"), want, rec.id, raw, t))
        self._last_evt_id = rec.id
        self.events_seen += 1
        if skips:
            self.linux_skipped += 1
        if rec.type != Evt.CUR_POS:  # SND-E-08: ignored, though the id counted
            return EventInfo(index, rec.id, rec.type, raw, t, expected, skips,
                             violations=tuple(found))
        mark = self._mark_at(index)
        self._check_window(mark, raw, t, found)
        elapsed, hw_ptr = False, None
        tr = mark.tracker
        if tr is not None:
            if tr.last_position is not None and rec.position < tr.last_position:
                found.append(self.record(V.POSITION_BACKWARDS,
                                         f"position {rec.position} after {tr.last_position} "
                                         "within one OPEN", f">= {tr.last_position}",
                                         rec.position, raw, t))
            if rec.position % tr.frame_size:
                found.append(self.record(V.POSITION_NOT_FRAME,
                                         f"position {rec.position} is not a whole number of "
                                         f"{tr.frame_size}-octet frames",
                                         f"multiple of {tr.frame_size}", rec.position, raw, t))
            _, elapsed = tr.update(rec.position)
            hw_ptr = tr.hw_ptr
        return EventInfo(index, rec.id, rec.type, raw, t, expected, skips, rec.position,
                         elapsed, hw_ptr, tuple(found))

    def _check_window(self, mark: _Mark, raw: bytes, t: int, found: list[Violation]) -> None:
        phase = mark.phase
        if phase is Phase.RUNNING:
            if mark.open_params is not None and mark.open_params["period_sz"] == 0:
                found.append(self.record(V.EVENT_WITHOUT_PERIOD,
                                         "CUR_POS although OPEN.period_sz was 0",
                                         "no CUR_POS", "CUR_POS", raw, t))
            return
        kind = {Phase.NEVER_OPENED: V.EVENT_BEFORE_START, Phase.OPENED: V.EVENT_BEFORE_START,
                Phase.STOPPED: V.EVENT_WHILE_STOPPED, Phase.PAUSED: V.EVENT_WHILE_STOPPED,
                Phase.CLOSED: V.EVENT_AFTER_CLOSE}[phase]
        found.append(self.record(kind, f"CUR_POS while the stream is {phase.value}",
                                 "no CUR_POS", phase.value, raw, t))


@dataclass
class StreamChannel:
    """A core bound to its request ring page and event page (pure memory; no syscalls)."""

    core: StreamCore
    ring_page: memoryview
    evt_page: memoryview
    ring: FrontRing = field(init=False)
    events: EventConsumer = field(init=False)
    evt_abs: int = 0  # absolute index of in_cons since the connection started

    def __post_init__(self) -> None:
        self.ring = FrontRing(self.ring_page)
        self.events = EventConsumer(self.evt_page)

    def init_shared(self, ring_start: int = 0, evt_start: int = 0) -> None:
        """SHARED_RING_INIT (SND-B-01) and a zeroed event page (SND-B-17)."""
        self.ring_page[:] = bytes(len(self.ring_page))
        self.ring.init_shared(ring_start)
        self.events.init_shared(evt_start)
        self.evt_abs = 0

    def event_mark(self) -> int:
        """The event producer's index now, unwrapped."""
        return self.evt_abs + min(self.events.pending(), 0x7FFFFFFF)

    def ring_free(self) -> int:
        return self.ring.free_requests()

    def put(self, raw: bytes, t_ns: int | None = None, tag: Any = None) -> Pending:
        """Write a request into the next slot (not yet pushed)."""
        self.ring.put_request(bytes(raw))
        return self.core.sent(raw, self.event_mark(), t_ns, tag)

    def push(self) -> bool:
        """RING_PUSH_REQUESTS_AND_CHECK_NOTIFY (SND-B-02): True when to notify."""
        return self.ring.push_requests()

    def consume_responses(self, t_ns: int | None = None, max_rounds: int = 64
                          ) -> list[Response]:
        """``evtchnl_interrupt_req``: read up to rsp_prod, then re-arm with
        RING_FINAL_CHECK_FOR_RESPONSES and loop while more arrived (SND-B-06)."""
        out: list[Response] = []
        ring = self.ring
        for _ in range(max_rounds):
            prod, cons = ring.rsp_prod, ring.rsp_cons
            n = u32(prod - cons)
            published = u32(_req_prod(ring) - cons)
            limit = max(u32(ring.req_prod_pvt - cons),
                        published if published <= XENSND_RING_SIZE else 0)
            if n > XENSND_RING_SIZE:  # a corrupt index: skip to it, nothing is readable
                self.core.on_response_overflow(prod, cons, limit, t_ns)
                ring.rsp_cons = prod
                n = 0
            elif n > limit:
                self.core.on_response_overflow(prod, cons, limit, t_ns)
            for _ in range(n):
                out.append(self.core.on_response(ring.get_response(), self.event_mark(),
                                                 t_ns))
            if not ring.final_check_for_responses():
                break
        return out

    def consume_events(self, t_ns: int | None = None) -> list[EventInfo]:
        """``evtchnl_interrupt_evt`` (SND-B-14), recording an index jump (B-13)."""
        cons, prod = self.events.in_cons, self.events.in_prod
        try:
            raws = self.events.take_all()
        except RingError as exc:
            self.core.on_event_ring_jump(str(exc), cons, prod, t_ns)
            self.evt_abs += u32(prod - cons)
            return []
        out = [self.core.on_event(raw, self.evt_abs + i, t_ns) for i, raw in enumerate(raws)]
        self.evt_abs += len(raws)
        return out


def _req_prod(ring: FrontRing) -> int:
    """The req_prod actually published in the shared page (the raw API may lie)."""
    return int.from_bytes(ring.page[REQ_PROD:REQ_PROD + 4], "little")
