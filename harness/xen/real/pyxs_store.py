"""A :class:`harness.xen.api.Store` on pyxs 0.4.1, with the workarounds of xenstore.md §5.2.

pyxs is the independent third-party client used for cross-checks (and usable on a real
host). Its failure modes are contained here:

* ``_re_7bit_ascii`` is patched to accept empty values (fixed upstream, not on PyPI);
* ``Client.SU`` is forced on, else privileged calls fail client-side without Xen;
* every call runs in a daemon worker thread with a deadline: pyxs blocks forever when the
  server closes or sends an unmatched reply, which becomes :class:`XenTimeout` here, and the
  store is marked broken so later calls fail at once;
* watches are read with ``Monitor.events.get(timeout=…)``, never ``Monitor.wait()``.

Known pyxs limits kept as they are: no DIRECTORY_PART (listings over 4096 bytes → E2BIG),
no non-printable values (EINVAL here), payloads over 4096 bytes refused client-side.
"""

from __future__ import annotations

import copy
import errno
import os
import queue
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import pyxs
import pyxs.client
from pyxs.exceptions import PyXSError

from harness.xen.api import Perm, WatchEvent, XenTimeout
from protocol_models.xenstore import XS_ERRORS, XsError

T = TypeVar("T")

pyxs.client._re_7bit_ascii = re.compile(b"^[\x00\x20-\x7f]*$")
pyxs.Client.SU = True


def _xs_error(e: BaseException) -> XsError:
    if isinstance(e, PyXSError) and e.args and isinstance(e.args[0], int):
        name = errno.errorcode.get(e.args[0], "EINVAL")
        return XsError(name if name in XS_ERRORS else "EINVAL", str(e))
    if isinstance(e, ValueError):  # pyxs refuses non-printable bytes / bad paths locally
        return XsError("EINVAL", f"pyxs refused the arguments: {e}")
    return XsError("EIO", f"pyxs: {e!r}")


def default_transport() -> tuple[str | None, str | None]:
    """(socket, xenbus device) as libxenstore's ``xs_open`` picks them: xenstored's socket
    where it runs (dom0), else the kernel's xenbus device (a guest: pyxs alone would try
    the socket there and fail)."""
    sock = os.environ.get("XENSTORED_PATH") or os.path.join(
        os.environ.get("XENSTORED_RUNDIR", "/var/run/xenstored"), "socket")
    if os.path.exists(sock):
        return sock, None
    for dev in ("/dev/xen/xenbus", "/proc/xen/xenbus"):
        if os.access(dev, os.R_OK | os.W_OK):
            return None, dev
    return sock, None  # neither: the socket's absence is the error to report


