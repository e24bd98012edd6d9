"""One vsnd device's frontend, watched from the backend: XenStore states and nodes,
transport, requests, page directories, event consumption, grants let go.

Fed by the reference backend's hooks (``harness.backends.reference.device``/``driver``);
reads only through :class:`Seam`, i.e. what the backend itself may read and map.
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.card_config import CardConfig, read_card_config
from harness.rings import (
    IN_CONS,
    IN_PROD,
    REQ_EVENT,
    REQ_PROD,
    RING_HEADER_SIZE,
    RSP_EVENT,
    RSP_PROD,
    notify_needed,
    u32,
)
from protocol_models import codec
from protocol_models.constants import (
    PCM_FORMATS,
    XEN_PAGE_SIZE,
    XENSND_RING_SIZE,
    Op,
    PcmFormat,
    Trigger,
    XsField,
    frame_size,
)
from protocol_models.xenbus import XenbusState

from .ledger import Ledger

S = XenbusState
TRANSPORT = (XsField.RING_REF, XsField.EVT_CHNL, XsField.EVT_RING_REF, XsField.EVT_EVT_CHNL)
#: Linux's topology limits (A-05, AMBIG-17): devices and streams beyond get no transport.
LINUX_MAX_DEVICES = LINUX_MAX_STREAMS = 8
#: A request published but neither notified nor consumed for this long broke B-02.
NOTIFY_GRACE_S = 0.3
#: An event left unconsumed this long while its stream is open broke B-14 (Linux
#: consumes in its interrupt thread at once).
CONSUME_GRACE_S = 0.25
#: A volume in 0.001 dB beyond +-200 dB is no volume: the region holds something else.
VOLUME_PLAUSIBLE = 200_000
_U32 = struct.Struct("<I")


class Seam(Protocol):
    """What the observer may do, as the backend: read XenStore, probe a grant."""

    def read(self, path: str) -> bytes | None: ...
    def tree(self, path: str) -> dict[str, bytes]: ...
    def still_granted(self, grefs: Sequence[int]) -> list[int]: ...


def _get(view: memoryview, off: int) -> int:
    value: int = _U32.unpack_from(view, off)[0]
    return value


@dataclass
class _Open:
    buffer_sz: int
    channels: int
    frame: int
    grefs: list[int]  # directory pages and buffer pages
    ok: bool = False


@dataclass
class StreamWatch:
    """What the judge keeps of one connected stream."""

    path: str
    ring: memoryview | None
    evt: memoryview | None
    refs: tuple[int, int]
    req_idx: int = 0  # index of the next request the backend consumes
    last_id: int | None = None
    last_req_prod: int = 0
    slot_resp: dict[int, bytes] = field(default_factory=dict)  # last response per slot
    dir_pages: list[tuple[int, bytes]] = field(default_factory=list)
    open: _Open | None = None
    released: list[_Open] = field(default_factory=list)  # let go, to probe
    stale_since: float | None = None
    evt_times: dict[int, float] = field(default_factory=dict)  # in_prod index -> time
    last_in_cons: int = 0
    consumed_ok: bool = False


class DeviceObserver:
    def __init__(self, ledger: Ledger, seam: Seam, fe_domid: int, devid: int,
                 fe_path: str, be_path: str) -> None:
        self.ledger, self.seam = ledger, seam
        self.fe_domid, self.devid = fe_domid, devid
        self.fe_path, self.be_path = fe_path, be_path
        self.fe_state: XenbusState | None = None
        self.be_state: XenbusState | None = None
        self.states: list[tuple[float, str, int | None]] = []  # (t, "fe"/"be", state)
        self.config: CardConfig | None = None
        self.streams: dict[str, StreamWatch] = {}
        self.gone: list[StreamWatch] = []  # disconnected, refs to probe at Closed
        self.error_times: list[float] = []
        self._check_paths()

    # --- XenStore -------------------------------------------------------------------

    def _check_paths(self) -> None:
        want = f"/local/domain/{self.fe_domid}/device/vsnd/{self.devid}"
        if self.fe_path == want:
            self.ledger.ok("SND-A-01", f"frontend directory {want}")
        else:
            self.ledger.fail("SND-A-01", f"the device's frontend directory is "
                             f"{self.fe_path!r}, expected {want!r}")

    def backend_state(self, state: XenbusState) -> None:
        self.be_state = state
        self.states.append((time.monotonic(), "be", int(state)))

    def frontend_state(self, raw: bytes | None) -> None:
        now = time.monotonic()
        prev = self.fe_state
        text = (raw or b"").decode(errors="replace").strip()
        if raw is not None:
            if text.isdigit():
                self.ledger.ok("SND-A-23", "state is a decimal string")
            else:
                self.ledger.fail("SND-A-23", f"FE state {raw!r} is not a decimal string")
        state = XenbusState.parse(raw)
        if state == prev:
            return
        self.fe_state = state
        self.states.append((now, "fe", None if state is None else int(state)))
        be = self.be_state
        if state == S.Initialised:
            self._initialised(be)
        elif state == S.Connected:
            if be == S.Connected and prev == S.Initialised:
                self.ledger.ok("SND-A-13", "Connected after backend Connected, from "
                               "Initialised")
                self.ledger.ok("SND-A-14", "backend Connected -> frontend Connected")
            else:
                self.ledger.fail("SND-A-13", f"frontend Connected while the backend is "
                                 f"{_name(be)} (frontend was {_name(prev)})")
            if prev != S.Initialised and be != S.Connected:
                self.ledger.fail("SND-A-10", f"frontend went Connected from {_name(prev)}, "
                                 "never Initialised after publishing its transport")
        elif state == S.Closing:
            self._fatal_error_node()
        elif state == S.Closed:
            self._closed(prev, be)
        elif state == S.Initialising and prev is not None and be in (S.Closed, S.Unknown,
                                                                     S.Initialising):
            self.ledger.ok("SND-A-14", f"backend {_name(be)} -> frontend Initialising")

    def _initialised(self, be: XenbusState | None) -> None:
        if be != S.InitWait:
            self.ledger.fail("SND-A-10", f"frontend Initialised while the backend is "
                             f"{_name(be)}, not InitWait")
        tree = self.seam.tree(self.fe_path)
        cfg = read_card_config(tree, max_devices=256, max_streams=256)
        if not isinstance(cfg, CardConfig):
            self.ledger.info("SND-A-06", f"the card configuration is rejected ({cfg}); the "
                             "frontend still went Initialised")
            return
        self.config = cfg
        self.ledger.ok("SND-A-06", "every stream typed p/c and the frontend went on")
        expected = {s.path for s in cfg.streams
                    if s.pcm < LINUX_MAX_DEVICES and s.stream < LINUX_MAX_STREAMS}
        published = set()
        for s in cfg.streams:
            values = {k: tree.get(f"{s.path}/{k}") for k in TRANSPORT}
            present = [k for k, v in values.items() if v is not None]
            if present:
                published.add(s.path)
            if s.path not in expected:
                continue
            missing = [k for k in TRANSPORT if values[k] is None]
            if missing:
                self.ledger.fail("SND-A-10", f"stream {s.path}: Initialised with "
                                 f"{', '.join(missing)} not published")
            else:
                self.ledger.ok("SND-A-10", "all four transport nodes before Initialised")
            for k in present:
                v = (values[k] or b"").decode(errors="replace")
                if v.isdigit() and int(v) <= 0xFFFF_FFFF:
                    self.ledger.ok("SND-A-11", "transport values decimal u32")
                    self.ledger.ok("SND-A-23", "transport values decimal")
                else:
                    self.ledger.fail("SND-A-11", f"stream {s.path}: {k} = {v!r} is not a "
                                     "decimal u32")
        extra = published - expected
        if published >= expected and not extra:
            self.ledger.ok("SND-A-05", f"transport for every stream found ({len(expected)})")
        elif extra:
            self.ledger.info("SND-A-05", f"transport for streams beyond Linux's limits: "
                             f"{sorted(extra)} (AMBIG-17)")
        else:
            self.ledger.fail("SND-A-05", f"no transport for {sorted(expected - published)}")

    def _fatal_error_node(self) -> None:
        dom = self.fe_path.split("/device/", 1)[0]
        node = f"{dom}/error/device/vsnd/{self.devid}/error"
        raw = self.seam.read(node)
        if raw is None:
            return  # a teardown's Closing, not a fatal error
        errno, _, text = raw.decode(errors="replace").partition(" ")
        if errno.isdigit() and int(errno) > 0 and text:
            self.ledger.ok("SND-A-21", f"fatal error {raw!r} written, then Closing")
        else:
            self.ledger.fail("SND-A-21", f"error node {node} = {raw!r}, not "
                             "'<positive errno> <text>'")

    def _closed(self, prev: XenbusState | None, be: XenbusState | None) -> None:
        if prev != S.Closing:
            self.ledger.fail("SND-A-15", f"frontend Closed straight from {_name(prev)}, "
                             "without Closing")
        elif be not in (S.InitWait, S.Closed):
            self.ledger.fail("SND-A-15", f"frontend Closed while the backend is "
                             f"{_name(be)} (Linux waits for InitWait)")
        else:
            self.ledger.ok("SND-A-15", f"Closing, backend {_name(be)}, then Closed")
        self.probe_all()

    # --- transport ------------------------------------------------------------------

    def connect_failed(self, message: str) -> None:
        if "binding port" in message or "mapping" in message:
            self.ledger.fail("SND-A-11", f"the backend could not use the transport: "
                             f"{message}")

    def stream_connected(self, path: str, params: Sequence[int], ring: memoryview,
                         evt: memoryview) -> None:
        hdr = bytes(ring[:RING_HEADER_SIZE])
        req_prod, rsp_prod = _get(ring, REQ_PROD), _get(ring, RSP_PROD)
        req_event, rsp_event = _get(ring, REQ_EVENT), _get(ring, RSP_EVENT)
        problems = []
        if req_prod != rsp_prod:
            problems.append(f"req_prod {req_prod} != rsp_prod {rsp_prod}")
        if req_event != u32(req_prod + 1) or rsp_event != u32(rsp_prod + 1):
            problems.append(f"req_event {req_event}, rsp_event {rsp_event} (want prod + 1)")
        if any(hdr[16:]):
            problems.append("pvt/padding not zero: " + hdr[16:].hex())
        if problems:
            self.ledger.fail("SND-B-01", f"stream {path}: ring not SHARED_RING_INIT'ed: "
                             + "; ".join(problems))
        else:
            self.ledger.ok("SND-B-01", "request ring initialised before it was published")
        self.ledger.ok("SND-A-11", "ring pages mapped read/write, both ports bound")
        w = StreamWatch(path, ring, evt, (params[0], params[2]), req_idx=rsp_prod,
                        last_req_prod=req_prod, last_in_cons=_get(evt, IN_CONS))
        self.streams[path] = w

    def stream_released(self, path: str) -> None:
        w = self.streams.pop(path, None)
        if w is not None:
            w.ring = w.evt = None  # never keep a view of pages the backend unmapped
            if w.open is not None:
                w.released.append(w.open)
                w.open = None
            self.gone.append(w)

    def directory_page(self, path: str, gref: int, page: bytes) -> None:
        w = self.streams.get(path)
        if w is not None:
            w.dir_pages.append((gref, page))

    # --- grants let go ----------------------------------------------------------------

    def _probe(self, w: StreamWatch, bufs: list[_Open], live: set[int], why: str) -> None:
        for o in bufs:
            refs = [g for g in o.grefs if g not in live]
            still = self.seam.still_granted(refs)
            if still:
                msg = (f"stream {w.path}: {len(still)} of {len(refs)} buffer grants still "
                       f"mappable {why} (grefs {still[:6]})")
                self.ledger.fail("SND-C-12", msg)
                self.ledger.fail("SND-C-03", msg)
            elif refs:
                self.ledger.ok("SND-C-12", f"buffer grants revoked {why}")
                self.ledger.ok("SND-C-03", f"buffer grants revoked {why}")

    def _live(self) -> set[int]:
        live: set[int] = set()
        for w in self.streams.values():
            live.update(w.refs)
            if w.open is not None:
                live.update(w.open.grefs)
        return live

    def probe_all(self) -> None:
        """Frontend Closed: nothing it shared may still be mappable (A-15, C-03)."""
        live = self._live()
        for w in [*self.gone, *self.streams.values()]:
            bufs = w.released + ([w.open] if w.open is not None and w not in
                                 self.streams.values() else [])
            self._probe(w, bufs, live, "after the frontend went Closed")
            w.released = []
            refs = [r for r in w.refs if r not in live]
            still = self.seam.still_granted(refs)
            if still:
                self.ledger.fail("SND-A-15", f"stream {w.path}: ring/event page grants "
                                 f"{still} still mappable after Closed")
        self.gone = []

    # --- requests ---------------------------------------------------------------------

    def request(self, path: str, raw: bytes, resp: bytes, values: list[int] | None = None
                ) -> None:
        w = self.streams.get(path)
        if w is None:
            return
        now = time.monotonic()
        req = codec.decode_req(raw)
        op = req.operation
        what = f"stream {path}: {_op(op)} id {req.id}"
        self._ring_checks(w, raw, req, what)
        if self.fe_state != S.Connected:  # the watch may lag the notification: re-read
            self.frontend_state(self.seam.read(f"{self.fe_path}/{XsField.STATE}"))
        if self.fe_state == S.Connected:
            self.ledger.ok("SND-G-02", "requests only while Connected")
        else:
            msg = f"{what} arrived while the frontend is {_name(self.fe_state)}"
            self.ledger.fail("SND-G-02", msg + " (Linux sends nothing unless connected)")
            self.ledger.fail("SND-A-13", msg + " (the sound device exists only once "
                             "Connected)")
        if w.released and op != Op.CLOSE:
            self._probe(w, w.released, self._live(), f"when {_op(op)} came after they "
                        "were let go")
            w.released = []
        status = codec.decode_resp(resp).status
        if op == Op.OPEN:
            self._open(w, req, what, status == 0)
        elif op == Op.CLOSE:
            if w.open is not None:
                w.released.append(w.open)
            w.open = None
        elif op in (Op.READ, Op.WRITE):
            self._rw(w, req, what)
        elif op == Op.TRIGGER:
            self._trigger(w, req, what)
        elif op == Op.HW_PARAM_QUERY:
            self._query(w, req, what)
        elif op in (Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE):
            self._volume(w, req, op, what, values)
        if status < 0:
            self.error_times.append(now)
        w.slot_resp[w.req_idx & (XENSND_RING_SIZE - 1)] = resp
        w.req_idx = u32(w.req_idx + 1)

    def _ring_checks(self, w: StreamWatch, raw: bytes, req: Any, what: str) -> None:
        assert w.ring is not None
        prod, rsp_prod = _get(w.ring, REQ_PROD), _get(w.ring, RSP_PROD)
        step = u32(prod - w.last_req_prod)
        if step > XENSND_RING_SIZE:
            self.ledger.fail("SND-B-10", f"req_prod went from {w.last_req_prod} to {prod}")
        else:
            self.ledger.ok("SND-B-10", "req_prod free-running forward")
        w.last_req_prod = prod
        outstanding = u32(prod - rsp_prod)
        if outstanding > XENSND_RING_SIZE:
            self.ledger.fail("SND-B-07", f"{outstanding} requests unanswered on the ring")
        else:
            self.ledger.ok("SND-B-07", f"at most {XENSND_RING_SIZE} unanswered")
        if not notify_needed(rsp_prod, u32(rsp_prod + 1), _get(w.ring, RSP_EVENT)):
            self.ledger.fail("SND-B-06", f"{what}: rsp_event {_get(w.ring, RSP_EVENT)} not "
                             f"re-armed past rsp_prod {rsp_prod}: its response will not be "
                             "notified")
        else:
            self.ledger.ok("SND-B-06", "rsp_event re-armed")
        self.ledger.ok("SND-B-02", "request notified")
        if w.last_id is None or req.id in (0, (w.last_id + 1) & 0xFFFF):
            self.ledger.ok("SND-B-11", "ids from a per-stream counter (reset to 0 at times)")
        else:
            self.ledger.fail("SND-B-11", f"{what} after id {w.last_id}: neither the next "
                             "id nor a reset to 0, as Linux's per-stream counter",
                             level="REF")
        w.last_id = req.id
        self._reserved(w, raw, req, what)

    def _reserved(self, w: StreamWatch, raw: bytes, req: Any, what: str) -> None:
        stale = w.slot_resp.get(w.req_idx & (XENSND_RING_SIZE - 1), bytes(64))
        dirty = [i for i in _reserved_offsets(req.operation) if raw[i]]
        if not dirty:
            self.ledger.ok("SND-B-12", "reserved bytes zero")
        elif all(raw[i] == stale[i] for i in dirty):
            self.ledger.info("SND-B-12", "reserved bytes hold the stale response of the "
                             "slot, as Linux leaves them (AMBIG-4)")
        else:
            self.ledger.fail("SND-B-12", f"{what}: reserved bytes {dirty[:8]} not zero and "
                             f"not the slot's stale response ({raw.hex()})")

    def _open(self, w: StreamWatch, req: Any, what: str, ok: bool) -> None:
        pages, w.dir_pages = w.dir_pages, []
        fmt, ch, rate = req.pcm_format, req.pcm_channels, req.pcm_rate
        bsz, psz = req.buffer_sz, req.period_sz
        try:
            frame = frame_size(fmt, ch)
        except ValueError:
            frame = 0
        hw = self._hw(w.path)
        problems = []
        if fmt not in {int(f) for f in PcmFormat}:
            problems.append(f"pcm_format {fmt} unknown")
        if hw is not None and not hw.channels_min <= ch <= hw.channels_max:
            problems.append(f"channels {ch} outside {hw.channels_min}..{hw.channels_max}")
        if bsz == 0:
            problems.append("buffer_sz 0")
        if psz > bsz:
            problems.append(f"period_sz {psz} > buffer_sz {bsz}")
        self._verdict("SND-C-01", problems, what, "OPEN fields valid")
        if hw is not None:
            fit = []
            if not hw.formats_mask >> fmt & 1:
                fit.append(f"format {fmt} not in the stream's sample-formats")
            if not hw.rate_min <= rate <= hw.rate_max:
                fit.append(f"rate {rate} outside {hw.rate_min}..{hw.rate_max}")
            self._verdict("SND-A-07", fit, what, "OPEN within the inherited space")
            big = [f"buffer_sz {bsz} > buffer-size {hw.buffer_bytes_max}"] \
                if bsz > hw.buffer_bytes_max else []
            self._verdict("SND-C-06", big, what, "buffer_sz within buffer-size")
        ref = []
        if frame and (bsz % frame or psz % frame):
            ref.append(f"buffer_sz {bsz} / period_sz {psz} not whole {frame}-octet frames")
        if psz < 64 or bsz < 2 * psz:
            ref.append(f"period_sz {psz}: Linux uses >= 64 octets and >= 2 periods")
        self._verdict("SND-C-07", ref, what, "whole frames, >= 2 periods of >= 64 octets")
        if req.gref_directory == 0:
            self.ledger.fail("SND-C-05", f"{what}: gref_directory is 0")
        grefs = self._directory(w, pages, bsz, req.gref_directory, what)
        w.open = _Open(bsz, ch, frame or 1, grefs, ok)

    def _directory(self, w: StreamWatch, pages: list[tuple[int, bytes]], bsz: int,
                   first: int, what: str) -> list[int]:
        need = -(-bsz // XEN_PAGE_SIZE)
        per = codec.PAGE_DIR_GREFS
        refs: list[int] = [g for g, _ in pages]
        entries: list[int] = []
        unused_dirty = False
        for k, (_gref, page) in enumerate(pages):
            nxt, slots = codec.decode_page_directory(page)
            take = min(per, need - k * per)
            entries.extend(slots[:take])
            unused_dirty |= any(slots[max(take, 0):])
            if len(entries) >= need and nxt != 0:
                self.ledger.fail("SND-C-02", f"{what}: the directory chain goes on (next "
                                 f"{nxt}) after all {need} grefs")
        if not pages:
            if first:
                self.ledger.fail("SND-C-02", f"{what}: directory page {first} not readable")
            return []
        nonzero = [g for g in entries if g]
        zero_at = [i for i, g in enumerate(entries) if not g]
        if zero_at and any(entries[zero_at[0]:]):
            self.ledger.fail("SND-C-05", f"{what}: the directory lists gref 0 at slot "
                             f"{zero_at[0]}, before further grefs")
        elif zero_at or len(entries) < need:
            self.ledger.fail("SND-C-02", f"{what}: buffer_sz {bsz} needs {need} grefs, the "
                             f"directory lists {len(nonzero)}")
        else:
            self.ledger.ok("SND-C-02", f"directory of {len(pages)} page(s) lists all "
                           f"{need} grefs, last next = 0")
            self.ledger.ok("SND-C-05", "no gref 0 in the directory")
        if unused_dirty:
            self.ledger.fail("SND-C-03", f"{what}: unused directory slots not zero")
        return refs + nonzero

    def _rw(self, w: StreamWatch, req: Any, what: str) -> None:
        o = w.open
        if o is None or not o.ok:
            self.ledger.fail("SND-C-08", f"{what}: no buffer is shared (no successful "
                             "OPEN)")
        elif req.offset >= o.buffer_sz or req.length > o.buffer_sz - req.offset:
            self.ledger.fail("SND-C-08", f"{what}: [{req.offset}, +{req.length}) passes "
                             f"the {o.buffer_sz}-octet buffer")
        else:
            self.ledger.ok("SND-C-08", "READ/WRITE inside the buffer")

    def _trigger(self, w: StreamWatch, req: Any, what: str) -> None:
        if req.type in {int(t) for t in Trigger}:
            self.ledger.ok("SND-D-01", "trigger type known")
        else:
            self.ledger.fail("SND-D-01", f"{what}: trigger type {req.type} unknown")
        if w.open is None or not w.open.ok:
            self.ledger.fail("SND-D-02", f"{what}: TRIGGER on a stream with no successful "
                             "OPEN (Linux triggers only a prepared stream)")
        elif req.type == Trigger.RESUME:
            self.ledger.info("SND-D-02", "RESUME sent (valid by D-01; Linux in practice "
                             "never sends it)")
        else:
            self.ledger.ok("SND-D-02", "triggers on a prepared stream")

    def _query(self, w: StreamWatch, req: Any, what: str) -> None:
        problems = [f"{n} min {lo} > max {hi}" for n, lo, hi in (
            ("rates", req.rates_min, req.rates_max),
            ("channels", req.channels_min, req.channels_max),
            ("buffer", req.buffer_min, req.buffer_max),
            ("period", req.period_min, req.period_max)) if lo > hi]
        if not req.formats:
            problems.append("formats mask empty")
        hw = self._hw(w.path)
        if hw is not None and not problems:
            widths = [i.width for f, i in PCM_FORMATS.items()
                      if req.formats >> int(f) & 1 and i.width]
            if widths and req.buffer_min * min(widths) * max(1, req.channels_min) \
                    > hw.buffer_bytes_max:
                problems.append(f"buffer min {req.buffer_min} frames exceeds buffer-size "
                                f"{hw.buffer_bytes_max} octets (frames, not octets?)")
        self._verdict("SND-F-01", problems, what, "query ranges well formed, in frames")
        if req.formats >> 25:
            self.ledger.fail("SND-F-07", f"{what}: formats bits >= 25 set "
                             f"({req.formats:#x})")
        else:
            self.ledger.ok("SND-F-07", "only sndif formats queried")
        if hw is not None and not problems:
            outside = req.formats & ~hw.formats_mask
            self._verdict("SND-A-07", [f"formats {outside:#x} beyond sample-formats"]
                          if outside else [], what, "query within the inherited space")

    def _volume(self, w: StreamWatch, req: Any, op: int, what: str,
                values: list[int] | None) -> None:
        o = w.open
        if o is None or not o.ok:
            self.ledger.fail("SND-H-01", f"{what} on a stream that is not open")
            return
        if req.offset >= o.buffer_sz or req.length > o.buffer_sz - req.offset:
            self.ledger.fail("SND-H-01", f"{what}: region passes the buffer")
            return
        self.ledger.ok("SND-H-01", "volume/mute in the open buffer")
        if op not in (Op.SET_VOLUME, Op.GET_VOLUME):
            return
        if req.length < 4 * o.channels:
            self.ledger.fail("SND-H-02", f"{what}: length {req.length} < 4 * "
                             f"{o.channels} channels")
        elif req.length != 4 * o.channels:
            self.ledger.fail("SND-H-02", f"{what}: length {req.length} != 4 * "
                             f"{o.channels}", level="SHOULD")
        else:
            self.ledger.ok("SND-H-02", "N s32 values")
        if op == Op.SET_VOLUME and values is not None:
            wild = [v for v in values if abs(v) > VOLUME_PLAUSIBLE]
            if wild:
                msg = (f"{what}: values {values} are no volumes in 0.001 dB (beyond "
                       f"+-{VOLUME_PLAUSIBLE // 1000} dB): the region holds other data")
                self.ledger.fail("SND-H-02", msg)
                self.ledger.fail("SND-H-01", msg)

    # --- polled -----------------------------------------------------------------------

    def tick(self, path: str, now: float | None = None) -> None:
        """Called from the backend's loop: a request left unnotified (B-02), events
        left unconsumed (B-14)."""
        w = self.streams.get(path)
        if w is None or w.ring is None or w.evt is None:
            return
        now = time.monotonic() if now is None else now
        prod, req_event = _get(w.ring, REQ_PROD), _get(w.ring, REQ_EVENT)
        if u32(prod - w.req_idx) and notify_needed(w.req_idx, prod, req_event):
            if w.stale_since is None:
                w.stale_since = now
            elif now - w.stale_since >= NOTIFY_GRACE_S:
                self.ledger.fail("SND-B-02", f"stream {w.path}: req_prod {prod} with "
                                 f"req_event {req_event} published but not notified for "
                                 f"{now - w.stale_since:.2f} s")
                w.stale_since = None
        else:
            w.stale_since = None
        self._consumption(w, now)

    def _consumption(self, w: StreamWatch, now: float) -> None:
        assert w.evt is not None
        cons, prod = _get(w.evt, IN_CONS), _get(w.evt, IN_PROD)
        if u32(prod - cons) > 63 or u32(cons - w.last_in_cons) > 63:
            self.ledger.fail("SND-B-14", f"stream {w.path}: in_cons {cons} moved outside "
                             f"[{w.last_in_cons}, in_prod {prod}]")
        elif cons != w.last_in_cons:
            self.ledger.ok("SND-B-14", "in_cons follows in_prod")
        w.last_in_cons = cons
        for idx in range(u32(prod - cons)):
            w.evt_times.setdefault(u32(cons + idx), now)
        for idx in [i for i in w.evt_times if u32(i - cons) > 63]:
            del w.evt_times[idx]  # consumed
        if w.open is None or not w.evt_times:
            w.evt_times.clear() if w.open is None else None
            return  # Linux leaves events queued while its stream is closed (B-14 REF)
        oldest = min(w.evt_times.values())
        if now - oldest >= CONSUME_GRACE_S:
            self.ledger.fail("SND-B-14", f"stream {w.path}: events up to in_prod {prod} "
                             f"unconsumed for {now - oldest:.2f} s while open (in_cons "
                             f"{cons})")
            w.evt_times.clear()

    # --- helpers ----------------------------------------------------------------------

    def _hw(self, path: str) -> Any:
        if self.config is None:
            return None
        for s in self.config.streams:
            if s.path == path:
                return s.hw
        return None

    def _verdict(self, clause: str, problems: list[str], what: str, ok: str) -> None:
        if problems:
            self.ledger.fail(clause, f"{what}: " + "; ".join(problems))
        else:
            self.ledger.ok(clause, ok)

    def finish(self) -> None:
        """The end: G-03 from the error statuses answered, A-14 if nothing else."""
        for t in self.error_times:
            after = [s for ts, who, s in self.states if who == "fe" and t < ts < t + 1.0]
            if after and after[0] != int(S.Closing):
                self.ledger.fail("SND-G-03", f"frontend state {after[0]} within 1 s of an "
                                 "error status (no status changes XenBus state)")
            else:
                self.ledger.ok("SND-G-03", "error statuses left the XenBus state alone")


@functools.cache
def _reserved_offsets(op: int) -> tuple[int, ...]:
    """The reserved bytes of a request of ``op``, from the models (B-12)."""
    try:
        fields = codec.req_codec(op).fields
    except (KeyError, ValueError):
        return ()
    return tuple(i for f in fields if "reserved" in f.name
                 for i in range(f.offset, f.offset + f.size))


def _name(state: XenbusState | None) -> str:
    return "missing" if state is None else state.name


def _op(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"op{op}"
