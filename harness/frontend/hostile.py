"""Hostile frontend constructions for the conformance suites: what an attacker of a backend
tries first, built on the platform seam and the stream's public raw API only.

* :func:`build_buffer`: a shared buffer whose page directory is valid, cyclic, too short,
  too long, holds gref 0, has a revoked page, is granted read-only or to another domain
  (SND-C-02..C-05, G-07). Pages come from ``grants.share_pages`` and are ended with
  ``revoke``; the buffer is always freed by :meth:`HostileBuffer.free`.
* :func:`call` / :func:`exchange`: one raw request (any field values, any id) and the
  response carrying its id, within a timeout; stray responses are returned beside it.
* :func:`pick_open_params`: an OPEN configuration inside what the card's XenStore
  configuration offers (C-14), for suites that need "some valid OPEN".
* :class:`ManualFrontend`: the XenBus handshake played by hand for a closed
  :class:`~harness.frontend.driver.FrontendDevice`'s domain, so that transport nodes can be
  missing, non-numeric or out of range and states written out of order (A-09..A-19).

Nothing here judges: the suites assert.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.frontend.open_params import OpenParams, choose_open_params
from harness.rings import EventConsumer, FrontRing, u32
from harness.xen.api import Domain, Grants, SharedPages, in_transaction
from protocol_models import codec
from protocol_models.constants import (
    XEN_PAGE_SIZE,
    XENSND_PAGE_DIR_GREFS,
    Op,
    XsField,
)
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

from .stream_core import Response

if TYPE_CHECKING:
    from .driver import FrontendDevice
    from .stream import FrontendStream

#: Raw request ids start here, away from the typed API's per-stream counter (B-11).
RAW_ID_BASE = 0xA000
_raw_ids = itertools.count()
#: A domain id no simulated or real guest has (the top of the DOMID_FIRST_RESERVED range).
NO_SUCH_DOMID = 0x7FEF
TRANSPORT = (XsField.RING_REF, XsField.EVT_CHNL, XsField.EVT_RING_REF, XsField.EVT_EVT_CHNL)


def raw_id() -> int:
    """A fresh request id for a raw request."""
    return (RAW_ID_BASE + next(_raw_ids)) & 0xFFFF


def wait_until(predicate: Callable[[], Any], timeout: float, period: float = 0.02) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` passes (its last
    falsy value is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(period)


# --- raw requests ------------------------------------------------------------------------

def exchange(stream: FrontendStream, raw: bytes, timeout: float | None = None,
             notify: bool | str = True) -> tuple[Response | None, list[Response]]:
    """Send one raw 64-octet request; wait for the response carrying its id. Returns it
    (None on timeout) and every other response that arrived meanwhile."""
    rid = int.from_bytes(raw[0:2], "little")
    stream.send_raw(raw, notify)
    wait = stream.timeout_ms / 1000 if timeout is None else timeout
    deadline = time.monotonic() + wait
    strays: list[Response] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, strays
        for resp in stream.collect(1, left):
            if resp.id == rid and resp.request is not None:
                return resp, strays
            strays.append(resp)


def call(stream: FrontendStream, op: Op | int, *, id: int | None = None,
         timeout: float | None = None, **fields: Any) -> Response | None:
    """One raw request with these field values (no local checks); its response or None."""
    raw = codec.encode_req(op, id=raw_id() if id is None else id, **fields)
    return exchange(stream, raw, timeout)[0]


def late_responses(stream: FrontendStream, wait: float = 0.2) -> list[Response]:
    """Raw responses that arrive within ``wait`` seconds (after everything was answered,
    there should be none)."""
    return stream.collect(64, wait)


# --- OPEN parameters -----------------------------------------------------------------------

def pick_open_params(hw: Any, *, buffer_bytes: int = 16384, periods: int = 4,
                     rate: int | None = None) -> OpenParams:
    """:func:`~harness.frontend.open_params.choose_open_params` by a byte budget: a buffer
    of at most ``buffer_bytes`` in ``periods`` periods (ValueError when impossible)."""
    p = choose_open_params(hw, buffer_bytes=buffer_bytes, periods=periods, rate=rate)
    if p is None:
        raise ValueError("the stream offers no fixed-width format with room for "
                         f"{periods} periods")
    return p


# --- hostile page directories ------------------------------------------------------------

class DirShape(enum.Enum):
    """How the page directory of a :class:`HostileBuffer` is (mis)built."""

    VALID = "valid"  # as Linux builds it (C-02, C-03)
    CYCLIC = "cyclic"  # the last directory page points back to the first (C-04)
    SHORT = "short"  # one gref fewer than ceil(buffer_sz / 4096); the slot stays 0 (C-04)
    LONG = "long"  # gref_dir_next_page of the last needed page names one more page (C-04)
    GREF0 = "gref0"  # a needed entry (the middle one) is 0 (C-05)
    REVOKED_BUFFER = "revoked-buffer"  # a listed buffer page's grant is ended before OPEN
    REVOKED_DIR = "revoked-dir"  # the first directory page's grant is ended before OPEN


@dataclass
class HostileBuffer:
    """Directory and buffer pages shared by the frontend, possibly malformed. Use
    :meth:`free` (or the :func:`hostile_buffer` context manager)."""

    grants: Grants
    size: int
    shape: DirShape
    dir_pages: list[SharedPages]
    buf_pages: SharedPages | None
    lock: Any = field(default_factory=threading.RLock)
    revoked: list[int] = field(default_factory=list)
    victim: SharedPages | None = None  # REVOKED_BUFFER: the listed page ended before OPEN
    freed: bool = False

    @property
    def dir_grefs(self) -> list[int]:
        return [p.refs[0] for p in self.dir_pages]

    @property
    def buf_grefs(self) -> list[int]:
        return list(self.buf_pages.refs) if self.buf_pages is not None else []

    @property
    def gref_directory(self) -> int:
        return self.dir_grefs[0]

    def directory(self) -> list[tuple[int, tuple[int, ...]]]:
        """Each directory page as written: ``(gref_dir_next_page, its 1023 slots)``."""
        return [codec.decode_page_directory(p.page(0)) for p in self.dir_pages]

    def write(self, offset: int, data: bytes) -> None:
        """Into the buffer pages (for payloads of raw WRITE / volume requests)."""
        if self.buf_pages is None:
            raise ValueError("no buffer pages")
        self.buf_pages.view[offset:offset + len(data)] = data

    def read(self, offset: int, length: int) -> bytes:
        if self.buf_pages is None:
            raise ValueError("no buffer pages")
        return bytes(self.buf_pages.view[offset:offset + length])

    def free(self) -> list[int]:
        """End every grant not yet ended and free the pages; returns the refs still mapped
        by their grantee (released at its unmap)."""
        if self.freed:
            return []
        busy = []
        with self.lock:
            for pages in [*self.dir_pages, self.buf_pages, self.victim]:
                if pages is None:
                    continue
                for ref in pages.refs:
                    if ref in self.revoked:
                        continue
                    with contextlib.suppress(OSError):
                        if not self.grants.revoke(ref):
                            busy.append(ref)
                with contextlib.suppress(OSError):
                    pages.free()
        self.freed = True
        return busy


def _num_pages(size: int) -> int:
    return -(-size // XEN_PAGE_SIZE)


def build_buffer(grants: Grants, backend_domid: int, buffer_sz: int,
                 shape: DirShape = DirShape.VALID, *, grantee: int | None = None,
                 readonly: bool = False, npages: int | None = None,
                 lock: Any = None) -> HostileBuffer:
    """Share ``npages`` (default ``ceil(buffer_sz / 4096)``, at least 1) buffer pages to
    ``grantee`` (default the backend; read-only if asked) and a directory of the given
    ``shape``, granted read/write to the backend. Directory pages list buffer pages in
    order, 1023 per page, unused slots 0 (SND-C-02, C-03)."""
    lock = lock if lock is not None else threading.RLock()
    n = max(1, _num_pages(buffer_sz) if npages is None else npages)
    listed = n - 1 if shape is DirShape.SHORT else n
    ndir = max(1, -(-listed // XENSND_PAGE_DIR_GREFS))
    extra_dir = 1 if shape is DirShape.LONG else 0
    buf = HostileBuffer(grants, buffer_sz, shape, [], None, lock)
    try:
        with lock:
            for _ in range(ndir + extra_dir):
                buf.dir_pages.append(grants.share_pages(1, backend_domid))
            buf.buf_pages = grants.share_pages(
                n, backend_domid if grantee is None else grantee, readonly)
        grefs = list(buf.buf_grefs[:listed])
        if shape is DirShape.GREF0:
            grefs[len(grefs) // 2] = 0
        elif shape is DirShape.REVOKED_BUFFER:
            # a page of its own in the listed page's slot: ending a grant takes unmapping its
            # page as well (Linux's gntalloc keeps a grant whose page is still mapped), and
            # one page of a multi-page mapping cannot be unmapped alone
            buf.victim = grants.share_pages(
                1, backend_domid if grantee is None else grantee, readonly)
            grefs[len(grefs) // 2] = buf.victim.refs[0]
        dirs = buf.dir_grefs
        per = XENSND_PAGE_DIR_GREFS
        for k in range(ndir + extra_dir):
            chunk = grefs[k * per:(k + 1) * per] if k < ndir else []
            if k + 1 < len(dirs):
                nxt = dirs[k + 1]
            else:
                nxt = dirs[0] if shape is DirShape.CYCLIC else 0
            page = codec.encode_page_directory(nxt, chunk)
            buf.dir_pages[k].page(0)[:len(page)] = page
        if shape is DirShape.REVOKED_BUFFER:
            assert buf.victim is not None
            _end(buf, buf.victim)
        elif shape is DirShape.REVOKED_DIR:
            _end(buf, buf.dir_pages[0])
    except BaseException:
        buf.free()
        raise
    return buf


def _end(buf: HostileBuffer, pages: SharedPages) -> None:
    """End the grants of ``pages`` and unmap them: a grant ended for good, on the sim and
    on a real host alike."""
    with buf.lock:
        for ref in pages.refs:
            buf.grants.revoke(ref)
            buf.revoked.append(ref)
        pages.free()


@contextlib.contextmanager
def hostile_buffer(stream: FrontendStream, buffer_sz: int,
                   shape: DirShape = DirShape.VALID, **kw: Any) -> Iterator[HostileBuffer]:
    """:func:`build_buffer` with the stream's device domain and backend; on the way out the
    stream is CLOSEd (so the backend lets go of whatever it mapped, C-12) and the pages
    freed."""
    dev = stream.device
    buf = build_buffer(dev.domain.grants, dev.backend_id, buffer_sz, shape,
                       lock=dev.hv_lock, **kw)
    try:
        yield buf
    finally:
        try:
            if stream.connected:
                call(stream, Op.CLOSE)
        finally:
            buf.free()


def open_with(stream: FrontendStream, buf: HostileBuffer | None, params: OpenParams,
              timeout: float | None = None, **changes: Any) -> Response | None:
    """A raw OPEN naming ``buf``'s directory (or ``changes["gref_directory"]``)."""
    fields = params.fields(**changes)
    fields.setdefault("gref_directory", buf.gref_directory if buf is not None else 0)
    return call(stream, Op.OPEN, timeout=timeout, **fields)


