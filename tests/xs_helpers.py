"""Shared helpers of the xenstored/xsclient tests: an in-process simulated xenstored on
temporary sockets, raw wire access, and the skip-or-fail rule for external tools."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from requires import unavailable

from harness.xen.sim.xenstored import XenstoreState
from harness.xen.sim.xs_server import XenstoreServer
from harness.xen.xsclient import XsClient
from protocol_models.xenstore import HEADER, HEADER_SIZE, XsType, pack

REPO = Path(__file__).resolve().parents[1]
TEST_XENSTORE = REPO / ".cache/xen-utils/usr/lib/xen-4.17/bin/test-xenstore"


def need_tool(found: bool, what: str, how: str) -> None:
    """Skip when a tool is missing, but fail under CI (CI=true) where it must be there."""
    if found:
        return
    unavailable(f"{what} is not available: {how}")


def need_test_xenstore() -> str:
    need_tool(os.access(TEST_XENSTORE, os.X_OK), "Debian's test-xenstore",
              "`bash .ci/setup` extracts it into .cache/xen-utils")
    return str(TEST_XENSTORE)


def need_xenstore_utils() -> None:
    need_tool(shutil.which("xenstore-read") is not None, "xenstore-utils",
              "`bash .ci/setup` installs it (apt-get install xenstore-utils)")


class XsSim:
    """A XenstoreState + XenstoreServer on sockets in ``directory``; ``dom0`` is the
    privileged socket. On exit it checks that nothing is left behind."""

    def __init__(self, directory: Path, **server_kw: int) -> None:
        # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
        self._own_dir = None
        if len(str(directory)) > 80:
            self._own_dir = tempfile.mkdtemp(prefix="xs-")
            directory = Path(self._own_dir)
        self.dir = directory
        self.state = XenstoreState()
        self.server = XenstoreServer(self.state, **server_kw)
        self.dom0 = self.listen(0)
        self._clients: list[XsClient] = []
        self._raws: list[RawConn] = []

    def listen(self, domid: int) -> str:
        path = str(self.dir / f"xs{domid}.sock")
        self.server.add_listener(path, domid)
        return path

    def client(self, domid: int = 0, timeout: float = 5.0) -> XsClient:
        path = self.dom0 if domid == 0 else str(self.dir / f"xs{domid}.sock")
        if domid and not os.path.exists(path):
            self.listen(domid)
        c = XsClient(path, domid, timeout)
        self._clients.append(c)
        return c

    def raw(self, domid: int = 0) -> RawConn:
        path = self.dom0 if domid == 0 else str(self.dir / f"xs{domid}.sock")
        if domid and not os.path.exists(path):
            self.listen(domid)
        r = RawConn(path)
        self._raws.append(r)
        return r

    def __enter__(self) -> XsSim:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self._clients:
            c.close()
        for r in self._raws:
            r.close()
        sockets = list(self.server.listeners)
        self.server.stop()
        left = [p for p in sockets if os.path.exists(p)]
        mine = [self.server._thread, *(c._reader for c in self._clients)]
        threads = [t.name for t in mine if t is not None and t.is_alive()]
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)
        assert not left, f"sockets left behind: {left}"
        assert not self.server.running
        assert not threads, f"threads left behind: {threads}"


class RawConn:
    """A bare socket for wire-level tests: exact framing, no routing."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send(self, type_: int, payload: bytes, req_id: int = 0, tx_id: int = 0) -> None:
        self.sock.sendall(pack(type_, payload, req_id, tx_id))

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("closed by xenstored")
            buf += chunk
        return buf

    def recv(self) -> tuple[int, int, int, bytes]:
        """(type, req_id, tx_id, payload) of the next message."""
        type_, rid, tx, length = HEADER.unpack(self._exact(HEADER_SIZE))
        return type_, rid, tx, self._exact(length)

    def call(self, type_: int, payload: bytes, tx_id: int = 0) -> tuple[int, bytes]:
        """One request, its reply (watch events before it are skipped)."""
        self.send(type_, payload, 0, tx_id)
        while True:
            t, _, _, p = self.recv()
            if t != XsType.WATCH_EVENT:
                return t, p

    def peer_closed(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
