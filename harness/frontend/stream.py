"""One stream of the reference frontend: its typed calls, the raw API for suites and
fuzzing, and the response/event handling the device's I/O thread drives.

Typed calls behave like Linux's (one request at a time per stream, ids from a per-stream
counter, 3000 ms timeout); the raw API (``send_raw``, ``send_many``/``collect``,
``set_req_prod``) serves suites and fuzzing. Backend misbehaviour is recorded as
violations (``stream.violations``), never raised.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from harness.card_config import StreamConfig
from harness.rings import IN_CONS, RING_HEADER_SIZE, RSP_EVENT
from harness.trace import Trace
from harness.xen.api import Domain, SharedPages
from protocol_models.constants import (
    PCM_FORMATS,
    Op,
    PcmFormat,
    Trigger,
    pcm_format,
)

from . import violations as V
from .defects import FrontendDefects
from .errors import (
    Disconnected,
    NotConnected,
    RequestTimeout,
    RingFull,
    SharedBufferError,
)
from .shbuf import SharedBuffer
from .stream_core import EventInfo, Pending, Response, StreamChannel, StreamCore, op_name


class StreamHost(Protocol):
    """What a stream needs of its device (the driver): identity, trace, timeout, notify.
    A protocol, so that the stream does not import the driver that creates it."""

    domid: int
    domain: Domain  # its grants share the buffers
    backend_id: int
    hv_lock: Any  # guards the (thread-unsafe) grants and event-channel clients
    trace: Trace
    timeout_ms: int
    defects: FrontendDefects

    def notify(self, port: int, stream: str | None = None) -> None: ...
    def trace_msg(self, kind: str, raw: bytes, **fields: Any) -> None: ...
    def trace_note(self, text: str) -> None: ...

#: (format bit, sample width) of every format with a width: computed once, because
#: iterating the enum on each HW_PARAM_QUERY cost a typed call ~10 us (bench requests).
_FORMAT_WIDTHS = tuple((int(f), w) for f, info in PCM_FORMATS.items()
                       if (w := info.width))

_TYPED = "typed"
_RAW = "raw"
_GONE = object()  # result of a request whose channel was freed while waiting


def _to_bytes(msg: Any) -> bytes:
    return bytes(msg)  # bytes, bytearray, memoryview or a Scapy packet


class FrontendStream:
    """One configured stream (``<pcm>/<stream>``): typed and raw request API, events."""

    def __init__(self, device: StreamHost, config: StreamConfig) -> None:
        self.device = device
        self.config = config
        self.path = config.path
        self.violations: list[V.Violation] = []
        self.events: list[EventInfo] = []
        self.cond = threading.Condition()
        self._req_lock = threading.Lock()  # Linux req_io_lock: one typed request at a time
        self.core = StreamCore(self.path)
        self.core.violations = self.violations
        self.channel: StreamChannel | None = None
        self.connected = False
        self.shbuf: SharedBuffer | None = None
        self.ring_pages: SharedPages | None = None
        self.evt_pages: SharedPages | None = None
        self.ring_ref = self.evt_ring_ref = 0
        self.req_port = self.evt_port = 0
        self._results: dict[int, Any] = {}
        self._waiters: dict[int, threading.Event] = {}
        self._raw_responses: deque[Response] = deque()
        self._traced_violations = 0
        self._aborts = 0  # releases by abort_requests: wake raw waiters too
        self._leaked: list[SharedBuffer] = []  # defect "no-revoke-at-close"
        self._opened_once = False

    # -- identity ----------------------------------------------------------------------

    @property
    def type(self) -> str:
        return self.config.type

    @property
    def index(self) -> int:
        return self.config.index

    @property
    def timeout_ms(self) -> int:
        return self.device.timeout_ms

    def __repr__(self) -> str:
        return f"<FrontendStream {self.path} {self.type} connected={self.connected}>"

    # -- typed API (as ALSA drives the Linux frontend) ---------------------------------

    def hw_param_query(self, *, formats: int | Iterable[PcmFormat | str] | None = None,
                       rates: tuple[int, int] | None = None,
                       channels: tuple[int, int] | None = None,
                       buffer: tuple[int, int] | None = None,
                       period: tuple[int, int] | None = None,
                       timeout_ms: int | None = None) -> Response:
        """HW_PARAM_QUERY (SND-F-01): buffer and period in frames. Defaults describe the
        stream's configured space, as ALSA's first refine does."""
        return self._call(Op.HW_PARAM_QUERY, timeout_ms,
                          **self._query_fields(formats, rates, channels, buffer, period))

    def query_request(self) -> bytes:
        """The encoded first HW_PARAM_QUERY (for raw sending)."""
        return self.core.build(Op.HW_PARAM_QUERY,
                               **self._query_fields(None, None, None, None, None))

    def _query_fields(self, formats: int | Iterable[PcmFormat | str] | None,
                      rates: tuple[int, int] | None, channels: tuple[int, int] | None,
                      buffer: tuple[int, int] | None, period: tuple[int, int] | None
                      ) -> dict[str, int]:
        hw = self.config.hw
        if formats is None:
            mask = hw.formats_mask
        elif isinstance(formats, int):
            mask = formats
        else:
            mask = 0
            for f in formats:
                mask |= 1 << int(pcm_format(f))
        widths = [w for bit, w in _FORMAT_WIDTHS if mask >> bit & 1] or [1]
        min_frame = min(widths) * hw.channels_min
        max_frame = max(widths) * hw.channels_max
        rates = rates or (hw.rate_min, hw.rate_max)
        channels = channels or (hw.channels_min, hw.channels_max)
        buffer = buffer or (max(1, hw.period_bytes_min * hw.periods_min // max_frame),
                            hw.buffer_bytes_max // min_frame)
        period = period or (max(1, hw.period_bytes_min // max_frame),
                            hw.period_bytes_max // min_frame)
        if self.device.defects.has("empty-hw-query"):
            rates = (rates[1] + 1, rates[0])  # F-01: min > max
        return dict(formats=mask, rates_min=rates[0], rates_max=rates[1],
                    channels_min=channels[0], channels_max=channels[1],
                    buffer_min=buffer[0], buffer_max=buffer[1],
                    period_min=period[0], period_max=period[1])

    def open(self, rate: int, fmt: PcmFormat | int | str, channels: int, buffer_sz: int,
             period_sz: int, *, timeout_ms: int | None = None) -> Response:
        """ALSA hw_params + prepare: free any old buffer WITHOUT a CLOSE (SND-C-13), reset
        ids and positions (B-11), allocate and grant the buffer (C-02, C-03), send OPEN."""
        fmt_v = int(pcm_format(fmt))
        defects = self.device.defects
        if defects.has("trigger-before-open") and not self._opened_once:
            self.trigger(Trigger.START, timeout_ms=timeout_ms)  # D-02: no OPEN yet
        self._opened_once = True
        with self.cond:
            self._require_connected()
            self._free_buffer(after_close=False)
            self.core.reset_ids()
            self.core.reset_positions()
            self.shbuf = SharedBuffer(self.device.domain.grants, self.device.backend_id,
                                      buffer_sz, self.device.hv_lock)
            gref = self.shbuf.gref_directory
            if defects.has("gref-zero-in-directory"):
                self.shbuf.dir_pages.page(0)[8:12] = bytes(4)  # C-05: slot 1 is gref 0
            if defects.has("buffer-size-mismatch"):
                buffer_sz += 4096  # C-02: one page more than the directory lists
            self.device.trace_note(f"stream {self.path}: buffer {buffer_sz} octets, "
                                   f"{self.shbuf.npages} pages, "
                                   f"{len(self.shbuf.dir_grefs)} directory pages, "
                                   f"gref_directory {gref}")
        return self._call(Op.OPEN, timeout_ms, pcm_rate=rate, pcm_format=fmt_v,
                          pcm_channels=channels, buffer_sz=buffer_sz,
                          gref_directory=gref, period_sz=period_sz)

    def write(self, offset: int, data: bytes, *, timeout_ms: int | None = None) -> Response:
        """Playback copy: samples into the buffer, then WRITE (SND-C-10)."""
        self._buffer().write(offset, data)
        extra = 4096 if self.device.defects.has("write-beyond-buffer") else 0  # C-08
        return self._call(Op.WRITE, timeout_ms, offset=offset, length=len(data) + extra)

    def read(self, offset: int, length: int, *, timeout_ms: int | None = None) -> Response:
        """Capture copy: READ, then the region out of the buffer (SND-C-11)."""
        self._buffer()._check(offset, length)
        resp = self._call(Op.READ, timeout_ms, offset=offset, length=length)
        buf = self.shbuf
        data = buf.read(offset, length) if buf is not None and not buf.freed else None
        return _with(resp, data=data)

    def trigger(self, type: Trigger | int | str, *, timeout_ms: int | None = None
                ) -> Response:
        t = Trigger[type.upper()] if isinstance(type, str) else int(type)
        if t == Trigger.PAUSE and self.device.defects.has("unknown-trigger"):
            t = 7  # D-01: no such trigger type
        return self._call(Op.TRIGGER, timeout_ms, type=int(t))

    def set_volume(self, values: Sequence[int], *, offset: int = 0,
                   timeout_ms: int | None = None) -> Response:
        """SET_VOLUME: s32 per channel at offset + 4*i, 0.001 dB (SND-H-02)."""
        payload = struct.pack(f"<{len(values)}i", *values)
        if not self.device.defects.has("volume-not-written"):  # H-02: the values
            self._buffer().write(offset, payload)
        return self._call(Op.SET_VOLUME, timeout_ms, offset=offset, length=len(payload))

    def get_volume(self, channels: int | None = None, *, offset: int = 0,
                   timeout_ms: int | None = None) -> Response:
        """GET_VOLUME: the BE writes N s32 values before answering (SND-H-03)."""
        n = channels if channels is not None else self._open_channels()
        self._buffer()._check(offset, 4 * n)
        resp = self._call(Op.GET_VOLUME, timeout_ms, offset=offset, length=4 * n)
        buf = self.shbuf
        values = None
        if buf is not None and not buf.freed:
            values = struct.unpack(f"<{n}i", buf.read(offset, 4 * n))
        return _with(resp, values=values)

    def mute(self, flags: Sequence[int], *, offset: int = 0, width: int = 1,
             timeout_ms: int | None = None) -> Response:
        """MUTE: per-channel flags; ``width`` 1 (sndif.h text) or 4 (its drawing),
        AMBIG-9."""
        return self._flags(Op.MUTE, flags, offset, width, timeout_ms)

    def unmute(self, flags: Sequence[int], *, offset: int = 0, width: int = 1,
               timeout_ms: int | None = None) -> Response:
        return self._flags(Op.UNMUTE, flags, offset, width, timeout_ms)

    def close(self, *, timeout_ms: int | None = None) -> Response | None:
        """ALSA hw_free: CLOSE even if never opened, then revoke the buffer whatever the
        status (SND-C-12), then reset ids (B-11). A CLOSE that times out still frees."""
        try:
            resp: Response | None = self._call(Op.CLOSE, timeout_ms)
        except RequestTimeout:
            with self.cond:
                self._free_buffer(after_close=False)
                self.core.reset_ids()
            raise
        with self.cond:
            self._free_buffer(after_close=resp is not None and resp.request is not None)
            self.core.reset_ids()
        return resp

    # -- raw API (suites, fuzzing) ------------------------------------------------------

    def send_raw(self, msg: Any, notify: bool | str = True, *, force: bool = False
                 ) -> Pending:
        """Put one 64-byte request (bytes or Scapy packet) on the ring and push it.
        ``notify``: True as the hold-off says (B-02), "always", or False. ``force``
        allows overwriting unanswered slots (B-07)."""
        return self.send_many([msg], notify, force=force)[0]

    def send_many(self, msgs: Iterable[Any], notify: bool | str = True, *,
                  force: bool = False) -> list[Pending]:
        """Several requests in one push (pipelining, AMBIG-11); answers via
        :meth:`collect`."""
        raws = [_to_bytes(m) for m in msgs]
        with self.cond:
            ch = self._require_connected()
            if not force and len(raws) > ch.ring_free():
                raise RingFull(f"stream {self.path}: {len(raws)} requests, "
                               f"{ch.ring_free()} free slots")
            out = []
            for raw in raws:
                out.append(ch.put(raw, tag=_RAW))
                self.device.trace_msg("req", raw, stream=self.path)
            kick = ch.push() and not self.device.defects.has("no-request-notify")
        if notify == "always" or (notify and kick):
            self.device.notify(self.req_port, self.path)
        return out

    def collect(self, n: int, timeout: float | None = None) -> list[Response]:
        """Wait for ``n`` responses to raw requests (or unmatched ones); returns what
        arrived by the timeout (default the request timeout)."""
        deadline = time.monotonic() + (self.timeout_ms / 1000 if timeout is None else timeout)
        with self.cond:
            aborts = self._aborts
            # a release (the backend is known gone) ends the wait as Linux's -EIO does
            while len(self._raw_responses) < n and self._aborts == aborts:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return [self._raw_responses.popleft()
                    for _ in range(min(n, len(self._raw_responses)))]

    def set_req_prod(self, value: int, notify: bool = True) -> None:
        """Publish an arbitrary ``req_prod`` (an index lie, SND-G-06)."""
        with self.cond:
            self._require_connected().ring.set_req_prod(value)
        self.device.trace.record("note", self.device.domid, stream=self.path,
                                 text=f"req_prod set to {value}")
        if notify:
            self.device.notify(self.req_port, self.path)

    def kick(self) -> None:
        """Notify the request event channel (a spurious notification is harmless, B-16)."""
        self.device.notify(self.req_port, self.path)

    # -- events ----------------------------------------------------------------------

    @property
    def position(self) -> int | None:
        """The last CUR_POS position (octets) since OPEN."""
        tr = self.core.tracker
        return None if tr is None else tr.last_position

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (with the stream lock held while testing) until ``predicate()``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.1))
            return True

    # -- internals ---------------------------------------------------------------------

    def _open_channels(self) -> int:
        params = self.core.open_params
        if params is None:
            raise SharedBufferError(f"stream {self.path} is not open")
        return params["pcm_channels"]

    def _flags(self, op: Op, flags: Sequence[int], offset: int, width: int,
               timeout_ms: int | None) -> Response:
        code = {1: "B", 4: "I"}[width]
        payload = struct.pack(f"<{len(flags)}{code}", *flags)
        self._buffer().write(offset, payload)
        return self._call(op, timeout_ms, offset=offset, length=len(payload))

    def _buffer(self) -> SharedBuffer:
        buf = self.shbuf
        if buf is None or buf.freed:
            raise SharedBufferError(f"stream {self.path} has no shared buffer (not open)")
        return buf

    def _require_connected(self) -> StreamChannel:
        if not self.connected or self.channel is None:
            raise NotConnected(f"stream {self.path} is not connected (Linux: -EIO)")
        return self.channel

    def _call(self, op: Op, timeout_ms: int | None, **fields: Any) -> Response:
        """Linux ``be_stream_do_io`` + ``be_stream_wait_io``."""
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        with self._req_lock:
            waiter = threading.Event()
            with self.cond:
                ch = self._require_connected()
                raw = self._defective(self.core.build(op, **fields))
                pending = ch.put(raw, tag=_TYPED)
                self._waiters[pending.seq] = waiter
                self.device.trace_msg("req", raw, stream=self.path)
                kick = ch.push() and not self.device.defects.has("no-request-notify")
            if kick:
                self.device.notify(self.req_port, self.path)
            waiter.wait(timeout_ms / 1000)
            with self.cond:
                self._waiters.pop(pending.seq, None)
                result = self._results.pop(pending.seq, None)
                if result is None:
                    self.core.expire(pending)
                    self.device.trace.record("note", self.device.domid, stream=self.path,
                                             text=f"{op_name(op)} id {pending.id} timed out")
                    raise RequestTimeout(self.path, pending.id, op_name(op), timeout_ms)
        if result is _GONE:
            raise Disconnected(f"stream {self.path}: no response to {op_name(op)}: the "
                               "channel was freed or the backend is gone (Linux: -EIO)")
        assert isinstance(result, Response)
        return result

    def _defective(self, raw: bytes) -> bytes:
        """The request as a defective frontend sends it."""
        defects = self.device.defects
        if defects.has("repeated-request-id"):
            raw = struct.pack("<H", 7) + raw[2:]  # B-11
        if defects.has("reserved-not-zero"):
            raw = raw[:3] + b"\x5a" * 5 + raw[8:]  # B-12
        return raw

    def _free_buffer(self, *, after_close: bool) -> None:
        buf, self.shbuf = self.shbuf, None
        if buf is None:
            return
        if self.device.defects.has("no-revoke-at-close"):
            self._leaked.append(buf)  # C-12, C-03: granted for ever
            return
        busy = buf.free()
        if busy:
            self.device.trace.record("note", self.device.domid, stream=self.path,
                                     text=f"busy revokes {busy}")
            if after_close:  # C-12: the BE must unmap before answering CLOSE
                self.core.record(V.BUFFER_STILL_MAPPED,
                                 f"{len(busy)} buffer grants still mapped after the CLOSE "
                                 "response", "buffer unmapped", f"busy refs {busy}")
        self._trace_violations()

    def _trace_violations(self) -> None:
        for v in self.violations[self._traced_violations:]:
            self.device.trace.record("violation", self.device.domid, **v.as_dict())
        self._traced_violations = len(self.violations)

    # called by the device's I/O thread (the driver) -----------------------------------

    def on_responses(self) -> None:
        with self.cond:
            ch = self.channel
            if ch is None:
                return
            if self.device.defects.has("no-rsp-event-rearm"):  # B-06: put it back
                armed = bytes(ch.ring_page[RSP_EVENT:RSP_EVENT + 4])
                got = ch.consume_responses()
                ch.ring_page[RSP_EVENT:RSP_EVENT + 4] = armed
            else:
                got = ch.consume_responses()
            for resp in got:
                self.device.trace_msg("resp", resp.raw, stream=self.path,
                                      status=resp.status)
                req = resp.request
                if req is not None and req.tag == _TYPED and req.seq in self._waiters:
                    self._results[req.seq] = resp
                    self._waiters[req.seq].set()
                else:
                    self._raw_responses.append(resp)
            self._trace_violations()
            self.cond.notify_all()

    def on_events(self) -> None:
        with self.cond:
            ch = self.channel
            if ch is None:
                return
            cons = bytes(ch.evt_page[IN_CONS:IN_CONS + 4])
            got = ch.consume_events()
            if self.device.defects.has("no-event-consumption"):
                ch.evt_page[IN_CONS:IN_CONS + 4] = cons  # B-14: in_cons never moves
            for ev in got:
                self.device.trace_msg("evt", ev.raw, stream=self.path, index=ev.index,
                                      position=ev.position, linux_skips=ev.linux_skips)
            self.events.extend(got)
            self._trace_violations()
            self.cond.notify_all()

    def attach(self, ring_pages: SharedPages, evt_pages: SharedPages, ring_ref: int,
                evt_ring_ref: int, req_port: int, evt_port: int) -> None:
        """New channels for a new connection: a fresh core (event ids restart, E-04)."""
        with self.cond:
            self.ring_pages, self.evt_pages = ring_pages, evt_pages
            self.ring_ref, self.evt_ring_ref = ring_ref, evt_ring_ref
            self.req_port, self.evt_port = req_port, evt_port
            self.core = StreamCore(self.path)
            self.core.violations = self.violations
            self.channel = StreamChannel(self.core, ring_pages.page(0), evt_pages.page(0))
            self.channel.init_shared()  # SND-B-01, B-17: before publishing
            if self.device.defects.has("ring-header-not-zeroed"):
                ring_pages.page(0)[16:RING_HEADER_SIZE] = b"\xff" * (RING_HEADER_SIZE - 16)

    def abort_requests(self) -> int:
        """Release every caller waiting for a response with :class:`Disconnected` (Linux's
        -EIO, SND-G-02) now, not at its timeout: e.g. the backend process is known dead.
        Returns how many requests were waiting."""
        with self.cond:
            self._aborts += 1
            failed = self.core.fail_all()
            for p in failed:
                if p.seq in self._waiters:
                    self._results[p.seq] = _GONE
                    self._waiters[p.seq].set()
            self.cond.notify_all()
            return len(failed)

    def disconnect(self) -> None:
        """Channels freed: waiters get -EIO (SND-G-02), buffer revoked."""
        with self.cond:
            self.connected = False
            self.abort_requests()
            self._free_buffer(after_close=False)

    def detach(self) -> tuple[tuple[int, int], tuple[int, int],
                              tuple[SharedPages | None, SharedPages | None]]:
        """Disconnect and forget the channels: ``(ports, refs, pages)`` for the driver to
        unbind, revoke and free (under the stream's lock, so a reader of the pages, e.g.
        a watchdog, never sees freed ones)."""
        self.disconnect()
        with self.cond:
            out = ((self.req_port, self.evt_port), (self.ring_ref, self.evt_ring_ref),
                   (self.ring_pages, self.evt_pages))
            self.channel = None
            self.ring_pages = self.evt_pages = None
            self.req_port = self.evt_port = self.ring_ref = self.evt_ring_ref = 0
        return out

    def idle(self, timeout: float) -> bool:
        """True when no typed request is in flight (waiting up to ``timeout`` for one)."""
        if not self._req_lock.acquire(timeout=timeout):
            return False
        self._req_lock.release()
        return True


def _with(resp: Response, **changes: Any) -> Response:
    from dataclasses import replace

    return replace(resp, **changes)
