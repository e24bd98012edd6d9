"""I/O for one vsnd device: XenStore reads/writes, grant maps, event-channel binds, all
through the platform seam (``api.Domain``). The decisions are made by
:class:`BackendFsm` and :class:`StreamCore`; this module only carries them out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.card_config import CardConfig, read_card_config
from harness.fejudge import FrontendJudge
from harness.fejudge.observer import DeviceObserver
from harness.rings import BackRing, EventProducer
from harness.trace import Trace
from harness.xen.api import Domain, Mapping
from protocol_models.constants import XEN_PAGE_SIZE, XenErrno, XsField
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

from .audio_io import AudioFactory
from .buffers import MapError
from .channel import StreamChannel
from .defects import NO_DEFECTS, Defects
from .hw_space import StreamSpace
from .stream import StreamCore, StreamInfo, StreamState
from .xenbus_be import Action, BackendFsm, Connect, Disconnect, Log, SetState, WriteError

log = logging.getLogger("harness.backends.reference")

#: Generous topology limits for reading the config: the backend serves what the toolstack
#: configured, the FE decides how much of it it uses (AMBIG-17).
MAX_DEVICES = 256
MAX_STREAMS = 256
#: sndif.h "Protocol version": what this backend publishes in ``versions`` (A-04).
VERSIONS = "2"
TRANSPORT = (XsField.RING_REF, XsField.EVT_CHNL, XsField.EVT_RING_REF, XsField.EVT_EVT_CHNL)


class ConnectError(Exception):
    def __init__(self, message: str, errno: int = int(XenErrno.EINVAL)) -> None:
        super().__init__(message)
        self.errno = errno


def read_tree(store: Any, path: str, depth: int = 4) -> dict[str, bytes]:
    """``{relative path: value}`` of the subtree (the input of ``read_card_config``)."""
    out: dict[str, bytes] = {}

    def walk(rel: str, level: int) -> None:
        full = f"{path}/{rel}" if rel else path
        try:
            children = store.directory(full)
        except XsError:
            return
        for child in children:
            sub = f"{rel}/{child}" if rel else child
            try:
                out[sub] = store.read(f"{path}/{sub}")
            except XsError:
                continue
            if level < depth:
                walk(sub, level + 1)

    walk("", 1)
    return out


class SeamMemory:
    """:class:`GrantMemory` over ``api.Grants``: the FE's pages, traced."""

    def __init__(self, domain: Domain, fe_domid: int, trace: Trace | None, stream: str,
                 on_page: Callable[[int, bytes], None] | None = None) -> None:
        self.domain, self.fe_domid, self.trace, self.stream = domain, fe_domid, trace, stream
        self.on_page = on_page  # the frontend judge sees every directory page read

    def _map(self, refs: Sequence[int], readonly: bool, what: str) -> Mapping:
        try:
            m = self.domain.grants.map(self.fe_domid, refs, readonly)
        except (OSError, ValueError) as exc:
            raise MapError(f"mapping {what} grefs {list(refs)[:4]}...: {exc}") from None
        if self.trace is not None:
            self.trace.record("map", self.domain.domid, granter=self.fe_domid,
                              refs=list(refs), readonly=readonly, what=what,
                              stream=self.stream)
        return m

    def _unmap(self, m: Mapping, what: str) -> None:
        m.unmap()
        if self.trace is not None:
            self.trace.record("unmap", self.domain.domid, granter=self.fe_domid,
                              refs=list(m.refs), what=what, stream=self.stream)

    def read_page(self, gref: int) -> bytes:
        m = self._map([gref], True, "directory")
        try:
            page = bytes(m.view[:XEN_PAGE_SIZE])
        finally:
            self._unmap(m, "directory")
        if self.on_page is not None:
            self.on_page(gref, page)
        return page

    def map_buffer(self, grefs: Sequence[int]) -> _TracedBuffer:
        return _TracedBuffer(self, self._map(grefs, False, "buffer"))


class _TracedBuffer:
    def __init__(self, memory: SeamMemory, mapping: Mapping) -> None:
        self._memory, self._mapping = memory, mapping
        self._done = False

    @property
    def view(self) -> memoryview:
        return self._mapping.view

    def unmap(self) -> None:
        if not self._done:
            self._done = True
            self._memory._unmap(self._mapping, "buffer")


