"""Driving one stream for a suite case: OPEN parameters derived from the stream's
configuration, an OPEN that is always closed again, a pump that keeps playback fed and
capture read as Linux does, and raw OPENs over a buffer granted here (for malformed
parameters the typed API refuses to build).

Everything goes through the frontend's public API and the platform seam
(``dev.domain.grants`` via :class:`SharedBuffer`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from harness.card_config import PcmHw
from harness.certify.outcomes import not_applicable
from harness.frontend.errors import FrontendError
from harness.frontend.open_params import OpenParams, choose_open_params
from harness.frontend.shbuf import SharedBuffer
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import Phase, Response
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, Op

if TYPE_CHECKING:
    from harness.frontend.driver import FrontendDevice

#: Ids of raw requests: far from the typed per-stream counter (which restarts at 0).
RAW_ID_BASE = 0xF000


def pick_stream(dev: FrontendDevice, kind: str) -> FrontendStream | None:
    """The first connected stream of type ``kind`` ("p" or "c"), if the card has one."""
    return next((s for s in dev.streams if s.type == kind), None)


def stream_of(owner: Any, kind: str) -> FrontendStream:
    """The first stream of type ``kind`` of a device (or of a case's ``dev``); the case is
    N/A when the card has none."""
    stream = pick_stream(getattr(owner, "dev", owner), kind)
    if stream is None:
        not_applicable(f"no {'playback' if kind == 'p' else 'capture'} stream on this card")
    return stream


def closed(stream: FrontendStream) -> FrontendStream:
    """The stream in a known state: CLOSEd (whatever an earlier case left)."""
    stream.close()
    return stream


def stream_and_params(dev: FrontendDevice, kind: str, **params: Any
                      ) -> tuple[FrontendStream, OpenParams]:
    """The card's first stream of type ``kind`` and OPEN parameters for it
    (:func:`pick_open_params` keywords); the case is N/A when the card offers neither."""
    stream = stream_of(dev, kind)
    p = pick_open_params(stream.config.hw, **params)
    if p is None:
        not_applicable(f"stream {stream.path}: no configuration with a fixed frame size "
                       "and two periods in its buffer-size")
    return stream, p


def pick_open_params(hw: PcmHw, *, period_ms: float = 10.0, periods: int = 8
                     ) -> OpenParams | None:
    """:func:`~harness.frontend.open_params.choose_open_params` by duration: periods of
    about ``period_ms``, ``periods`` of them as far as ``buffer-size`` allows (None when
    not even two fit)."""
    return choose_open_params(hw, period_ms=period_ms, periods=periods)


def ensure_closed(stream: FrontendStream) -> None:
    """CLOSE the stream if the frontend last left it open (an earlier case may have), so a
    case starts from a stream that is not open; no traffic otherwise."""
    if stream.core.phase not in (Phase.NEVER_OPENED, Phase.CLOSED):
        with contextlib.suppress(FrontendError):
            stream.close()


@contextlib.contextmanager
def opened(stream: FrontendStream, params: OpenParams) -> Iterator[Response]:
    """OPEN ``params`` (which lie inside the stream's space: refusing them breaks C-14),
    and CLOSE on the way out whatever happened (a failed CLOSE is the suites' business
    elsewhere; a hung one is the supervisor's)."""
    ensure_closed(stream)
    resp = stream.open(**params.open_kwargs())
    try:
        assert resp.ok, (f"OPEN {params} (inside the stream's configured space) answered "
                         f"{resp.status}: expected 0 (SND-C-14)")
        yield resp
    finally:
        with contextlib.suppress(FrontendError):
            stream.close()


class Pump:
    """Keeps an open stream going as Linux does: playback WRITEs whole periods to stay
    up to a buffer ahead of the reported position (at most ``limit`` octets in all);
    capture READs every period the position has passed. Failed transfers are kept."""

    def __init__(self, stream: FrontendStream, params: OpenParams, *,
                 limit: int | None = None) -> None:
        self.stream, self.params, self.limit = stream, params, limit
        self.playback = stream.type == "p"
        self.written = 0
        self.read = 0
        self.failures: list[Response] = []
        # whole periods; the whole buffer at once when there are none (period_sz 0)
        self._chunk = params.period_sz or params.buffer_sz

    @property
    def position(self) -> int:
        return self.stream.position or 0

    def step(self) -> None:
        p, chunk = self.params, self._chunk
        if self.playback:
            while self.written + chunk <= self.position + p.buffer_sz and \
                    (self.limit is None or self.written < self.limit):
                n = chunk if self.limit is None else min(chunk, self.limit - self.written)
                resp = self.stream.write(self.written % p.buffer_sz, bytes(n))
                if not resp.ok:
                    self.failures.append(resp)
                    return
                self.written += n
        else:
            while self.read + chunk <= self.position:
                resp = self.stream.read(self.read % p.buffer_sz, chunk)
                if not resp.ok:
                    self.failures.append(resp)
                    return
                self.read += chunk

    def run(self, until: Any, timeout: float) -> bool:
        """Pump until ``until()`` is true or ``timeout`` s passed; whether it came true."""
        deadline = time.monotonic() + timeout
        while True:
            self.step()
            if until():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self.failures:
                return bool(until())
            seen = len(self.stream.events)

            def progressed(n: int = seen) -> bool:
                return len(self.stream.events) > n or bool(until())

            self.stream.wait_for(progressed, min(left, 0.05))


def raw_exchange(stream: FrontendStream, raw: bytes, *, timeout: float | None = None
                 ) -> Response | None:
    """Put one raw 64-octet request on the ring; the response carrying its id, or None if
    none came in ``timeout`` s (default: the frontend's request timeout). Other responses
    arriving meanwhile (stale, duplicated) are skipped: the frontend has recorded them."""
    want = codec.decode_req(raw).id
    stream.send_raw(raw)
    deadline = time.monotonic() + (stream.timeout_ms / 1000 if timeout is None else timeout)
    while (left := deadline - time.monotonic()) > 0:
        for resp in stream.collect(1, left):
            if resp.id == want:
                return resp
    return None


def raw_call(stream: FrontendStream, op: Op | int, *, timeout: float | None = None,
             **fields: Any) -> Response | None:
    """One raw request of ``op`` with any field values (see :func:`raw_exchange`)."""
    return raw_exchange(stream, codec.encode_req(op, **fields), timeout=timeout)


@contextlib.contextmanager
def raw_opened(stream: FrontendStream, *, pages: int = 1, request_id: int = RAW_ID_BASE,
               **fields: Any) -> Iterator[Response | None]:
    """A raw OPEN with ``fields`` over a ``pages``-page buffer granted here (its directory
    unless ``gref_directory`` is given); a raw CLOSE and the buffer freed on the way out."""
    dev = stream.device
    buf = SharedBuffer(dev.domain.grants, dev.backend_id, pages * XEN_PAGE_SIZE, dev.hv_lock)
    try:
        fields.setdefault("gref_directory", buf.gref_directory)
        yield raw_call(stream, Op.OPEN, id=request_id, **fields)
    finally:
        try:
            with contextlib.suppress(FrontendError):
                raw_call(stream, Op.CLOSE, id=request_id + 1)
        finally:
            buf.free()
