"""XsClient: timeouts, closed connections, raw access, device framing, benchmark helper."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from xs_helpers import XsSim

from harness.xen.api import Store, XenTimeout
from harness.xen.xsclient import XsClient, XsClosed, xenstore_round_trips
from protocol_models.xenstore import XsError, XsType, pack


@pytest.fixture
def xs(tmp_path: Path) -> Iterator[XsSim]:
    with XsSim(tmp_path) as sim:
        yield sim


def test_is_a_store(xs: XsSim) -> None:
    assert isinstance(xs.client(), Store)


def test_errors_by_name(xs: XsSim) -> None:
    c = xs.client()
    with pytest.raises(XsError) as e:
        c.read("/nope")
    assert e.value.name == "ENOENT"
    with pytest.raises(XsError) as e:
        c.write("/bad path", "x")
    assert e.value.name == "EINVAL"


def test_timeout_when_server_never_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        c = XsClient(path, timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(XenTimeout):
            c.read("/x")
        assert 0.25 < time.monotonic() - t0 < 2
        c.close()
    finally:
        srv.close()


def test_closed_connection_fails_promptly(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        c = XsClient(path, timeout=30)
        peer, _ = srv.accept()
        result: list[BaseException] = []

        def blocked() -> None:
            try:
                c.read("/a")  # never answered
            except BaseException as e:
                result.append(e)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # really waiting
        t0 = time.monotonic()
        peer.close()
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 3
        assert isinstance(result[0], XsClosed) and result[0].name == "EIO"
        with pytest.raises(XsClosed):
            c.read("/a")
        assert c.closed
        c.close()
    finally:
        srv.close()


def test_listener_removed_under_client(xs: XsSim) -> None:
    c = xs.client(timeout=30)
    c.write("/a", "1")
    xs.server.remove_listener(xs.dom0)
    t0 = time.monotonic()
    with pytest.raises(XsClosed):
        c.read("/a")
    assert time.monotonic() - t0 < 3


def test_raw_access(xs: XsSim) -> None:
    c = xs.client()
    assert c.request(XsType.GET_DOMAIN_PATH, b"2\0") == (XsType.GET_DOMAIN_PATH,
                                                          b"/local/domain/2\0")
    assert c.request(99, b"") == (XsType.ERROR, b"ENOSYS\0")
    c.send_raw(pack(XsType.READ, b"/nope\0", req_id=0x80000001, tx_id=3))
    reply = c.next_unmatched(2)
    assert reply is not None
    assert (reply.type, reply.req_id, reply.tx_id, reply.payload) == (
        XsType.ERROR, 0x80000001, 3, b"ENOENT\0")
    assert c.next_unmatched(0.05) is None


def test_concurrent_callers(xs: XsSim) -> None:
    c = xs.client()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(100):
                c.write(f"/cc/{n}", str(i))
                assert c.read(f"/cc/{n}") == str(i).encode()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(c.directory("/cc")) == [str(n) for n in range(6)]


def test_directory_fallback(xs: XsSim) -> None:
    c = xs.client()
    names = [f"n{i:05d}-" + "p" * 40 for i in range(300)]
    for n in names:
        c.write(f"/many/{n}", "")
    assert c.directory("/many") == names


def test_device_path_is_opened_as_a_file(tmp_path: Path) -> None:
    """A non-socket path uses the XenBus device framing. A FIFO echoes our own request
    back, which checks that framing and routing work over a plain file descriptor."""
    fifo = str(tmp_path / "xenbus")
    os.mkfifo(fifo)
    c = XsClient(fifo, timeout=2)
    try:
        assert c.request(XsType.READ, b"/echo\0") == (XsType.READ, b"/echo\0")
    finally:
        c.close()


def test_round_trips(xs: XsSim) -> None:
    rates = xenstore_round_trips(xs.dom0, 0.4)
    assert set(rates) == {"reads_per_s", "writes_per_s"}
    assert rates["reads_per_s"] > 100 and rates["writes_per_s"] > 100
    assert "bench-xsclient" not in " ".join(xs.client().directory("/local/domain/0")
                                            if _exists(xs, "/local/domain/0") else [])


def _exists(xs: XsSim, path: str) -> bool:
    try:
        xs.client().read(path)
    except XsError:
        return False
    return True
