"""Sans-IO core of one stream: every request in, its response out; CUR_POS events due.

The core does no I/O of its own: grant mapping goes through a :class:`GrantMemory` port,
audio through an :class:`AudioFactory`, time comes in as ``now_ns``. Every request gets
exactly one response echoing id and operation (SND-B-08); reserved fields are never looked
at (B-12/AMBIG-4); a failure is a negative Xen errno (G-01). Choices on ambiguities are in
BEHAVIOUR.md.
"""

from __future__ import annotations

import enum
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol_models import codec
from protocol_models.constants import (
    PCM_FORMATS,
    STREAM_TYPE_PLAYBACK,
    Op,
    PcmFormat,
    Trigger,
    XenErrno,
)

from .audio_io import AudioFactory, Sink, Source
from .buffers import DirectoryError, GrantMemory, MapError, MappedBuffer, walk_directory
from .defects import NO_DEFECTS, Defects
from .hw_space import HwParams, StreamSpace
from .pacing import Pacer

log = logging.getLogger("harness.backends.reference.stream")

OK = 0
EINVAL = -int(XenErrno.EINVAL)
EBADF = -int(XenErrno.EBADF)
EIO = -int(XenErrno.EIO)
EBUSY = -int(XenErrno.EBUSY)
#: Defect "non-errno-status": Linux's kernel-internal ENOTSUPP, which is no Xen errno.
NOT_AN_ERRNO = -524
#: SND-G-04 / AMBIG-8: the status of an unknown operation.
UNKNOWN_OP_STATUS = -int(XenErrno.ENOSYS)


class StreamState(enum.Enum):
    CLOSED = "CLOSED"
    OPENED = "OPENED"  # prepared or stopped
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"


@dataclass(frozen=True)
class StreamInfo:
    """Which stream this is (``<pcm>/<stream>`` under the device) and what it supports."""

    name: str  # e.g. "vsnd1-0-0-1": used for sink file names and logs
    type: str  # "p" or "c"
    space: StreamSpace

    @property
    def playback(self) -> bool:
        return self.type == STREAM_TYPE_PLAYBACK


@dataclass
class _Open:
    """Everything that exists only between a successful OPEN and its CLOSE."""

    fmt: PcmFormat
    rate: int
    channels: int
    buffer_sz: int
    period_sz: int
    buffer: MappedBuffer
    sink: Sink | None
    source: Source | None
    pacer: Pacer
    volume: list[int]
    muted: list[bool]
    started: bool = False  # a START was accepted since this OPEN


#: (from-state, trigger) -> (to-state, status); SND-D-03..D-08, AMBIG-7.
_S = StreamState
TRIGGER_TABLE: dict[tuple[StreamState, int], tuple[StreamState, int]] = {
    (_S.OPENED, Trigger.START): (_S.RUNNING, OK),
    (_S.OPENED, Trigger.STOP): (_S.OPENED, OK),  # idempotent
    (_S.OPENED, Trigger.PAUSE): (_S.OPENED, EINVAL),
    (_S.OPENED, Trigger.RESUME): (_S.OPENED, EINVAL),
    (_S.RUNNING, Trigger.START): (_S.RUNNING, OK),  # idempotent
    (_S.RUNNING, Trigger.PAUSE): (_S.PAUSED, OK),
    (_S.RUNNING, Trigger.STOP): (_S.OPENED, OK),
    (_S.RUNNING, Trigger.RESUME): (_S.RUNNING, OK),  # idempotent
    (_S.PAUSED, Trigger.START): (_S.RUNNING, OK),  # D-05: START while PAUSED
    (_S.PAUSED, Trigger.PAUSE): (_S.PAUSED, OK),  # idempotent
    (_S.PAUSED, Trigger.STOP): (_S.OPENED, OK),  # D-03: PAUSE -> STOP
    (_S.PAUSED, Trigger.RESUME): (_S.RUNNING, OK),
}

