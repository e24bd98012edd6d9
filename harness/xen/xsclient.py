"""The harness's own XenStore wire client (implements :class:`harness.xen.api.Store`).

Talks to a unix socket (xenstored, or our simulated one) or to a XenBus character device
such as ``/dev/xen/xenbus`` (same framing, opened as a file). A reader thread routes replies
by ``req_id`` and watch events into a queue; every call is bounded by ``timeout`` and raises
:class:`XenTimeout`; a closed connection fails pending and later calls at once with
:class:`XsClosed`. Raw access for suites and fuzzing: :meth:`XsClient.send_raw`,
:meth:`XsClient.request`, :meth:`XsClient.next_unmatched`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import select
import socket
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness.xen.api import Perm, WatchEvent, XenTimeout
from protocol_models.xenstore import (
    HEADER,
    HEADER_SIZE,
    XsError,
    XsType,
    join,
    pack,
    parse_error,
    split,
)


class XsClosed(XsError):
    """The connection to xenstored is gone (EIO)."""

    def __init__(self, detail: str = "connection closed") -> None:
        super().__init__("EIO", detail)


@dataclass(frozen=True)
class RawReply:
    """A message nobody was waiting for (e.g. the reply to :meth:`XsClient.send_raw`)."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes


class _Waiter:
    __slots__ = ("done", "reply", "type")

    def __init__(self, type_: int) -> None:
        self.type = type_
        self.done = threading.Event()
        self.reply: tuple[int, bytes] | None = None


