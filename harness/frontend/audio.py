"""Playback and capture the way ALSA drives the Linux frontend (clauses.md §5).

Playback (``aplay``-like): HW_PARAM_QUERY for the exact configuration (hw_params' last
refine, SND-F-03), OPEN (prepare), fill the buffer period by period with WRITE (copy),
START, then refill as CUR_POS positions free room (E-03: positions are cumulative octets
since OPEN), drain (wait until the position reaches everything written, D-06), STOP, CLOSE
(hw_free). Capture: OPEN, START, READ whatever the positions say is available (C-11; capture
advances only through CUR_POS, E-07), STOP, CLOSE.

Every wait is bounded; a failing request ends the run with ``error`` set in the report.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from protocol_models.constants import PCM_FORMATS, PcmFormat, Trigger, frame_size, pcm_format

from .errors import FrontendError
from .stream import FrontendStream
from .stream_core import EventInfo, Response
from .violations import Violation


@dataclass
class Report:
    """What happened on the wire during one run."""

    bytes_moved: int = 0
    positions: list[tuple[int, int, int]] = field(default_factory=list)  # (t_ns, pos, id)
    event_ids: list[int] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    requests: list[Response] = field(default_factory=list)
    started_ns: int | None = None
    drained: bool | None = None
    error: str | None = None
    data: bytes = b""  # playback: the octets sent by WRITE; capture: the octets read

    @property
    def ok(self) -> bool:
        return self.error is None

    def intervals_ms(self) -> list[float]:
        """Time between consecutive CUR_POS events."""
        ts = [t for t, _, _ in self.positions]
        return [(b - a) / 1e6 for a, b in itertools.pairwise(ts)]


class _Run:
    def __init__(self, stream: FrontendStream, report: Report) -> None:
        self.s = stream
        self.r = report
        self.seen = len(stream.events)
        self.v0 = len(stream.violations)
        self.hw = 0  # octets the backend reported played/captured (ALSA's hw_ptr)
        self.opened = False
        self.last_move = time.monotonic()

    def call(self, resp: Response) -> Response:
        self.r.requests.append(resp)
        if not resp.ok:
            raise FrontendError(f"{resp.request.operation if resp.request else '?'} "
                                f"failed: {resp.status}")
        return resp

    def take_events(self) -> list[EventInfo]:
        with self.s.cond:
            new = self.s.events[self.seen:]
            self.seen = len(self.s.events)
        for ev in new:
            self.r.event_ids.append(ev.id)
            if ev.position is not None:
                self.r.positions.append((ev.t_ns, ev.position, ev.id))
        return new

    def wait_events(self, timeout: float) -> None:
        self.s.wait_for(lambda: len(self.s.events) > self.seen, timeout)

    def started(self) -> None:
        """After START: the hardware pointer (``hw``) follows CUR_POS from 0."""
        self.r.started_ns = time.monotonic_ns()
        self.hw = 0
        self.last_move = time.monotonic()

    def follow(self, stall_timeout: float, stall_after: float) -> bool:
        """Wait a little for CUR_POS and advance ``hw``; False once the position has not
        moved for ``stall_after`` seconds (the backend stopped reporting)."""
        self.wait_events(min(stall_timeout, 0.2))
        for ev in self.take_events():
            if ev.position is not None and ev.position > self.hw:
                self.hw = ev.position
                self.last_move = time.monotonic()
        return time.monotonic() - self.last_move <= stall_after

    def open_stream(self, query: dict[str, object] | None, rate: int,
                    fmt: PcmFormat | int | str, channels: int, buffer_sz: int,
                    period_sz: int) -> None:
        """HW_PARAM_QUERY (ALSA's hw_refine) unless ``query`` is None, then OPEN (prepare)."""
        if query is not None:
            self.call(self.s.hw_param_query(**query))  # type: ignore[arg-type]
        self.call(self.s.open(rate, fmt, channels, buffer_sz, period_sz))
        self.opened = True

    def close_stream(self) -> None:
        """CLOSE (as ALSA's hw_free does) if OPEN succeeded; its failure is reported."""
        if not self.opened:
            return
        try:
            resp = self.s.close()
            if resp is not None:
                self.r.requests.append(resp)
        except FrontendError as exc:
            self.r.error = self.r.error or f"CLOSE: {exc}"

    def finish(self) -> None:
        self.take_events()
        self.r.violations = list(self.s.violations[self.v0:])


def _space(fmt: PcmFormat | int | str, channels: int, buffer_sz: int, period_sz: int,
           rate: int) -> tuple[dict[str, object], float]:
    fsz = frame_size(fmt, channels)
    q = dict(formats=1 << int(pcm_format(fmt)), rates=(rate, rate),
             channels=(channels, channels), buffer=(buffer_sz // fsz, buffer_sz // fsz),
             period=(period_sz // fsz, period_sz // fsz))
    return q, fsz * rate  # octets per second


def silence(fmt: PcmFormat | int | str, nbytes: int) -> bytes:
    """``nbytes`` of silence (``snd_pcm_format_set_silence``): 0, or the mid value of
    unsigned formats."""
    info = PCM_FORMATS[pcm_format(fmt)]
    if info.signed is not False or not info.width:
        return bytes(nbytes)
    w = info.width
    sample = b"\x80" + bytes(w - 1) if info.endian == "big" or w == 1 else bytes(w - 1) + b"\x80"
    return (sample * (nbytes // w + 1))[:nbytes]


def play(stream: FrontendStream, pcm: bytes, rate: int, fmt: PcmFormat | int | str,
         channels: int, buffer_sz: int, period_sz: int, *, query: bool = True,
         pad_last_period: bool = False, stall_timeout: float = 2.0) -> Report:
    """Play ``pcm`` through ``stream``; see the module doc. ``pad_last_period``: fill a
    partial last period with silence as ``aplay`` does (a backend that reports positions
    only at period boundaries never reaches a partial tail, so the drain would stall).
    ``stall_timeout``: how long positions may stand still before the run is abandoned."""
    if pad_last_period and len(pcm) % period_sz:
        pcm = pcm + silence(fmt, period_sz - len(pcm) % period_sz)
    report = Report()
    run = _Run(stream, report)
    total = len(pcm)
    q, rate_bps = _space(fmt, channels, buffer_sz, period_sz, rate)
    appl = 0  # octets written (ALSA appl_ptr, in octets since OPEN)
    try:
        run.open_stream(q if query else None, rate, fmt, channels, buffer_sz, period_sz)

        def fill(hw: int) -> int:
            nonlocal appl
            wrote = 0
            while appl < total:
                room = buffer_sz - (appl - hw)
                off = appl % buffer_sz
                n = min(period_sz, total - appl, buffer_sz - off)
                if n > room:
                    break
                run.call(stream.write(off, pcm[appl:appl + n]))
                appl += n
                wrote += n
            return wrote

        fill(0)  # prefill up to the start threshold (the whole buffer)
        run.call(stream.trigger(Trigger.START))
        run.started()
        while run.hw < total:
            moving = run.follow(stall_timeout, stall_timeout + buffer_sz / rate_bps)
            fill(min(run.hw, appl))
            if not moving:
                break
        report.drained = run.hw >= total
        run.call(stream.trigger(Trigger.STOP))
    except FrontendError as exc:
        report.error = str(exc)
    finally:
        report.bytes_moved = appl
        report.data = pcm[:appl]
        run.close_stream()
        run.finish()
    return report


def capture(stream: FrontendStream, rate: int, fmt: PcmFormat | int | str, channels: int,
            buffer_sz: int, period_sz: int, *, seconds: float | None = None,
            nbytes: int | None = None, query: bool = True,
            stall_timeout: float = 2.0) -> Report:
    """Capture ``nbytes`` (or ``seconds`` of audio) from ``stream``; ``report.data``."""
    q, rate_bps = _space(fmt, channels, buffer_sz, period_sz, rate)
    fsz = frame_size(fmt, channels)
    if nbytes is None:
        if seconds is None:
            raise ValueError("give seconds or nbytes")
        nbytes = round(seconds * rate) * fsz
    report = Report()
    run = _Run(stream, report)
    chunks: list[bytes] = []
    appl = 0
    try:
        run.open_stream(q if query else None, rate, fmt, channels, buffer_sz, period_sz)
        run.call(stream.trigger(Trigger.START))
        run.started()
        while appl < nbytes:
            moving = run.follow(stall_timeout, stall_timeout + buffer_sz / rate_bps)
            while appl < min(run.hw, nbytes):
                off = appl % buffer_sz
                n = min(period_sz, min(run.hw, nbytes) - appl, buffer_sz - off)
                resp = run.call(stream.read(off, n))
                chunks.append(resp.data or b"")
                appl += n
            if not moving:
                break
        run.call(stream.trigger(Trigger.STOP))
    except FrontendError as exc:
        report.error = str(exc)
    finally:
        report.bytes_moved = appl
        report.data = b"".join(chunks)
        run.close_stream()
        run.finish()
    return report