#: Defects that are a different trigger table entry: (from-state, trigger) -> result.
DEFECT_TRIGGERS: dict[str, dict[tuple[StreamState, int], tuple[StreamState, int]]] = {
    "start-while-paused-fails": {(_S.PAUSED, Trigger.START): (_S.PAUSED, EINVAL)},
    "stop-while-paused-fails": {(_S.PAUSED, Trigger.STOP): (_S.PAUSED, EINVAL)},
}


class _NoBuffer:
    """Stands in for a buffer whose mapping was handed elsewhere (``StreamCore.kept``)."""

    view = memoryview(b"")

    def unmap(self) -> None:
        pass


class StreamCore:
    """One stream of one connection. Event ids are one u16 sequence for the life of the
    object, i.e. of the connection: never reset by OPEN/CLOSE (SND-E-04)."""

    def __init__(self, info: StreamInfo, memory: GrantMemory, audio: AudioFactory,
                 on_state: Callable[[StreamState, StreamState], None] | None = None,
                 defects: Defects = NO_DEFECTS) -> None:
        self.info = info
        self.defects = defects
        self.kept: list[MappedBuffer] = []  # defect "keep-mapped-after-close" only
        self.memory = memory
        self.audio = audio
        self.on_state = on_state
        self.state = StreamState.CLOSED
        self.evt_id = 0
        self.opened: _Open | None = None
        self.last_error = ""

    # --- requests ------------------------------------------------------------------------

    def handle(self, raw: bytes, now_ns: int) -> bytes | None:
        """The response to one 64-octet request (already copied out of the ring, B-04).
        None (no response at all) only ever with the defect "unknown-op-no-response"."""
        req = codec.decode_req(raw)
        op = req.operation
        try:
            result = self._dispatch(op, req, now_ns)
        except Exception as exc:  # never crash on input (G-07): answer -EIO instead
            log.exception("%s: op %d failed", self.info.name, op)
            self.last_error = f"internal error: {exc}"
            result = EIO
        if result is None:
            return None
        rid, rop = req.id, op
        if self.defects.has("wrong-response-id"):
            rid = (rid + 1) & 0xFFFF  # B-08: the id must be echoed
        if self.defects.has("operation-not-echoed"):
            rop = 0  # a zeroed response whose operation was never filled in (B-09)
        if isinstance(result, HwParams):
            return codec.HW_PARAM_RESP.encode(id=rid, operation=rop, status=OK,
                                              **result._asdict())
        if result < 0 and self.defects.has("positive-status"):
            result = -result  # G-01: Linux takes a positive status for success
        if result < 0 and self.defects.has("non-errno-status"):
            result = NOT_AN_ERRNO  # G-05
        return codec.RESP.encode(id=rid, operation=rop, status=result)

    def _dispatch(self, op: int, req: Any, now_ns: int) -> int | HwParams | None:
        self.last_error = ""
        if self.defects.has("reject-nonzero-reserved") and any(
                getattr(req, f).strip(b"\0") for f in req._fields if f.startswith("reserved")):
            return self._fail(EINVAL, "reserved bytes not zero (B-12 says ignore them)")
        if op == Op.OPEN:
            return self._open(req, now_ns)
        if op == Op.CLOSE:
            if self.opened is None and self.defects.has("reject-close-when-not-open"):
                return self._fail(EBADF, "CLOSE while not open (C-12: should be 0)")
            if self.state in (StreamState.RUNNING, StreamState.PAUSED) and \
                    self.defects.has("close-while-running-fails"):
                return self._fail(EBUSY, f"CLOSE while {self.state.name} (D-08)")
            self.close(keep_mapping=self.defects.has("keep-mapped-after-close"))
            return OK
        if op in (Op.READ, Op.WRITE):
            return self._rw(op, req.offset, req.length, now_ns)
        if op in (Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE):
            return self._volume(op, req.offset, req.length)
        if op == Op.TRIGGER:
            return self._trigger(req.type, now_ns)
        if op == Op.HW_PARAM_QUERY:
            return self._query(req)
        if self.defects.has("unknown-op-no-response"):
            return None  # G-04: must still be answered
        return self._fail(UNKNOWN_OP_STATUS, f"unknown operation {op}")

    def _fail(self, status: int, why: str) -> int:
        self.last_error = why
        return status

    def _set_state(self, new: StreamState) -> None:
        old, self.state = self.state, new
        if old != new and self.on_state is not None:
            self.on_state(old, new)

    # OPEN: SND-C-01..C-07, C-13..C-15
    def _open(self, req: Any, now_ns: int) -> int:
        if self.opened is not None and self.defects.has("open-while-open-rejected"):
            return self._fail(EBUSY, "OPEN while open (C-13: implicit CLOSE expected)")
        self.close()  # C-13: OPEN while open is an implicit CLOSE (the FE revoked the pages)
        why = self.info.space.check_open(req.pcm_format, req.pcm_rate, req.pcm_channels,
                                         req.buffer_sz, req.period_sz)
        if why is None and req.gref_directory == 0:
            why = "gref_directory is 0 (C-05)"
        if why is not None:
            if self.defects.has("success-for-invalid-open"):
                return OK  # C-15: claims success, opens nothing
            return self._fail(EINVAL, why)
        try:
            grefs = walk_directory(self.memory, req.gref_directory, req.buffer_sz,
                                   self.defects)
            buffer = self.memory.map_buffer(grefs)
        except (DirectoryError, MapError) as exc:
            return self._fail(exc.status, str(exc))
        fmt = PcmFormat(req.pcm_format)
        rate, channels = req.pcm_rate, req.pcm_channels
        try:
            if self.info.playback:
                sink, source = self.audio.open_sink(self.info.name, fmt, rate, channels), None
            else:
                sink, source = None, self.audio.open_source(self.info.name, fmt, rate,
                                                            channels)
        except (OSError, ValueError) as exc:
            buffer.unmap()
            return self._fail(EIO, f"audio endpoint: {exc}")
        frame = PCM_FORMATS[fmt].frame_size(channels)
        self.opened = _Open(fmt, rate, channels, req.buffer_sz, req.period_sz, buffer, sink,
                            source, self._pacer(rate, frame, req.buffer_sz, req.period_sz),
                            [0] * channels, [False] * channels)
        if self.defects.has("event-ids-reset-on-open"):
            self.evt_id = 0  # E-04: one sequence per connection, never reset by OPEN
        self._set_state(StreamState.OPENED)
        return OK

    def _pacer(self, rate: int, frame: int, buffer_sz: int, period_sz: int) -> Pacer:
        period = period_sz
        if self.defects.has("events-with-period-zero") and not period:
            period = buffer_sz // frame // 2 * frame or frame  # E-02: 0 means no events
        if self.defects.has("wrong-cadence"):
            period *= 2  # E-02: one event per period_sz
        return Pacer(rate, frame, period,
                     # E-07: a playback position must not pass the octets written
                     self.info.playback and not self.defects.has("position-beyond-written"),
                     drain_event=not self.defects.has("no-drain-event"))

    def close(self, keep_mapping: bool = False) -> None:
        """CLOSE (C-12): idempotent; the buffer is unmapped before this returns, i.e. before
        the response is produced. Also used for teardown (D-08: implicit stop).
        ``keep_mapping`` is the defect "keep-mapped-after-close": the buffer stays mapped
        until the next close without it (a later OPEN, or the teardown)."""
        o, self.opened = self.opened, None
        if keep_mapping and o is not None:
            self.kept.append(o.buffer)  # C-12: must be unmapped before the response
            o.buffer = _NoBuffer()
        elif self.kept:
            kept, self.kept = self.kept, []
            for buf in kept:
                buf.unmap()
        if o is not None:
            try:
                o.buffer.unmap()
            finally:
                if o.sink is not None:
                    o.sink.close()
                if o.source is not None:
                    o.source.close()  # e.g. a capture client of the audio host
        self._set_state(StreamState.CLOSED)

    def _region(self, offset: int, length: int) -> str | None:
        """Bounds of C-08/C-09/H-05: offset in [0, buffer_sz), offset + length <= buffer_sz."""
        assert self.opened is not None
        size = self.opened.buffer_sz
        if offset >= size or length > size - offset:
            return f"region [{offset}, {offset}+{length}) outside the {size}-octet buffer"
        return None

    # READ/WRITE: SND-C-09..C-11, AMBIG-10 (stream model: the next octets in and out)
    def _rw(self, op: int, offset: int, length: int, now_ns: int) -> int:
        o = self.opened
        if o is None:
            return self._fail(EBADF, "stream is not open")
        why = self._region(offset, length)
        if why is not None:
            if not self.defects.has("trust-offset-length"):
                return self._fail(EINVAL, why)
            # C-09: a C backend would run off the mapping; Python cannot, so clamp.
            offset = min(offset, o.buffer_sz)
            length = min(length, o.buffer_sz - offset)
        if (op == Op.WRITE) != self.info.playback:
            return self._fail(EINVAL, f"{Op(op).name} on a "
                              f"{'playback' if self.info.playback else 'capture'} stream")
        view = o.buffer.view
        try:
            if op == Op.WRITE:
                data = bytes(view[offset:offset + length])  # copied at answer time (C-10)
                assert o.sink is not None
                o.sink.write(data)
                o.pacer.add_written(length, now_ns)
            else:
                assert o.source is not None
                data = o.source.read(length)
                view[offset:offset + length] = data  # filled before answering (C-11)
        except OSError as exc:
            return self._fail(EIO, f"audio endpoint: {exc}")
        return OK

    # SET/GET_VOLUME, MUTE/UNMUTE: SND-H-01..H-05, AMBIG-9
    def _volume(self, op: int, offset: int, length: int) -> int:
        o = self.opened
        if o is None:
            if self.defects.has("volume-without-open-succeeds"):
                return OK  # H-05: a stream must be open
            return self._fail(EBADF, "stream is not open (H-01)")
        why = self._region(offset, length)
        if why is not None:
            if self.defects.has("volume-no-bounds-check"):
                return OK  # H-05: the out-of-buffer access is emulated as dropped
            return self._fail(EINVAL, why)
        n = o.channels
        view = o.buffer.view
        if op in (Op.SET_VOLUME, Op.GET_VOLUME):
            if length < 4 * n:
                return self._fail(EINVAL, f"length {length} < 4 * {n} channels (H-02)")
            if op == Op.SET_VOLUME:
                if not self.defects.has("set-volume-ignored"):  # H-03: read N values
                    o.volume = list(struct.unpack_from(f"<{n}i", view, offset))
            elif not self.defects.has("get-volume-not-written"):  # H-03: write N values
                struct.pack_into(f"<{n}i", view, offset, *o.volume)
            return OK
        # AMBIG-9: the width follows the length: N octets (sndif.h text: uint8_t) or N
        # 4-octet slots (the drawing); anything else is ambiguous and refused.
        if length == n:
            flags = list(view[offset:offset + n])
        elif length == 4 * n:
            flags = list(struct.unpack_from(f"<{n}I", view, offset))
        else:
            return self._fail(EINVAL, f"mute length {length} is neither {n} nor {4 * n}")
        for i, flag in enumerate(flags):
            if flag:
                o.muted[i] = op == Op.MUTE
        return OK

    # TRIGGER: SND-D-01..D-09, AMBIG-7
    def _trigger(self, kind: int, now_ns: int) -> int:
        o = self.opened
        if o is None:
            if self.defects.has("abort-on-trigger-before-open"):
                log.critical("%s: TRIGGER without OPEN: aborting", self.info.name)
                os.abort()  # G-07: a crash (SIGABRT), e.g. a NULL stream dereferenced
            return self._fail(EBADF, "trigger without OPEN (D-07)")
        key = (self.state, kind)
        entry = TRIGGER_TABLE.get(key)
        for name, table in DEFECT_TRIGGERS.items():
            if key in table and self.defects.has(name):
                entry = table[key]
        if entry is None:
            if self.defects.has("unknown-trigger-accepted"):
                return OK  # D-01/D-07: an unknown type must fail
            return self._fail(EINVAL, f"unknown trigger type {kind} (D-01)")
        new, status = entry
        if (kind == Trigger.START and self.state == StreamState.OPENED and o.started
                and self.defects.has("start-after-stop-fails")):
            new, status = self.state, EINVAL  # D-04: START after STOP must work
        if status:
            return self._fail(status, f"trigger {Trigger(kind).name} in {self.state.name}")
        if new == StreamState.RUNNING:
            o.pacer.start(now_ns)
            o.started = True
        elif new == StreamState.PAUSED and self.defects.has("events-while-paused"):
            pass  # E-06: the clock (and the events) go on while PAUSED
        elif new == StreamState.OPENED and self.defects.has("events-while-stopped"):
            pass  # E-06: ... and after STOP
        else:
            o.pacer.stop(now_ns)
        self._set_state(new)
        return OK

    # HW_PARAM_QUERY: SND-F-01..F-06 (no side effects; any state, F-04)
    def _query(self, req: Any) -> int | HwParams:
        if self.defects.has("hw-query-changes-state"):
            self.close()  # F-04: a query must have no side effects
        result = self.info.space.query(HwParams(
            req.formats, req.rates_min, req.rates_max, req.channels_min, req.channels_max,
            req.buffer_min, req.buffer_max, req.period_min, req.period_max), self.defects)
        if isinstance(result, int):
            return self._fail(result, "empty intersection with the configured space (F-06)")
        return result

    # --- events (SND-E-01..E-07) -------------------------------------------------------

    def pending_events(self, now_ns: int, room: int) -> list[tuple[int, int]]:
        """``(id, position)`` of the CUR_POS events due, at most ``room`` of them. When more
        boundaries are due than fit (the FE is not consuming, AMBIG-2) the last one carries
        the newest boundary: coalesced, never overwritten. Nothing changes until
        :meth:`commit_events`, so ids stay gap-free if the driver cannot write one."""
        if self.opened is None or room <= 0:
            return []
        bounds = self.opened.pacer.due_boundaries(now_ns)
        if len(bounds) > room:
            bounds = [*bounds[:room - 1], bounds[-1]]
        if bounds and self.defects.has("flood-event-ring"):
            bounds += [bounds[-1]] * (room - len(bounds))  # E-02: one per period
        return [((self.evt_id + i) & 0xFFFF, pos) for i, pos in enumerate(bounds)]

    def commit_events(self, sent: list[tuple[int, int]]) -> None:
        if not sent or self.opened is None:
            return
        self.evt_id = (self.evt_id + len(sent)) & 0xFFFF
        if self.defects.has("event-id-gaps"):
            self.evt_id = (self.evt_id + 1) & 0xFFFF  # E-04: Linux drops all after a gap
        self.opened.pacer.reported = sent[-1][1]

    def encode_event(self, evt_id: int, position: int) -> bytes:
        """The CUR_POS message; ``position`` is the true one (the pacer's)."""
        o = self.opened
        if o is not None and self.defects.has("positions-modulo-buffer"):
            position %= o.buffer_sz  # E-03: cumulative since OPEN, never wrapped
        if o is not None and evt_id % 2 and self.defects.has("position-goes-back"):
            position = max(0, position - 2 * o.period_sz)  # E-03: never decreasing
        return codec.CUR_POS_EVT.encode(id=evt_id, position=position)

    def next_deadline(self, now_ns: int) -> int | None:
        return None if self.opened is None else self.opened.pacer.next_deadline(now_ns)

    def position(self, now_ns: int) -> int | None:
        return None if self.opened is None else self.opened.pacer.position_at(now_ns)