class XsClient:
    """A XenStore connection acting as ``domid`` (the server decides the real identity;
    ``domid`` is what relative paths are taken to mean by callers)."""

    def __init__(self, path: str, domid: int = 0, timeout: float = 5.0) -> None:
        self.path = path
        self.domid = domid
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._fd: int
        if stat.S_ISSOCK(os.stat(path).st_mode):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            self._sock = sock
            self._fd = sock.fileno()
        else:  # XenBus device: whole messages per write, reads via the same fd
            self._fd = os.open(path, os.O_RDWR)
        self._ids = itertools.count(1)  # never 0: 0 marks XenBus-style unrouted replies
        self._id_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Waiter] = {}
        self._events: queue.Queue[WatchEvent] = queue.Queue()
        self._unmatched: queue.Queue[RawReply] = queue.Queue()
        self._closed = threading.Event()
        self._close_reason = "connection closed"
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"xsclient-dom{domid}")
        self._reader.start()

    # ------------------------------------------------------------------ raw access

    def send_raw(self, data: bytes) -> None:
        """Write ``data`` as is (any bytes, valid or not)."""
        self._write(data)

    def request(self, type_: int, payload: bytes, tx_id: int = 0,
                timeout: float | None = None) -> tuple[int, bytes]:
        """Send one message, wait for its reply: ``(reply type, reply payload)``. ERROR
        replies are returned, not raised."""
        timeout = self.timeout if timeout is None else timeout
        with self._id_lock:
            rid = next(self._ids) & 0xFFFFFFFF or next(self._ids)
        waiter = _Waiter(int(type_))
        self._pending[rid] = waiter
        try:
            if self._closed.is_set():
                raise XsClosed(self._close_reason)
            self._write(pack(type_, payload, rid, tx_id))
            if not waiter.done.wait(timeout):
                raise XenTimeout(f"no reply to {_name(type_)} within {timeout}s")
        finally:
            self._pending.pop(rid, None)
        if waiter.reply is None:
            raise XsClosed(self._close_reason)
        return waiter.reply

    def next_unmatched(self, timeout: float) -> RawReply | None:
        """The next message that matched no pending request, or None after ``timeout``."""
        try:
            return self._unmatched.get(timeout=timeout)
        except queue.Empty:
            return None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # ------------------------------------------------------------------ Store API

    def read(self, path: str, tx: int = 0) -> bytes:
        return self._call(XsType.READ, join(path), tx)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else bytes(value)
        self._call(XsType.WRITE, join(path) + data, tx)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._call(XsType.MKDIR, join(path), tx)

    def rm(self, path: str, tx: int = 0) -> None:
        self._call(XsType.RM, join(path), tx)

    def directory(self, path: str, tx: int = 0) -> list[str]:
        """Children of ``path``; falls back to DIRECTORY_PART on E2BIG, as libxenstore."""
        try:
            payload = self._call(XsType.DIRECTORY, join(path), tx)
        except XsError as e:
            if e.name != "E2BIG":
                raise
            return self._directory_part(path, tx)
        return [c.decode() for c in split(payload)]

    def _directory_part(self, path: str, tx: int) -> list[str]:
        for _ in range(10):  # restart when the generation changes mid-listing
            gen: bytes | None = None
            data = bytearray()
            while True:
                reply = self._call(XsType.DIRECTORY_PART, join(path, str(len(data))), tx)
                g, _, chunk = reply.partition(b"\0")
                if gen is None:
                    gen = g
                elif g != gen:
                    break
                if chunk in (b"", b"\0"):
                    return [c.decode() for c in split(bytes(data))]
                if chunk.endswith(b"\0\0"):
                    data += chunk[:-1]
                    return [c.decode() for c in split(bytes(data))]
                data += chunk
        raise XsError("EAGAIN", f"{path} kept changing during DIRECTORY_PART")

    def get_perms(self, path: str, tx: int = 0) -> list[Perm]:
        return [Perm.parse(p) for p in split(self._call(XsType.GET_PERMS, join(path), tx))]

    def set_perms(self, path: str, perms: Sequence[Perm], tx: int = 0) -> None:
        self._call(XsType.SET_PERMS, join(path, *(str(p) for p in perms)), tx)

    def watch(self, path: str, token: str) -> None:
        self._call(XsType.WATCH, join(path, token))

    def unwatch(self, path: str, token: str) -> None:
        self._call(XsType.UNWATCH, join(path, token))

    def next_event(self, timeout: float) -> WatchEvent | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def transaction_start(self) -> int:
        return int(self._call(XsType.TRANSACTION_START, b"\0").rstrip(b"\0"))

    def transaction_end(self, tx: int, commit: bool = True) -> bool:
        try:
            self._call(XsType.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)
        except XsError as e:
            if e.name == "EAGAIN":
                return False
            raise
        return True

    def get_domain_path(self, domid: int) -> str:
        return self._call(XsType.GET_DOMAIN_PATH, join(str(domid))).rstrip(b"\0").decode()

    # privileged / management requests
    def introduce(self, domid: int, gfn: int = 0, port: int = 1) -> None:
        self._call(XsType.INTRODUCE, join(str(domid), str(gfn), str(port)))

    def release(self, domid: int) -> None:
        self._call(XsType.RELEASE, join(str(domid)))

    def resume(self, domid: int) -> None:
        self._call(XsType.RESUME, join(str(domid)))

    def is_domain_introduced(self, domid: int) -> bool:
        return self._call(XsType.IS_DOMAIN_INTRODUCED, join(str(domid))) == b"T\0"

    def set_target(self, domid: int, target: int) -> None:
        self._call(XsType.SET_TARGET, join(str(domid), str(target)))

    def reset_watches(self) -> None:
        self._call(XsType.RESET_WATCHES, b"")

    def control(self, *args: str) -> bytes:
        return self._call(XsType.CONTROL, join(*args))

    def close(self) -> None:
        self._fail_all("closed by client")
        with contextlib.suppress(OSError):
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not threading.current_thread():
            self._reader.join(2.0)
        with contextlib.suppress(OSError):
            if self._sock is not None:
                self._sock.close()
            else:
                os.close(self._fd)

    def __enter__(self) -> XsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _call(self, type_: int, payload: bytes, tx: int = 0) -> bytes:
        rtype, rpayload = self.request(type_, payload, tx)
        if rtype == XsType.ERROR:
            raise XsError(parse_error(rpayload))
        if rtype != type_:
            raise XsError("EIO", f"reply type {rtype} to a {_name(type_)} request")
        return rpayload

    def _write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise XsClosed(self._close_reason)
        if not self._send_lock.acquire(timeout=self.timeout):
            raise XenTimeout("could not send: connection busy")
        try:
            if self._sock is not None:
                self._sock.sendall(data)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
        except TimeoutError:
            raise XenTimeout("xenstored does not read its socket") from None
        except OSError as e:
            self._fail_all(f"send failed: {e}")
            raise XsClosed(self._close_reason) from e
        finally:
            self._send_lock.release()

    def _read_loop(self) -> None:
        buf = bytearray()
        reason = "connection closed by xenstored"
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.2)
                if not ready:
                    continue
                chunk = (self._sock.recv(65536) if self._sock is not None
                         else os.read(self._fd, 65536))
                if not chunk:
                    break
                buf += chunk
                while len(buf) >= HEADER_SIZE:
                    type_, rid, tx_id, length = HEADER.unpack_from(buf)
                    if len(buf) < HEADER_SIZE + length:
                        break
                    payload = bytes(buf[HEADER_SIZE:HEADER_SIZE + length])
                    del buf[:HEADER_SIZE + length]
                    self._route(type_, rid, tx_id, payload)
        except (OSError, ValueError) as e:
            reason = f"connection error: {e}"
        self._fail_all(reason)

    def _route(self, type_: int, rid: int, tx_id: int, payload: bytes) -> None:
        if type_ == XsType.WATCH_EVENT:
            parts = split(payload)
            if len(parts) >= 2:
                self._events.put(WatchEvent(parts[0].decode(errors="replace"),
                                            parts[1].decode(errors="replace")))
                return
        waiter = self._pending.get(rid)
        if waiter is None and rid == 0:
            # Linux's XenBus device has acked WATCH with req_id 0: hand it to the single
            # waiter of that type, if there is exactly one.
            cands = [w for w in list(self._pending.values()) if w.type == type_]
            waiter = cands[0] if len(cands) == 1 else None
        if waiter is None or waiter.done.is_set():
            self._unmatched.put(RawReply(type_, rid, tx_id, payload))
            return
        waiter.reply = (type_, payload)
        waiter.done.set()

    def _fail_all(self, reason: str) -> None:
        if not self._closed.is_set():
            self._close_reason = reason
            self._closed.set()
        for waiter in list(self._pending.values()):
            waiter.done.set()  # reply stays None -> XsClosed


def _name(type_: int) -> str:
    try:
        return XsType(type_).name
    except ValueError:
        return str(type_)


def xenstore_round_trips(path: str, seconds: float, domid: int = 0) -> dict[str, float]:
    """Sequential round trips with :class:`XsClient` against the xenstored at ``path``:
    ``{"reads_per_s": …, "writes_per_s": …}``, each measured for ``seconds / 2``. Works
    under ``/local/domain/<domid>/bench-xsclient-<pid>`` and removes it afterwards."""
    key = f"/local/domain/{domid}/bench-xsclient-{os.getpid()}"
    half = max(seconds / 2, 0.01)
    value = b"x" * 64
    with XsClient(path, domid) as xs:
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < half:
            xs.write(f"{key}/k{n % 16}", value)
            n += 1
        writes = n / elapsed
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < half:
            xs.read(f"{key}/k{n % 16}")
            n += 1
        reads = n / elapsed
        with contextlib.suppress(XsError):
            xs.rm(key)
    return {"reads_per_s": reads, "writes_per_s": writes}