class PyxsStore:
    """``Store`` over ``pyxs.Client``: ``PyxsStore(unix_socket_path=…)`` or
    ``PyxsStore(xen_bus_path="/dev/xen/xenbus")``."""

    def __init__(self, unix_socket_path: str | None = None, xen_bus_path: str | None = None,
                 domid: int = 0, timeout: float = 5.0) -> None:
        self.domid = domid
        self.timeout = timeout
        self._broken: str | None = None
        if unix_socket_path is None and xen_bus_path is None:
            unix_socket_path, xen_bus_path = default_transport()
        self._client = pyxs.Client(unix_socket_path=unix_socket_path,
                                   xen_bus_path=xen_bus_path)
        self._guard(self._client.connect)
        self._txs: dict[int, pyxs.Client] = {}
        self._monitor: Any = None

    # ------------------------------------------------------------------ guard

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        if self._broken:
            raise XenTimeout(f"pyxs connection unusable: {self._broken}")
        box: queue.Queue[tuple[bool, Any]] = queue.Queue(1)

        def run() -> None:
            try:
                box.put((True, fn(*args)))
            except BaseException as e:
                box.put((False, e))

        threading.Thread(target=run, daemon=True, name="pyxs-call").start()
        try:
            ok, result = box.get(timeout=self.timeout)
        except queue.Empty:
            self._broken = f"{getattr(fn, '__name__', fn)} hung for {self.timeout}s"
            raise XenTimeout(self._broken) from None
        if ok:
            return cast(T, result)  # run() put fn's return value here
        if isinstance(result, XsError | XenTimeout):
            raise result
        raise _xs_error(result) from result

    def _c(self, tx: int) -> pyxs.Client:
        if not tx:
            return self._client
        try:
            return self._txs[tx]
        except KeyError:
            raise XsError("ENOENT", f"no transaction {tx}") from None

    @staticmethod
    def _b(text: str) -> bytes:
        return text.encode()

    # ------------------------------------------------------------------ Store API

    def read(self, path: str, tx: int = 0) -> bytes:
        value: bytes = self._guard(self._c(tx).read, self._b(path))
        return value

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else bytes(value)
        self._guard(self._c(tx).write, self._b(path), data)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._guard(self._c(tx).mkdir, self._b(path))

    def rm(self, path: str, tx: int = 0) -> None:
        self._guard(self._c(tx).delete, self._b(path))

    def directory(self, path: str, tx: int = 0) -> list[str]:
        """Children of ``path``. A listing over 4096 bytes raises E2BIG: pyxs knows no
        DIRECTORY_PART (its receive path rejects type 22 and would wedge the router)."""
        return [n.decode() for n in self._guard(self._c(tx).list, self._b(path))]

    def get_perms(self, path: str, tx: int = 0) -> list[Perm]:
        return [Perm.parse(p) for p in self._guard(self._c(tx).get_perms, self._b(path))]

    def set_perms(self, path: str, perms: Sequence[Perm], tx: int = 0) -> None:
        self._guard(self._c(tx).set_perms, self._b(path), [str(p).encode() for p in perms])

    def _mon(self) -> Any:
        if self._monitor is None:
            # pyxs's monitor() refuses a xenbus connection (a guest's only way to XenStore)
            # for a 2016 kernel quirk; Linux's xenbus device keeps each request's id in
            # its reply and sends events as WATCH_EVENT, which pyxs's router dispatches by
            # type alone, so the monitor is made directly
            self._monitor = pyxs.client.Monitor(copy.copy(self._client))
        return self._monitor

    def watch(self, path: str, token: str) -> None:
        self._guard(self._mon().watch, self._b(path), self._b(token))

    def unwatch(self, path: str, token: str) -> None:
        self._guard(self._mon().unwatch, self._b(path), self._b(token))

    def next_event(self, timeout: float) -> WatchEvent | None:
        if self._monitor is None:
            return None
        try:
            ev = self._monitor.events.get(timeout=timeout)
        except queue.Empty:
            return None
        return WatchEvent(ev.path.decode(errors="replace"), ev.token.decode(errors="replace"))

    def transaction_start(self) -> int:
        client = copy.copy(self._client)  # pyxs: one transaction per Client object
        tx: int = self._guard(client.transaction)
        self._txs[tx] = client
        return tx

    def transaction_end(self, tx: int, commit: bool = True) -> bool:
        client = self._c(tx)
        del self._txs[tx]
        if commit:
            committed: bool = self._guard(client.commit)
            return committed
        self._guard(client.rollback)
        return True

    def get_domain_path(self, domid: int) -> str:
        path: bytes = self._guard(self._client.get_domain_path, domid)
        return path.decode()

    def introduce(self, domid: int, gfn: int = 0, port: int = 1) -> None:
        self._guard(self._client.introduce_domain, domid, gfn, port)

    def release(self, domid: int) -> None:
        self._guard(self._client.release_domain, domid)

    def is_domain_introduced(self, domid: int) -> bool:
        introduced: bool = self._guard(self._client.is_domain_introduced, domid)
        return introduced

    def close(self) -> None:
        if self._broken:
            return  # the router is wedged; its daemon threads die with the process
        try:
            self._guard(self._client.close)
        except (XenTimeout, XsError):
            pass
