"""The thin I/O driver of the reference frontend: one device, its streams, one I/O thread.

It does what Linux's ``xen-snd-front`` does around the sans-IO parts: the
:class:`~harness.frontend.xenbus_fsm.FrontendFsm` decides the XenBus handshake (A-10..A-21)
and this module carries out its actions through the platform seam only (``api.Domain``);
:mod:`stream_core` does the per-stream protocol. The I/O thread polls the event-channel
handle's fd and the XenStore watch (both with timeouts), consumes responses (re-arming
with FINAL_CHECK, B-06) and events, and owns the FSM: other threads post commands to it.

The streams (typed calls, raw API, violations) are :class:`~harness.frontend.stream.
FrontendStream`; the device adds ``publish_transport`` for arbitrary transport values.

Note: XenStore watch events of the domain's store connection are taken by this driver's
thread; events carrying another token are dropped, so give the device its own domain
connection.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from harness.card_config import CardConfig, ConfigError, StreamConfig, read_card_config
from harness.trace import Trace
from harness.xen.api import Domain, in_transaction
from protocol_models.constants import (
    VSND_WAIT_BACK_MS,
    XenErrno,
    XsField,
)
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

from . import violations as V
from .defects import FrontendDefects, current
from .errors import (
    ConnectTimeout,
    FrontendError,
)
from .stream import FrontendStream
from .xenbus_fsm import (
    AllocateAndPublishTransport,
    BackendPolled,
    BackendStateChanged,
    ConfigRead,
    CreateDevice,
    DestroyDevice,
    DeviceCreated,
    FreeChannels,
    FrontendFsm,
    LogError,
    PollBackendState,
    ReadConfig,
    TeardownRequested,
    TransportPublished,
    WatchBackendState,
    WriteFatalError,
    WriteFrontendState,
    driver_state,
    polled_state,
)

_POLL_S = 0.005  # I/O thread poll period: bounds watch latency, not event latency
_tokens = itertools.count()
TRANSPORT_NODES = {"ring_ref": XsField.RING_REF, "event_channel": XsField.EVT_CHNL,
                   "evt_ring_ref": XsField.EVT_RING_REF,
                   "evt_event_channel": XsField.EVT_EVT_CHNL}


class FrontendDevice:
    """A vsnd frontend device of ``domain`` (``device/vsnd/<devid>``), connecting the way
    Linux does. Starts at once; :meth:`wait_connected`, :meth:`close`."""

    def __init__(self, domain: Domain, devid: int = 0, *, trace: Trace | None = None,
                 timeout_ms: int = VSND_WAIT_BACK_MS, start: bool = True,
                 defects: FrontendDefects | None = None) -> None:
        self.domain = domain
        self.defects = current() if defects is None else defects  # injected bugs
        self.store = domain.store
        self.domid = domain.domid
        self.devid = devid
        self.trace = trace if trace is not None else Trace()
        self.timeout_ms = timeout_ms
        self.hv_lock = threading.RLock()  # grants/evtchn clients are not thread-safe
        self.dom_path = self.store.get_domain_path(self.domid)
        self.nodename = f"device/vsnd/{devid}"
        self.fe_path = f"{self.dom_path}/{self.nodename}"
        try:
            self.be_path = self.store.read(f"{self.fe_path}/{XsField.BACKEND}").decode()
            self.backend_id = int(self.store.read(f"{self.fe_path}/{XsField.BACKEND_ID}"))
        except (XsError, ValueError) as exc:
            raise FrontendError(f"{self.fe_path}: no usable backend/backend-id: {exc}"
                                ) from exc
        self.fsm = FrontendFsm()
        self.config: CardConfig | None = None
        self.config_error: ConfigError | None = None
        self.streams: list[FrontendStream] = []
        self.generation = 0  # connections made (CreateDevice count)
        self.be_state: int | None = None
        self._token = f"sndfront-{self.domid}-{devid}-{next(_tokens)}"
        self._state_cond = threading.Condition()
        self._commands: queue.Queue[tuple[Callable[[], Any], threading.Event]] = queue.Queue()
        self._ports: dict[int, tuple[FrontendStream, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watching = False
        self.errors: list[str] = []  # driver-side failures (not backend violations)
        if start:
            self.start()

    # -- public ------------------------------------------------------------------------

    @property
    def state(self) -> XenbusState:
        return self.fsm.state

    @property
    def running(self) -> bool:
        """True from :meth:`start` until :meth:`close` (the I/O thread runs)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def violations(self) -> list[V.Violation]:
        return [v for s in self.streams for v in s.violations]

    def stream(self, key: int | str) -> FrontendStream:
        """By channel index or ``"<pcm>/<stream>"`` path."""
        for s in self.streams:
            if s.path == key or s.index == key:
                return s
        raise KeyError(f"no stream {key!r}")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=f"sndfront-{self.devid}",
                                        daemon=True)
        self._thread.start()
        self._post(lambda: self._run(self.fsm.start()), wait=None)

    def wait_connected(self, timeout: float = 10.0, *, generation: int | None = None) -> None:
        """Wait for FE Connected (after connection number ``generation``, if given)."""
        want = generation or 1
        deadline = time.monotonic() + timeout
        with self._state_cond:
            while not (self.fsm.state == XenbusState.Connected and self.generation >= want):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectTimeout(
                        f"{self.fe_path}: FE {self.fsm.state.name}, BE state "
                        f"{self.be_state}, connections {self.generation} (wanted {want})"
                        + (f"; config error {self.config_error}" if self.config_error
                           else ""))
                self._state_cond.wait(min(left, 0.1))

    def close(self, timeout: float = 5.0) -> None:
        """FE-initiated teardown (SND-A-15): Closing, poll BE for InitWait (<= ~1 s),
        free everything, Closed. Then stop the I/O thread."""
        if self._thread is None:
            return
        if self._thread.is_alive() and not self.fsm.removed:
            self._post(lambda: self._run(self.fsm.handle(TeardownRequested())),
                       wait=timeout)
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        if self._watching:
            with contextlib.suppress(XsError, OSError):
                self.store.unwatch(f"{self.be_path}/{XsField.STATE}", self._token)
            self._watching = False

    def __enter__(self) -> FrontendDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish_transport(self, stream: FrontendStream | int | str, **values: Any) -> None:
        """Write arbitrary transport values (``ring_ref``, ``event_channel``,
        ``evt_ring_ref``, ``evt_event_channel`` or raw node names) in one transaction."""
        s = stream if isinstance(stream, FrontendStream) else self.stream(stream)
        base = f"{self.fe_path}/{s.path}"

        def body(tx: int) -> None:
            for key, value in values.items():
                node = TRANSPORT_NODES.get(key, key)
                self.store.write(f"{base}/{node}", str(value), tx)

        in_transaction(self.store, body)
        self.trace.record("xs", self.domid, op="publish_transport", path=base,
                          values={k: str(v) for k, v in values.items()})

    def notify(self, port: int, stream: str | None = None) -> None:
        with self.hv_lock:
            self.domain.evtchn.notify(port)
        self.trace.record("notify", self.domid, port=port, stream=stream)

    # -- tracing helpers ---------------------------------------------------------------

    def trace_msg(self, kind: str, raw: bytes, **fields: Any) -> None:
        self.trace.record(kind, self.domid, raw=raw, **fields)

    def trace_note(self, text: str) -> None:
        self.trace.record("note", self.domid, text=text)

    # -- the I/O thread ----------------------------------------------------------------

    def _post(self, fn: Callable[[], Any], wait: float | None) -> None:
        done = threading.Event()
        self._commands.put((fn, done))
        if wait is not None and not done.wait(wait):
            self.errors.append("command did not complete in time")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._step(self._run_commands)
            self._step(self._poll_watch)
            self._step(self._poll_evtchn)

    def _step(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # the thread must survive anything a peer does
            self.errors.append(f"{fn.__name__}: {exc!r}")
            self.trace_note(f"driver error in {fn.__name__}: {exc!r}")
            time.sleep(_POLL_S)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            finally:
                done.set()

    def _poll_watch(self) -> None:
        ev = self.store.next_event(0)
        while ev is not None:
            if ev.token == self._token:
                self._backend_changed()
            ev = self.store.next_event(0)

    def _backend_changed(self) -> None:
        raw = self._read(f"{self.be_path}/{XsField.STATE}")
        state = driver_state(raw)
        if state != self.be_state:
            self.trace.record("state", self.domid, who="backend", path=self.be_path,
                              state=state)
        self.be_state = state
        self._run(self.fsm.handle(BackendStateChanged(state)))

    def _poll_evtchn(self) -> None:
        try:
            fd = self.domain.evtchn.fileno()
            ready, _, _ = select.select([fd], [], [], _POLL_S)
        except (OSError, ValueError):
            time.sleep(_POLL_S)
            return
        if not ready:
            return
        with self.hv_lock:
            fired = self.domain.evtchn.wait(0)
        for port in fired:
            target = self._ports.get(port)
            if target is None:
                continue
            stream, which = target
            if which == "req":
                stream.on_responses()
            else:
                stream.on_events()

    def _read(self, path: str) -> bytes | None:
        try:
            return self.store.read(path)
        except XsError:
            return None

    # -- FSM actions -------------------------------------------------------------------

    def _run(self, actions: list[Any]) -> None:
        todo = deque(actions)
        while todo:
            action = todo.popleft()
            outcome = self._do(action)
            if outcome is not None:
                todo.extend(self.fsm.handle(outcome))
        with self._state_cond:
            self._state_cond.notify_all()

    def _do(self, action: Any) -> Any:
        if isinstance(action, WatchBackendState):
            self.store.watch(f"{self.be_path}/{XsField.STATE}", self._token)
            self._watching = True
        elif isinstance(action, ReadConfig):
            return ConfigRead(self._read_config())
        elif isinstance(action, AllocateAndPublishTransport):
            return self._allocate_and_publish(action.streams)
        elif isinstance(action, WriteFrontendState):
            state = self._defective_state(action.state)
            if state is not None:
                self.store.write(f"{self.fe_path}/{XsField.STATE}", str(int(state)))
                self.trace.record("state", self.domid, who="frontend", path=self.fe_path,
                                  state=int(state))
        elif isinstance(action, FreeChannels):
            self._free_channels()
        elif isinstance(action, CreateDevice):
            for s in self.streams:
                s.connected = True
            if self.defects.has("request-before-connected") and self.streams:
                self.streams[0].send_raw(self.streams[0].query_request())
                time.sleep(0.3)  # the backend serves it while we are still Initialised
            self.generation += 1
            return DeviceCreated(True)
        elif isinstance(action, DestroyDevice):
            for s in self.streams:
                s.disconnect()
        elif isinstance(action, WriteFatalError):
            path = f"{self.dom_path}/error/{self.nodename}/error"
            with contextlib.suppress(XsError):
                self.store.write(path, action.value)
            self.trace_note(f"fatal error written: {action.value}")
        elif isinstance(action, PollBackendState):
            time.sleep(action.delay)
            raw = self._read(f"{self.be_path}/{XsField.STATE}")
            return BackendPolled(polled_state(raw))
        elif isinstance(action, LogError):
            self.errors.append(action.message)
            self.trace_note(action.message)
        return None

    def _defective_state(self, state: XenbusState) -> XenbusState | None:
        """The state a defective frontend writes instead (None: nothing)."""
        if state == XenbusState.Initialised and \
                self.defects.has("connected-without-initialised"):
            return XenbusState.Connected
        if state == XenbusState.Closing and self.defects.has("closed-without-closing"):
            return None  # straight to Closed
        return state

    def _read_config(self) -> CardConfig | ConfigError:
        nodes: dict[str, bytes] = {}

        def walk(rel: str) -> None:
            path = f"{self.fe_path}/{rel}" if rel else self.fe_path
            try:
                children = self.store.directory(path)
            except XsError:
                return
            for c in children:
                sub = f"{rel}/{c}" if rel else c
                value = self._read(f"{self.fe_path}/{sub}")
                if value:
                    nodes[sub] = value
                walk(sub)

        walk("")
        result = read_card_config(nodes)
        if isinstance(result, CardConfig):
            self.config, self.config_error = result, None
            self._sync_streams(result)
        else:
            self.config_error = result
            self.trace_note(f"card configuration rejected: {result}")
        for note in result.notes:
            self.trace_note(str(note))
        return result

    def _sync_streams(self, config: CardConfig) -> None:
        """Keep the stream objects across reconnections (callers hold references)."""
        old = {s.path: s for s in self.streams}
        streams = []
        for sc in config.streams:
            s = old.get(sc.path) or FrontendStream(self, sc)
            s.config = sc
            streams.append(s)
        self.streams = streams

    def _allocate_and_publish(self, configs: tuple[StreamConfig, ...]) -> TransportPublished:
        """SND-A-10, A-11: per stream ring page + event page + two unbound ports; all
        transport nodes in ONE transaction restarted on EAGAIN."""
        ev = self.domain.evtchn
        grants = self.domain.grants
        be = self.backend_id
        try:
            for sc in configs:
                s = self.stream(sc.path)
                with self.hv_lock:
                    ring = grants.share_pages(1, be)
                    evt = grants.share_pages(1, be)
                    req_port = ev.alloc_unbound(be)
                    evt_port = ev.alloc_unbound(be)
                # initialised before the refs are published: the backend cannot map
                # them before it reads them from XenStore (SND-B-01, B-17)
                s.attach(ring, evt, ring.refs[0], evt.refs[0], req_port, evt_port)
                self._ports[req_port] = (s, "req")
                self._ports[evt_port] = (s, "evt")

            def body(tx: int) -> None:
                for sc in configs:
                    s = self.stream(sc.path)
                    base = f"{self.fe_path}/{s.path}"
                    for node, value in ((XsField.RING_REF, s.ring_ref),
                                        (XsField.EVT_CHNL, s.req_port),
                                        (XsField.EVT_RING_REF, s.evt_ring_ref),
                                        (XsField.EVT_EVT_CHNL, s.evt_port)):
                        if node == XsField.EVT_CHNL:
                            if self.defects.has("missing-event-channel"):
                                continue
                            if self.defects.has("wrong-event-channel"):
                                value += 1000
                        self.store.write(f"{base}/{node}", str(value), tx)

            in_transaction(self.store, body)
        except XsError as exc:
            self.trace_note(f"publishing transport failed: {exc}")
            return TransportPublished(False, _errno(exc), "writing XenStore")
        except OSError as exc:
            self.trace_note(f"allocating channels failed: {exc}")
            return TransportPublished(False, XenErrno.ENOMEM, None)
        self.trace.record("xs", self.domid, op="publish_transport", path=self.fe_path,
                          streams={s.path: [s.ring_ref, s.req_port, s.evt_ring_ref,
                                            s.evt_port] for s in self.streams})
        return TransportPublished(True)

    def _free_channels(self) -> None:
        """``xen_snd_front_evtchnl_free_all``: waiters -EIO, unbind, end access."""
        for s in self.streams:
            ports, refs, pages = s.detach()
            busy = []
            with self.hv_lock:
                for port in ports:
                    self._ports.pop(port, None)
                    if port:
                        with contextlib.suppress(OSError):
                            self.domain.evtchn.unbind(port)
                for ref in refs:
                    if ref:
                        with contextlib.suppress(OSError):
                            if not self.domain.grants.revoke(ref):
                                busy.append(ref)
                for p in pages:
                    if p is not None:
                        with contextlib.suppress(OSError):
                            p.free()
            if busy:
                self.trace_note(f"stream {s.path}: ring/event page revokes busy {busy} "
                                "(released at the backend's unmap)")


def _errno(exc: XsError) -> XenErrno:
    try:
        return XenErrno[exc.name]
    except (KeyError, AttributeError):
        return XenErrno.EIO