class JudgeSeam:
    """What the frontend judge may do through this device: read XenStore, and probe
    whether grants the frontend let go are still mappable (mapped read-only, unmapped at
    once)."""

    def __init__(self, device: VsndDevice) -> None:
        self.device = device

    def read(self, path: str) -> bytes | None:
        return self.device._read(path)

    def tree(self, path: str) -> dict[str, bytes]:
        return read_tree(self.device.store, path)

    def still_granted(self, grefs: Sequence[int]) -> list[int]:
        d = self.device
        still = []
        for ref in grefs:
            try:
                d.domain.grants.map(d.fe_domid, [ref], True).unmap()
            except (OSError, ValueError):
                continue
            still.append(ref)
        return still


@dataclass
class Connection:
    """One connected stream: its channel and what to give back at teardown."""

    path: str  # "<pcm>/<stream>"
    channel: StreamChannel | None = None
    maps: list[Mapping] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)  # local: [request port, event port]

    @property
    def req_port(self) -> int:
        return self.ports[0]

    @property
    def evt_port(self) -> int:
        return self.ports[1]


class VsndDevice:
    """One ``/local/domain/<be>/backend/vsnd/<fe>/<devid>`` device."""

    def __init__(self, domain: Domain, be_path: str, fe_domid: int, devid: int,
                 audio: AudioFactory, trace: Trace | None = None,
                 on_ports: Callable[[VsndDevice], None] | None = None,
                 defects: Defects = NO_DEFECTS, judge: FrontendJudge | None = None) -> None:
        self.domain = domain
        self.judge = judge  # --judge-frontend: watches, never changes an answer
        self.observer: DeviceObserver | None = None
        self.defects = defects
        self.store = domain.store
        self.be_path = be_path
        self.fe_domid = fe_domid
        self.devid = devid
        self.audio = audio
        self.trace = trace
        self.on_ports = on_ports  # the driver re-indexes its port table
        self.fsm = BackendFsm(defects)
        self.fe_path = ""
        self.connections: list[Connection] = []
        self.token = f"vsnd-be-fe-{fe_domid}-{devid}"
        self.watching = False

    @property
    def name(self) -> str:
        return f"vsnd{self.fe_domid}-{self.devid}"

    # --- xenstore helpers ----------------------------------------------------------------

    def _read(self, path: str) -> bytes | None:
        try:
            return self.store.read(path)
        except XsError:
            return None

    def _write(self, path: str, value: str) -> None:
        self.store.write(path, value)
        if self.trace is not None:
            self.trace.record("xs", self.domain.domid, op="write", path=path, value=value)

    def read_state(self, path: str) -> XenbusState | None:
        return XenbusState.parse(self._read(path))

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Validate the device (A-09), then watch the FE state."""
        ok, why = self._validate()
        if self.judge is not None and self.fe_path and self.observer is None:
            self.observer = self.judge.device(JudgeSeam(self), self.fe_domid, self.devid,
                                              self.fe_path, self.be_path)
        if ok:  # before InitWait, so a frontend reacting to InitWait finds it
            self._write(f"{self.be_path}/{XsField.BE_VERSIONS}", VERSIONS)
        self.run(self.fsm.start(ok, why))
        if self.fe_path and not self.fsm.failed:
            self.store.watch(f"{self.fe_path}/{XsField.STATE}", self.token)
            self.watching = True

    def _validate(self) -> tuple[bool, str]:
        fe = self._read(f"{self.be_path}/{XsField.FRONTEND}")
        fe_id = self._read(f"{self.be_path}/{XsField.FRONTEND_ID}")
        if fe is None or fe_id is None:
            return False, "frontend or frontend-id missing"
        self.fe_path = fe.decode(errors="replace").rstrip("\0")
        if fe_id.strip() != str(self.fe_domid).encode():
            return False, f"frontend-id {fe_id!r} does not match the path ({self.fe_domid})"
        cfg = self.read_config()
        if isinstance(cfg, str):
            return False, cfg
        return True, ""

    def read_config(self) -> CardConfig | str:
        result = read_card_config(read_tree(self.store, self.fe_path),
                                  max_devices=MAX_DEVICES, max_streams=MAX_STREAMS)
        if not result.ok:
            return f"configuration rejected: {result}"
        assert isinstance(result, CardConfig)
        return result

    def on_watch(self, path: str) -> None:
        """A watch event under the BE dir or on the FE state node."""
        if path == f"{self.fe_path}/{XsField.STATE}":
            version = (self._read(f"{self.fe_path}/version")
                       if self.defects.has("require-version-node") else None)
            raw = self._read(path)
            if self.observer is not None:
                self.observer.frontend_state(raw)
            self.run(self.fsm.frontend_state(XenbusState.parse(raw), version))
            if self.judge is not None and XenbusState.parse(raw) == XenbusState.Closed:
                self.judge.write()  # a connection ended: its verdicts so far
            return
        online = self._read(f"{self.be_path}/{XsField.ONLINE}")
        state = self.read_state(f"{self.be_path}/{XsField.STATE}")
        self.run(self.fsm.backend_nodes(None if online is None else online.strip() != b"0",
                                        state))

    def backend_state_node(self) -> XenbusState | None:
        return self.read_state(f"{self.be_path}/{XsField.STATE}")

    def frontend_failed(self, message: str) -> None:
        if self.trace is not None:
            self.trace.record("violation", self.domain.domid, device=self.name,
                              clause="SND-G-06", message=message)
        self.run(self.fsm.frontend_failed(message))

    def run(self, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, SetState):
                if self.observer is not None:
                    self.observer.backend_state(action.state)
                self._write(f"{self.be_path}/{XsField.STATE}", str(int(action.state)))
                old = action.old.name if action.old is not None else "?"
                log.info("%s: BE %s -> %s (%s)", self.name, old, action.state.name,
                         action.why)
                if self.trace is not None:
                    self.trace.record("state", self.domain.domid, device=self.name,
                                      side="be", state=action.state.name, why=action.why)
            elif isinstance(action, Log):
                log.debug("%s: %s", self.name, action.message)
                if self.trace is not None:
                    self.trace.record("backend", self.domain.domid, device=self.name,
                                      note=action.message)
            elif isinstance(action, WriteError):
                log.error("%s: %s", self.name, action.message)
                try:
                    self._write(f"{self.be_path}/error", f"{action.errno} {action.message}")
                except XsError:
                    pass
            elif isinstance(action, Connect):
                try:
                    self.connect()
                except ConnectError as exc:
                    pending[:0] = self.fsm.connect_result(False, exc.errno, str(exc))
                else:
                    pending[:0] = self.fsm.connect_result(True)
            elif isinstance(action, Disconnect):
                self.disconnect()

    # --- transport (A-12) ----------------------------------------------------------------

    def _transport(self, path: str) -> tuple[int, ...] | None:
        values = [self._read(f"{self.fe_path}/{path}/{k}") for k in TRANSPORT]
        if all(v is None for v in values):
            return None  # not published: the FE does not use this stream (AMBIG-17)
        nums = []
        for key, v in zip(TRANSPORT, values, strict=True):
            text = (v or b"").decode(errors="replace").strip()
            if not text.isdigit() or int(text) > 0xFFFF_FFFF:
                raise ConnectError(f"{path}/{key} is {v!r}, not a decimal u32 (A-11)")
            nums.append(int(text))
        return tuple(nums)

    def connect(self) -> None:
        """Map ring and event page, bind both ports, for every published stream."""
        cfg = self.read_config()
        if isinstance(cfg, str):
            raise ConnectError(cfg)
        try:
            for s in cfg.streams:
                params = self._transport(s.path)
                if params is None:
                    continue
                self.connections.append(self._connect_stream(s, params))
            if not self.connections:
                raise ConnectError("no stream has transport nodes")
        except ConnectError as exc:
            if self.observer is not None:
                self.observer.connect_failed(str(exc))
            self.disconnect()
            raise
        except (OSError, XsError, ValueError) as exc:
            self.disconnect()
            raise ConnectError(f"connect: {exc}", int(XenErrno.EIO)) from None
        if self.on_ports is not None:
            self.on_ports(self)

    def _connect_stream(self, s: Any, params: tuple[int, ...]) -> Connection:
        ring_ref, req_port, evt_ref, evt_port = params
        sname = f"{self.name}-{s.pcm}-{s.stream}"
        info = StreamInfo(sname, s.type, StreamSpace.from_pcm_hw(s.hw))
        obs = self.observer
        memory = SeamMemory(self.domain, self.fe_domid, self.trace, sname,
                            None if obs is None else
                            lambda gref, page: obs.directory_page(s.path, gref, page))
        conn = Connection(s.path)
        try:
            for ref in (ring_ref, evt_ref):
                try:
                    conn.maps.append(memory._map([ref], False, "ring"))
                except MapError as exc:
                    raise ConnectError(str(exc), int(XenErrno.EFAULT)) from None
            for port in (req_port, evt_port):
                try:
                    conn.ports.append(self.domain.evtchn.bind_interdomain(self.fe_domid,
                                                                          port))
                except OSError as exc:
                    raise ConnectError(f"binding port {port}: {exc}", int(XenErrno.EIO)) \
                        from None
        except BaseException:
            self._release(conn)  # what this stream took so far; the rest via disconnect
            raise
        if obs is not None:
            obs.stream_connected(s.path, params, conn.maps[0].view[:XEN_PAGE_SIZE],
                                 conn.maps[1].view[:XEN_PAGE_SIZE])
        ring = BackRing(conn.maps[0].view[:XEN_PAGE_SIZE])
        ring.attach()
        events = EventProducer(conn.maps[1].view[:XEN_PAGE_SIZE])
        events.attach()
        core = StreamCore(info, memory, self.audio, on_state=self._stream_state(sname),
                          defects=self.defects)
        conn.channel = StreamChannel(core, ring, events,
                                     on_request=self._trace_request(sname, s.path, core),
                                     on_event=self._trace_event(sname))
        log.info("%s: stream %s connected (ports %d/%d)", self.name, s.path, *conn.ports)
        return conn

    def _stream_state(self, sname: str) -> Callable[[StreamState, StreamState], None]:
        def changed(old: StreamState, new: StreamState) -> None:
            log.info("%s: stream %s -> %s", sname, old.name, new.name)
            if self.trace is not None:
                self.trace.record("state", self.domain.domid, stream=sname, side="be",
                                  state=new.name)
        return changed

    def _trace_request(self, sname: str, path: str, core: StreamCore
                       ) -> Callable[[bytes, bytes], None]:
        def traced(req: bytes, resp: bytes) -> None:
            if self.trace is not None:
                self.trace.record("req", self.domain.domid, stream=sname, raw=req)
                self.trace.record("resp", self.domain.domid, stream=sname, raw=resp)
            if self.observer is not None:  # SET_VOLUME: the values the backend read
                volume = None if core.opened is None else list(core.opened.volume)
                self.observer.request(path, req, resp, volume)
        return traced

    def _trace_event(self, sname: str) -> Callable[[bytes], None]:
        def traced(msg: bytes) -> None:
            if self.trace is not None:
                self.trace.record("evt", self.domain.domid, stream=sname, raw=msg)
        return traced

    def disconnect(self) -> None:
        """Close every stream (unmapping buffers), unmap the pages, unbind the ports (A-16).
        Best effort: one failure does not keep the rest mapped."""
        conns, self.connections = self.connections, []
        for conn in conns:
            self._release(conn)
        if self.on_ports is not None:
            self.on_ports(self)

    def _release(self, conn: Connection) -> None:
        if self.observer is not None:
            self.observer.stream_released(conn.path)
        if conn.channel is not None:
            try:
                conn.channel.core.close()
            except Exception:
                log.exception("%s: closing stream %s", self.name, conn.path)
        for m in conn.maps:
            try:
                m.unmap()
                if self.trace is not None:
                    self.trace.record("unmap", self.domain.domid, granter=self.fe_domid,
                                      refs=list(m.refs), what="ring")
            except Exception:
                log.exception("%s: unmapping", self.name)
        for port in conn.ports:
            try:
                self.domain.evtchn.unbind(port)
            except Exception:
                log.exception("%s: unbinding port %d", self.name, port)
        conn.maps, conn.ports, conn.channel = [], [], None

    def shutdown(self, write_closed: bool) -> None:
        """Process exit: release everything; optionally tell the FE we are gone."""
        if self.watching:
            try:
                self.store.unwatch(f"{self.fe_path}/{XsField.STATE}", self.token)
            except (XsError, OSError):
                pass
            self.watching = False
        self.disconnect()
        self.fsm.resources = False
        if write_closed and not self.fsm.removed and self.fsm.state != XenbusState.Closed:
            try:
                self.run(self.fsm._to(XenbusState.Closed, "backend exiting"))
            except (XsError, OSError):
                pass