# --- the XenBus handshake by hand ---------------------------------------------------------

@dataclass
class _Channel:
    ring_pages: SharedPages
    evt_pages: SharedPages
    req_port: int
    evt_port: int
    ring: FrontRing
    events: EventConsumer
    next_id: int = 0


class ManualFrontend:
    """The frontend's side of the XenBus handshake, played by hand on ``domain`` (the
    device's own, after :meth:`FrontendDevice.close`): allocate rings and ports, publish
    any transport values, write any state, probe a ring. :meth:`release` frees it all."""

    def __init__(self, domain: Domain, fe_path: str, be_path: str, backend_id: int,
                 stream_paths: Iterable[str]) -> None:
        self.domain = domain
        self.store = domain.store
        self.fe_path, self.be_path, self.backend_id = fe_path, be_path, backend_id
        self.paths = list(stream_paths)
        self.channels: dict[str, _Channel] = {}

    def allocate(self) -> None:
        """Per stream: a zeroed, initialised ring page and event page granted read/write to
        the backend and two unbound ports (SND-A-10, A-11, B-01, B-17)."""
        g, ev = self.domain.grants, self.domain.evtchn
        for path in self.paths:
            ring = g.share_pages(1, self.backend_id)
            evt = g.share_pages(1, self.backend_id)
            ch = _Channel(ring, evt, 0, 0, FrontRing(ring.page(0)), EventConsumer(evt.page(0)))
            self.channels[path] = ch  # before the ports: release() frees what exists
            ch.ring.init_shared()
            ch.events.init_shared()
            ch.req_port = ev.alloc_unbound(self.backend_id)
            ch.evt_port = ev.alloc_unbound(self.backend_id)

    def transport(self, path: str) -> dict[str, str]:
        """The correct transport node values of one stream."""
        ch = self.channels[path]
        return {XsField.RING_REF: str(ch.ring_pages.refs[0]),
                XsField.EVT_CHNL: str(ch.req_port),
                XsField.EVT_RING_REF: str(ch.evt_pages.refs[0]),
                XsField.EVT_EVT_CHNL: str(ch.evt_port)}

    def publish(self, overrides: Mapping[str, Mapping[str, str | None]] | None = None
                ) -> None:
        """Write every stream's transport nodes in one transaction (A-11), with
        ``overrides[path][node]`` replacing a value (None: the node is removed)."""
        overrides = overrides or {}

        def body(tx: int) -> None:
            for path in self.paths:
                values: dict[str, str | None] = dict(self.transport(path))
                values.update(overrides.get(path, {}))
                for node, value in values.items():
                    full = f"{self.fe_path}/{path}/{node}"
                    if value is None:
                        with contextlib.suppress(XsError):
                            self.store.rm(full, tx)
                    else:
                        self.store.write(full, value, tx)

        in_transaction(self.store, body)

    def set_state(self, state: int | str) -> None:
        self.store.write(f"{self.fe_path}/{XsField.STATE}", str(state))

    def be_state(self) -> str | None:
        try:
            return self.store.read(f"{self.be_path}/{XsField.STATE}").decode(
                errors="replace")
        except XsError:
            return None

    def wait_be_state(self, states: Iterable[int], timeout: float) -> str | None:
        """Poll the backend state until it is one of ``states``; returns the last read."""
        want = {str(int(s)) for s in states}
        last: list[str | None] = [None]

        def seen() -> bool:
            last[0] = self.be_state()
            return last[0] in want

        wait_until(seen, timeout)
        return last[0]

    def probe(self, path: str, timeout: float = 3.0) -> Response | None:
        """One HW_PARAM_QUERY on the stream's ring (any status will do: the backend
        serves the ring); the decoded response, or None without an answer in time."""
        ch = self.channels[path]
        rid = ch.next_id
        ch.next_id += 1
        ch.ring.put_request(codec.encode_req(
            Op.HW_PARAM_QUERY, id=rid, formats=(1 << 25) - 1, rates_min=1,
            rates_max=0xFFFFFFFF, channels_min=1, channels_max=0xFF, buffer_min=1,
            buffer_max=0xFFFFFFFF, period_min=1, period_max=0xFFFFFFFF))
        if ch.ring.push_requests():
            self.domain.evtchn.notify(ch.req_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ch.ring.unconsumed_responses():
                raw = ch.ring.get_response()
                ch.ring.final_check_for_responses()
                return Response(*_resp_fields(raw), request=None)
            self.domain.evtchn.wait(0.02)
        return None

    def release(self) -> None:
        """Unbind the ports, end the grants, free the pages, remove the transport nodes."""
        g, ev = self.domain.grants, self.domain.evtchn
        for path, ch in self.channels.items():
            for port in (ch.req_port, ch.evt_port):
                if port:
                    with contextlib.suppress(OSError):
                        ev.unbind(port)
            for pages in (ch.ring_pages, ch.evt_pages):
                for ref in pages.refs:
                    with contextlib.suppress(OSError):
                        g.revoke(ref)
                with contextlib.suppress(OSError):
                    pages.free()
            for node in TRANSPORT:
                with contextlib.suppress(XsError):
                    self.store.rm(f"{self.fe_path}/{path}/{node}")
        self.channels.clear()


@contextlib.contextmanager
def taken_over(dev: FrontendDevice, settle_s: float) -> Iterator[ManualFrontend]:
    """The device's frontend closed (FE Closing -> BE InitWait -> FE Closed) and a
    hand-played one on its domain; on the way out, best effort (the case may have removed
    the device or killed the backend: the supervisor restarts what is broken), the same
    goodbye and everything released."""
    paths = [s.path for s in dev.streams]
    dev.close()
    mf = ManualFrontend(dev.domain, dev.fe_path, dev.be_path, dev.backend_id, paths)
    try:
        mf.allocate()
        yield mf
    finally:
        with contextlib.suppress(Exception):
            if mf.be_state() != str(int(XenbusState.InitWait)):
                mf.set_state(int(XenbusState.Closing))
                mf.wait_be_state([XenbusState.InitWait], settle_s)
            mf.set_state(int(XenbusState.Closed))
        mf.release()


def _resp_fields(raw: bytes) -> tuple[int, int, int, bytes, int]:
    rec = codec.decode_resp(raw)
    return rec.id, rec.operation, rec.status, raw, time.monotonic_ns()


def index_ahead(stream: FrontendStream, by: int) -> int:
    """``rsp_prod + by`` of the stream's ring as u32: an index lie for
    :meth:`FrontendStream.set_req_prod` (G-06)."""
    ch = stream.channel
    if ch is None:
        raise ValueError(f"stream {stream.path} is not connected")
    return u32(ch.ring.rsp_prod + by)


__all__ = [
    "NO_SUCH_DOMID", "RAW_ID_BASE", "DirShape", "HostileBuffer", "ManualFrontend",
    "OpenParams", "build_buffer", "call", "exchange", "hostile_buffer", "index_ahead",
    "late_responses", "open_with", "pick_open_params", "raw_id", "taken_over",
    "wait_until",
]
