"""The backend process's event loop: XenStore watches (devices, FE states), event channels
(one request port and one event port per stream) and the pacing timer, in one thread.

The seam's grant and event-channel handles are not thread-safe, so all of that happens on
the loop thread; a helper thread only forwards watch events and wakes the loop through a
pipe. Every wait is bounded (``IDLE_WAKE``), so a stop request is seen promptly.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from collections.abc import Iterable
from typing import Any

from harness.fejudge import FrontendJudge
from harness.rings import RingError
from harness.trace import Trace
from harness.xen.api import Domain, WatchEvent
from protocol_models.constants import XsField
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

from .audio_io import AudioFactory
from .defects import NO_DEFECTS, Defects
from .device import Connection, VsndDevice

log = logging.getLogger("harness.backends.reference")

ROOT_TOKEN = "vsnd-be-root"
#: Longest sleep without a reason to wake (stop requests also wake the loop at once).
IDLE_WAKE = 1.0
#: Retry period while a stream's events wait for room on an event page nobody consumes.
BLOCKED_RETRY = 0.02
WATCH_POLL = 0.25


class ReferenceBackend:
    """Serves every vsnd device under ``/local/domain/<domid>/backend/vsnd`` (optionally
    only those of one frontend domain / device id)."""

    def __init__(self, domain: Domain, audio: AudioFactory, *,
                 frontend_domid: int | None = None, devid: int | None = None,
                 trace: Trace | None = None, close_on_exit: bool = True,
                 defects: Defects = NO_DEFECTS, judge: FrontendJudge | None = None) -> None:
        self.domain = domain
        self.judge = judge  # --judge-frontend: an observer of the frontend, never a voice
        self.defects = defects  # injected bugs (defects.py); none for the correct backend
        self.store = domain.store
        self.audio = audio
        self.frontend_domid = frontend_domid
        self.devid = devid
        self.trace = trace
        self.close_on_exit = close_on_exit
        self.root = f"/local/domain/{domain.domid}/backend/vsnd"
        self.devices: dict[tuple[int, int], VsndDevice] = {}
        self.ports: dict[int, tuple[VsndDevice, Connection]] = {}
        self._by_token: dict[str, VsndDevice] = {}
        self._events: queue.Queue[WatchEvent] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._more: set[int] = set()
        self.exit_status = 0

    # --- control -------------------------------------------------------------------------

    def request_stop(self, status: int = 0) -> None:
        """Ask the loop to tear down and return (safe from a signal handler)."""
        self.exit_status = self.exit_status or status
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    @property
    def wake_fd(self) -> int:
        """For ``signal.set_wakeup_fd``."""
        return self._wake_w

    def _forward_watches(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self.store.next_event(WATCH_POLL)
            except Exception as exc:  # the connection is gone: nothing left to serve
                log.error("xenstore: %s", exc)
                self.request_stop(1)
                return
            if ev is None:
                if getattr(self.store, "closed", False):
                    log.error("xenstore connection closed")
                    self.request_stop(1)
                    return
                continue
            self._events.put(ev)
            try:
                os.write(self._wake_w, b"w")
            except OSError:
                pass

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        self._record("backend", note="start", root=self.root, defects=self.defects.sorted())
        if self.defects:
            log.warning("running with defects: %s", ", ".join(self.defects.sorted()))
        self.store.watch(self.root, ROOT_TOKEN)  # fires once now: finds existing devices
        log.info("watching %s", self.root)  # a toolstack may create devices now
        forwarder = threading.Thread(target=self._forward_watches, daemon=True,
                                     name="vsnd-be-watch")
        forwarder.start()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(self.domain.evtchn.fileno(), select.POLLIN)
        try:
            while not self._stop.is_set():
                timeout = self._timeout(time.monotonic_ns())
                ready = {fd for fd, _ in poller.poll(int(timeout * 1000))}
                if self._wake_r in ready:
                    self._drain_wake()
                self._watch_events()
                if self._stop.is_set():
                    break
                fired = self.domain.evtchn.wait(0) \
                    if self.domain.evtchn.fileno() in ready else []
                self._service(fired)
                self._pace()
        finally:
            self._stop.set()
            self.shutdown()
            forwarder.join(WATCH_POLL * 4)
        return self.exit_status

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _timeout(self, now: int) -> float:
        if self._more:
            return 0.0
        deadline: int | None = None
        for _, conn in self.ports.values():
            ch = conn.channel
            if ch is None:
                continue
            d = ch.core.next_deadline(now)
            if d is not None and ch.blocked(now):
                d = now + int(BLOCKED_RETRY * 1e9)
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        if deadline is None:
            return IDLE_WAKE
        return min(IDLE_WAKE, max(0.0, (deadline - now) / 1e9))

    # --- event channels ------------------------------------------------------------------

    def _service(self, fired: Iterable[int]) -> None:
        todo = set(fired) | self._more
        self._more = set()
        for port in sorted(todo):
            entry = self.ports.get(port)
            if entry is None:
                continue
            device, conn = entry
            if conn.channel is None or port != conn.req_port:
                continue  # the FE notifying the event port is spurious (B-16)
            now = time.monotonic_ns()
            self._flush(device, conn, now)  # boundaries passed before e.g. a STOP
            try:
                result = conn.channel.service(now)
            except RingError as exc:
                log.error("%s: %s", device.name, exc)
                device.frontend_failed(str(exc))
                continue
            if result.notify:
                self._notify(conn.req_port, "resp")
            if result.more:
                self._more.add(port)

    def _pace(self) -> None:
        now = time.monotonic_ns()
        for device, conn in list(self.ports.values()):
            if conn.channel is not None and conn.req_port in self.ports:
                self._flush(device, conn, now)
                if device.observer is not None:
                    device.observer.tick(conn.path)

    def _flush(self, device: VsndDevice, conn: Connection, now: int) -> None:
        assert conn.channel is not None
        if conn.channel.flush_events(now):
            self._notify(conn.evt_port, "evt")

    def _notify(self, port: int, why: str) -> None:
        try:
            self.domain.evtchn.notify(port)
        except OSError as exc:
            log.warning("notify port %d: %s", port, exc)
            return
        self._record("notify", port=port, why=why)

    def _index_ports(self, device: VsndDevice) -> None:
        self.ports = {p: e for p, e in self.ports.items() if e[0] is not device}
        for conn in device.connections:
            if conn.channel is not None:
                for p in conn.ports:
                    self.ports[p] = (device, conn)
        self._more &= set(self.ports)

    # --- xenstore ------------------------------------------------------------------------

    def _watch_events(self) -> None:
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return
            self._record("watch", path=ev.path, token=ev.token)
            try:
                self._on_watch(ev)
            except (XsError, OSError) as exc:
                log.warning("watch %s: %s", ev.path, exc)

    def _on_watch(self, ev: WatchEvent) -> None:
        if ev.token != ROOT_TOKEN:
            device = self._by_token.get(ev.token)
            if device is not None:
                device.on_watch(ev.path)
            return
        rel = ev.path[len(self.root):].strip("/").split("/") if ev.path.startswith(
            self.root) else []
        if len(rel) >= 2 and rel[0].isdigit() and rel[1].isdigit():
            self._check_device(int(rel[0]), int(rel[1]), ev.path)
        else:
            self._scan()

    def _scan(self) -> None:
        try:
            fronts = self.store.directory(self.root)
        except XsError:
            fronts = []
        seen = set()
        for fe in fronts:
            if not fe.isdigit():
                continue
            try:
                devs = self.store.directory(f"{self.root}/{fe}")
            except XsError:
                continue
            for dev in devs:
                if dev.isdigit():
                    seen.add((int(fe), int(dev)))
                    self._check_device(int(fe), int(dev), None)
        for key in set(self.devices) - seen:
            self._check_device(*key, None)

    def _wanted(self, fe: int, devid: int) -> bool:
        return ((self.frontend_domid is None or fe == self.frontend_domid)
                and (self.devid is None or devid == self.devid))

    def _check_device(self, fe: int, devid: int, path: str | None) -> None:
        if not self._wanted(fe, devid):
            return
        be_path = f"{self.root}/{fe}/{devid}"
        device = self.devices.get((fe, devid))
        state = XenbusState.parse(self._read(f"{be_path}/{XsField.STATE}"))
        if device is not None:
            if state is None:  # the toolstack destroyed the device
                self._forget(device, "BE directory removed")
                return
            if state == XenbusState.Initialising and device.fsm.state != state:
                self._forget(device, "device re-created")  # then start afresh below
                device = None
            else:
                device.on_watch(path or be_path)
                return
        if state is None or self._read(f"{be_path}/{XsField.FRONTEND}") is None:
            return  # not (yet) a complete device
        device = VsndDevice(self.domain, be_path, fe, devid, self.audio, self.trace,
                            on_ports=self._index_ports, defects=self.defects,
                            judge=self.judge)
        self.devices[(fe, devid)] = device
        self._by_token[device.token] = device
        log.info("%s: found (BE state %s)", device.name, state.name)
        online = self._read(f"{be_path}/{XsField.ONLINE}")
        if online is not None and online.strip() == b"0":
            device.run(device.fsm.backend_nodes(False, state))  # being removed
        else:
            device.start()

    def _forget(self, device: VsndDevice, why: str) -> None:
        log.info("%s: forgotten (%s)", device.name, why)
        device.shutdown(write_closed=False)
        self.devices.pop((device.fe_domid, device.devid), None)
        self._by_token.pop(device.token, None)

    def _read(self, path: str) -> bytes | None:
        try:
            return self.store.read(path)
        except XsError:
            return None

    def _record(self, kind: str, **fields: Any) -> None:
        if self.trace is not None:
            self.trace.record(kind, self.domain.domid, **fields)

    def shutdown(self) -> None:
        """Unmap and unbind everything; BE state Closed unless the device was removed."""
        for device in list(self.devices.values()):
            try:
                device.shutdown(write_closed=self.close_on_exit)
            except Exception:
                log.exception("%s: shutdown", device.name)
        self.devices.clear()
        self._by_token.clear()
        self.ports.clear()
        try:
            self.store.unwatch(self.root, ROOT_TOKEN)
        except (XsError, OSError):
            pass
        self._record("backend", note="stop")
        if self.judge is not None:
            self.judge.write(final=True)

    def close(self) -> None:
        """Release the wake pipe (after any ``signal.set_wakeup_fd`` was reset)."""
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
