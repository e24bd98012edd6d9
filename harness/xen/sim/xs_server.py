"""Unix-socket transport of the simulated xenstored: one selector thread, many listeners.

Identity is per listening socket: ``add_listener(path, domid)`` makes every connection
accepted on ``path`` speak as ``domid`` (dom0's socket is the privileged one), which is how
a simulated guest gets its own, unprivileged, view of the store.

Robustness: sockets are non-blocking and each connection has its own output buffer, so a
client that never reads only fills its own buffer (above ``max_out`` bytes it is dropped);
reading from a connection pauses while its output is backed up. A header with
``len > 4096`` resets that connection (as C xenstored does); any other malformed input gets
an error reply from :class:`XenstoreState`. Nothing a client sends can stop the loop.

Queued output is bounded as in C xenstored 4.17: a watch event identical to one still queued
for the connection is dropped (send_event); a guest's queued output counts against its
``memory`` quota (events past it are dropped); a guest that leaves an event unread for
``WATCH_EVENT_TIMEOUT`` seconds is disconnected; a guest may hold at most
``MAX_GUEST_CONNECTIONS`` connections. When accept fails (out of descriptors) the listener
rests briefly instead of spinning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.xen.sim import peercheck
from protocol_models.xenstore import HEADER, HEADER_SIZE, XENSTORE_PAYLOAD_MAX

if TYPE_CHECKING:
    from harness.xen.sim.xenstored import XenstoreState, XsConnection

log = logging.getLogger(__name__)

_PAUSE_READING = 256 * 1024  # output backlog above which we stop reading requests
# A guest has one ring to C xenstored; a simulated guest may open a few sockets (its
# toolstack-side helpers, tests), not thousands: past this, new ones are closed at once.
MAX_GUEST_CONNECTIONS = 64
# C 4.17's timeout_watch_event_msec: a guest that leaves a watch event unread this long is
# ignored (its connection closed), so a non-reading guest can't hold the daemon's memory.
WATCH_EVENT_TIMEOUT = 20.0
ACCEPT_REST = 0.1  # seconds a listener rests after a failed accept (out of descriptors)
_WATCH_EVENT = 15  # XsType.WATCH_EVENT


class _Listener:
    def __init__(self, path: str, domid: int, sock: socket.socket) -> None:
        self.path = path
        self.domid = domid
        self.sock = sock


class _Client:
    def __init__(self, sock: socket.socket, listener: _Listener) -> None:
        self.sock = sock
        self.listener = listener
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.lock = threading.Lock()  # guards outbuf/doomed (sinks run on other threads)
        self.doomed = False  # close at the next loop turn
        self.closed = False
        self.xs: XsConnection | None = None
        self.events = 0  # currently registered selector mask
        # Watch events queued and not yet wholly sent: message -> where it ends in the
        # output stream. C 4.17's send_event drops an event identical to one still queued.
        self.queued_events: dict[bytes, int] = {}
        self.sent = 0  # bytes sent since the start
        self.queued = 0  # bytes queued since the start
        # (end in the output stream, deadline) of each queued watch event of a guest
        self.event_deadlines: deque[tuple[int, float]] = deque()


class XenstoreServer:
    """Serves a :class:`XenstoreState` on unix sockets.

    ``add_listener`` / ``remove_listener`` may be called before or after :meth:`start`, from
    any thread. :meth:`stop` closes every socket, unlinks the listener files and joins the
    loop thread (bounded by ``timeout``)."""

    def __init__(self, state: XenstoreState, *, max_out: int = 8 * 1024 * 1024) -> None:
        self.state = state
        self.max_out = max_out
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._listeners: dict[str, _Listener] = {}
        self._clients: set[_Client] = set()
        self._dirty: set[_Client] = set()
        self._dirty_lock = threading.Lock()
        self._cmds: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        self._stopping = False
        self._closed = False
        self._resting: list[tuple[float, _Listener]] = []  # listeners after a failed accept
        self._warned_accept = False
        self._dom_out: dict[int, int] = {}  # bytes queued per unprivileged domain
        self._out_lock = threading.Lock()  # guards _dom_out (taken inside client.lock)
        self.sim_dir: str | None = None  # set: refuse programs started as another domain
        self.watch_event_timeout = WATCH_EVENT_TIMEOUT
        self._next_expiry_check = 0.0

    # ------------------------------------------------------------------ public API

    @property
    def listeners(self) -> dict[str, int]:
        """Listener path -> domid."""
        return {p: lst.domid for p, lst in self._listeners.items()}

    def add_listener(self, path: str, domid: int) -> None:
        """Listen on a new unix socket at ``path``; its connections act as ``domid``.
        A stale socket file at ``path`` is replaced; any other existing file is an error."""
        if self._closed:
            raise RuntimeError("server stopped")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        lst = _Listener(path, domid, sock)

        def register() -> None:
            self._listeners[path] = lst
            self._sel.register(sock, selectors.EVENT_READ, lst)

        self._in_loop(register)

    def remove_listener(self, path: str, timeout: float = 5.0) -> None:
        """Close the listener at ``path`` and all connections accepted on it; unlink it."""
        def remove() -> None:
            lst = self._listeners.pop(path, None)
            if lst is None:
                return
            self._close_listener(lst)
            for client in [c for c in self._clients if c.listener is lst]:
                self._close_client(client)

        self._in_loop(remove, timeout)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="xenstored-sim", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close everything and join the loop thread (at most ``timeout`` seconds)."""
        if self._closed:
            return
        self._stopping = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._wake()
            thread.join(timeout)
            if thread.is_alive():
                log.error("xenstored loop did not stop within %.1fs", timeout)
        if thread is None or not thread.is_alive():
            self._close_all()

    @property
    def connection_count(self) -> int:
        """Open client connections (all listeners)."""
        return len(self._clients)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> XenstoreServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop plumbing

    def _in_loop(self, fn: Callable[[], None], timeout: float = 5.0) -> None:
        """Run ``fn`` on the loop thread (or here when the loop is not running)."""
        if not self.running or threading.get_ident() == self._loop_ident:
            fn()
            return
        done = threading.Event()
        self._cmds.put((fn, done))
        self._wake()
        if not done.wait(timeout):
            raise TimeoutError("xenstored loop did not run the command in time")

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full pipe: a wakeup is pending anyway
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        self._loop_ident = threading.get_ident()
        try:
            while not self._stopping:
                self._wake_listeners()
                for key, mask in self._sel.select(ACCEPT_REST if self._resting else 0.5):
                    obj = key.data
                    if obj is None:
                        with contextlib.suppress(OSError):
                            while self._wake_r.recv(4096):
                                pass
                    elif isinstance(obj, _Listener):
                        self._accept(obj)
                    else:
                        self._service(obj, mask)
                self._run_commands()
                self._flush_dirty()
                self._expire_stalled()
        except Exception:  # pragma: no cover - a bug; log it rather than vanish silently
            log.exception("xenstored loop crashed")
        finally:
            self._run_commands()  # release anyone waiting on a command
            self._close_all()

    def _expire_stalled(self) -> None:
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + 0.5
        for client in list(self._clients):
            with client.lock:
                head = client.event_deadlines[0][1] if client.event_deadlines else None
            if head is not None and head < now:
                log.info("xenstored: domain %d left a watch event unread for %.0fs: "
                         "closing its connection", client.listener.domid,
                         self.watch_event_timeout)
                self._close_client(client)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, done = self._cmds.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:
                log.exception("xenstored loop command failed")
            finally:
                done.set()

    # ------------------------------------------------------------------ connections

    def _wake_listeners(self) -> None:
        now = time.monotonic()
        for entry in list(self._resting):
            if entry[0] <= now:
                self._resting.remove(entry)
                lst = entry[1]
                if self._listeners.get(lst.path) is lst:
                    self._sel.register(lst.sock, selectors.EVENT_READ, lst)

    def _accept(self, lst: _Listener) -> None:
        while True:
            try:
                sock, _ = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # out of descriptors: the client waits in the backlog and the listener
                # rests (else the selector reports it again at once: a log storm)
                if not self._warned_accept:
                    log.warning("xenstored: accept failed on %s: %s", lst.path, exc)
                    self._warned_accept = True
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(lst.sock)
                self._resting.append((time.monotonic() + ACCEPT_REST, lst))
                return
            self._warned_accept = False
            if lst.domid != 0 and sum(1 for c in self._clients
                                      if c.listener.domid == lst.domid
                                      ) >= MAX_GUEST_CONNECTIONS:
                log.info("xenstored: domain %d has %d connections: refusing another",
                         lst.domid, MAX_GUEST_CONNECTIONS)
                sock.close()
                continue
            pid = _peer_pid(sock)
            other = peercheck.foreign(pid, self.sim_dir, lst.domid)
            if other is not None:
                log.warning("xenstored: process %d of domain %d refused on %s", pid, other,
                            lst.path)
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, lst)
            client.xs = self.state.connect(lst.domid, self._sink_for(client))
            client.xs.pid = pid
            self._clients.add(client)
            client.events = selectors.EVENT_READ
            self._sel.register(sock, client.events, client)

    def _sink_for(self, client: _Client) -> Callable[[bytes], None]:
        domid = client.listener.domid
        quota = self.state.quotas.get("memory", 0)

        def sink(msg: bytes) -> None:
            with client.lock:
                if client.closed or client.doomed:
                    return
                event = msg[:4] == _WATCH_EVENT.to_bytes(4, "little") and msg[16:17] != b"@"
                if event:
                    end = client.queued_events.get(msg)
                    if end is not None and end > client.sent:
                        return  # an identical event is still queued (C 4.17 send_event)
                    # C's domain_memory_add_chk: an unprivileged domain's queued output
                    # counts against its memory quota; an event past it is dropped
                    with self._out_lock:
                        over = self._dom_out.get(domid, 0) + len(msg) > quota
                    if domid != 0 and quota and over:
                        return
                client.outbuf += msg
                client.queued += len(msg)
                if event:
                    client.queued_events[msg] = client.queued
                    if domid != 0 and self.watch_event_timeout:
                        client.event_deadlines.append(
                            (client.queued, time.monotonic() + self.watch_event_timeout))
                if domid != 0:
                    with self._out_lock:
                        self._dom_out[domid] = self._dom_out.get(domid, 0) + len(msg)
                if len(client.outbuf) > self.max_out:  # never reads: drop it, not us
                    client.doomed = True
            with self._dirty_lock:
                self._dirty.add(client)
            if threading.get_ident() != self._loop_ident:
                self._wake()

        return sink

    def _service(self, client: _Client, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(client)
            if mask & selectors.EVENT_READ and not client.closed:
                data = client.sock.recv(65536)
                if not data:
                    self._close_client(client)
                    return
                client.inbuf += data
                self._process_input(client)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close_client(client)
        except Exception:
            log.exception("xenstored: dropping connection after internal error")
            self._close_client(client)

    def _process_input(self, client: _Client) -> None:
        buf = client.inbuf
        while len(buf) >= HEADER_SIZE and not client.closed:
            if len(client.outbuf) > _PAUSE_READING:
                return  # resumed by _flush once the client reads its replies
            type_, req_id, tx_id, length = HEADER.unpack_from(buf)
            if length > XENSTORE_PAYLOAD_MAX:
                # C answers each request before reading the next: deliver the replies
                # already due (best effort), then reset as C xenstored does.
                with client.lock, contextlib.suppress(OSError):
                    client.sock.send(client.outbuf)
                self._close_client(client, reset=True)
                return
            if len(buf) < HEADER_SIZE + length:
                return
            payload = bytes(buf[HEADER_SIZE:HEADER_SIZE + length])
            del buf[:HEADER_SIZE + length]
            assert client.xs is not None
            self.state.handle(client.xs, type_, req_id, tx_id, payload)

    def _flush(self, client: _Client) -> None:
        if client.closed:
            return
        with client.lock:
            if client.doomed:
                pending = None
            elif client.outbuf:
                try:
                    sent = client.sock.send(client.outbuf)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:  # the peer is gone: close it, or EVENT_WRITE spins
                    client.doomed = True
                else:
                    del client.outbuf[:sent]
                    client.sent += sent
                    if client.listener.domid != 0:
                        with self._out_lock:
                            d = client.listener.domid
                            self._dom_out[d] = self._dom_out.get(d, 0) - sent
                    if not client.outbuf:
                        client.queued_events.clear()
                    while client.event_deadlines and \
                            client.event_deadlines[0][0] <= client.sent:
                        client.event_deadlines.popleft()
                pending = len(client.outbuf) if not client.doomed else None
            else:
                pending = 0
        if pending is None:
            self._close_client(client)
            return
        if client.inbuf and pending <= _PAUSE_READING:
            self._process_input(client)
            if client.closed:
                return
            with client.lock:
                pending = len(client.outbuf)
        want = selectors.EVENT_WRITE if pending else 0
        if pending <= _PAUSE_READING:
            want |= selectors.EVENT_READ
        if want != client.events:
            client.events = want
            self._sel.modify(client.sock, want, client)

    def _flush_dirty(self) -> None:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        for client in dirty:
            if not client.closed:
                try:
                    self._flush(client)
                except Exception:
                    log.exception("xenstored: flush failed")
                    self._close_client(client)

    def _close_client(self, client: _Client, reset: bool = False) -> None:
        with client.lock:
            if client.closed:
                return
            client.closed = True
            if client.listener.domid != 0:
                with self._out_lock:
                    d = client.listener.domid
                    self._dom_out[d] = self._dom_out.get(d, 0) - len(client.outbuf)
            client.outbuf.clear()
            client.queued_events.clear()
            client.event_deadlines.clear()
        if client.xs is not None:
            self.state.disconnect(client.xs)
        self._clients.discard(client)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(client.sock)
        if reset:  # linger 0: the peer sees ECONNRESET, like C xenstored's reset
            with contextlib.suppress(OSError):
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            client.sock.close()

    def _close_listener(self, lst: _Listener) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(lst.sock)
        with contextlib.suppress(OSError):
            lst.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lst.path)

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for lst in list(self._listeners.values()):
            self._close_listener(lst)
        self._listeners.clear()
        for client in list(self._clients):
            self._close_client(client)
        with contextlib.suppress(OSError):
            self._sel.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()


def _peer_pid(sock: socket.socket) -> int:
    """The connecting process (SO_PEERCRED), so writes can be told apart per process: the
    harness's own toolstack connections from the backend's, both dom0 (0: unknown)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    return int(struct.unpack("3i", creds)[0])
