"""Hostile wire input never takes the simulated xenstored down or disturbs other clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xs_helpers import XsSim

from harness.xen.xsclient import XsClient
from protocol_models.xenstore import HEADER, HEADER_SIZE, XS_ERRORS, XsType, pack

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# One server for the module; every example also checks a healthy client.
_SIM: XsSim | None = None


@pytest.fixture(scope="module")
def xs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[XsSim]:
    global _SIM
    with XsSim(tmp_path_factory.mktemp("xsfuzz")) as sim:
        sim.listen(7)
        _SIM = sim
        yield sim
    _SIM = None


@pytest.fixture(scope="module")
def healthy(xs: XsSim) -> XsClient:
    return xs.client()


paths = st.one_of(
    st.sampled_from([b"/", b"/fuzz", b"fuzz/a", b"/local/domain/0", b"@introduceDomain",
                     b"", b"//", b"/a/", b"/fuzz/\xff"]),
    st.binary(max_size=64),
)
payloads = st.one_of(
    st.binary(max_size=300),
    st.lists(paths, max_size=4).map(lambda ps: b"\0".join(ps)),  # no trailing nul
    st.lists(paths, max_size=4).map(lambda ps: b"".join(p + b"\0" for p in ps)),
)
types = st.one_of(st.sampled_from([int(t) for t in XsType]), st.integers(0, 2**32 - 1))


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(bytes, complete): a message whose header length may lie."""
    type_ = draw(types)
    payload = draw(payloads)
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1),
                            st.integers(4097, 70000)))
    req_id = draw(st.integers(0, 2**32 - 1))
    tx_id = draw(st.one_of(st.just(0), st.integers(0, 2**32 - 1)))
    body = HEADER.pack(type_, req_id, tx_id, length) + payload
    return body, length == len(payload)


def _read_frames(sock: socket.socket, want: int, timeout: float) -> tuple[list, bool]:
    """Read up to ``want`` non-event replies; returns (frames, closed_by_server)."""
    sock.settimeout(timeout)
    buf, frames, replies = b"", [], 0
    deadline = time.monotonic() + timeout
    while replies < want and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return frames, True
        if not chunk:
            return frames, True
        buf += chunk
        while len(buf) >= HEADER_SIZE:
            t, rid, tx, n = HEADER.unpack_from(buf)
            assert n <= 4096, "server sent an oversize message"
            if len(buf) < HEADER_SIZE + n:
                break
            frames.append((t, rid, tx, buf[HEADER_SIZE:HEADER_SIZE + n]))
            buf = buf[HEADER_SIZE + n:]
            replies += t != XsType.WATCH_EVENT
    return frames, False


def _check_healthy(xs: XsSim, healthy: XsClient, n: int) -> None:
    assert xs.server.running
    healthy.write(f"/healthy/k{n % 8}", f"v{n}")
    assert healthy.read(f"/healthy/k{n % 8}") == f"v{n}".encode()
    assert healthy.get_domain_path(3) == "/local/domain/3"


_counter = iter(range(10**9))


@FUZZ
@given(msgs=st.lists(messages(), min_size=1, max_size=5), domid=st.sampled_from([0, 7]),
       cut=st.one_of(st.none(), st.integers(0, 400)))
def test_malformed_messages(xs: XsSim, healthy: XsClient, msgs: list[tuple[bytes, bool]],
                            domid: int, cut: int | None) -> None:
    path = xs.dom0 if domid == 0 else str(xs.dir / "xs7.sock")
    data = b"".join(m for m, _ in msgs)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    try:
        if cut is not None:  # abrupt disconnect mid-stream
            sock.sendall(data[:cut])
        else:
            # How many replies the server owes: every whole message before the first
            # header whose length exceeds 4096 (which resets the connection).
            expected, reset, off = [], False, 0
            while off + HEADER_SIZE <= len(data):
                t, rid, tx, n = HEADER.unpack_from(data, off)
                if n > 4096:
                    reset = True
                    break
                if off + HEADER_SIZE + n > len(data):
                    break
                expected.append((t, rid, tx))
                off += HEADER_SIZE + n
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                assert reset
            frames, closed = _read_frames(sock, len(expected), 3.0)
            replies = [f for f in frames if f[0] != XsType.WATCH_EVENT]
            assert [(r[1], r[2]) for r in replies] == [(e[1], e[2]) for e in expected]
            for (t, _, _, payload), (et, _, _) in zip(replies, expected, strict=True):
                if t == XsType.ERROR:
                    assert payload[:-1].decode() in XS_ERRORS and payload.endswith(b"\0")
                else:
                    assert t == et
            if reset:
                assert closed or _read_frames(sock, 1, 2.0)[1]
    finally:
        sock.close()
    _check_healthy(xs, healthy, next(_counter))


def test_client_that_never_reads_is_dropped_alone(tmp_path: Path) -> None:
    with XsSim(tmp_path, max_out=64 * 1024) as xs:
        healthy = xs.client()
        hog = xs.raw()
        hog.call(XsType.WATCH, b"/\0hog\0")
        # it never reads again; every write now queues an event for it
        deadline = time.monotonic() + 20
        n = 0
        while xs.server.connection_count > 1:
            assert time.monotonic() < deadline, "a non-reading client was never dropped"
            # distinct paths: an event identical to one still queued is dropped (C 4.17)
            healthy.write(f"/spam/{n}-" + "x" * 200, "v")
            n += 1
        assert healthy.read("/local") == b""


def test_flood_without_reading_replies(xs: XsSim, healthy: XsClient) -> None:
    """Pipelined requests from a client that does not read its replies back-pressure that
    client only."""
    healthy.write("/flood", b"x" * 4000)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(xs.dom0)
    s.setblocking(False)
    msg = pack(XsType.READ, b"/flood\0")
    sent = 0
    try:
        for _ in range(20000):
            try:
                sent += s.send(msg)
            except BlockingIOError:
                break
        t0 = time.monotonic()
        for i in range(50):
            _check_healthy(xs, healthy, i)
        assert time.monotonic() - t0 < 5
    finally:
        s.close()
    assert sent > 0
    _check_healthy(xs, healthy, 99)


def test_garbage_then_close_each_turn(xs: XsSim, healthy: XsClient) -> None:
    for i, junk in enumerate([b"\x00", b"\xff" * 15, b"\xff" * 16, b"GET / HTTP/1.0\r\n\r\n",
                              pack(XsType.WATCH, b"/\0t\0")[:-3]]):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(xs.dom0)
        s.sendall(junk)
        s.close()
        _check_healthy(xs, healthy, i)


def test_watcher_that_disconnects_with_output_queued_is_closed(tmp_path: Path) -> None:
    """A client that stops reading (its events queue up in the daemon) and then goes away
    is closed and forgotten: its descriptor and queue freed, no busy loop left behind."""
    with XsSim(tmp_path) as xs:
        healthy = xs.client()
        quitter = xs.raw()
        quitter.call(XsType.WATCH, b"/q\0quit\0")
        # enough queued output (an event carries the path) that the daemon stops reading
        # the client and has writes pending on it (over the kernel's socket buffer)
        for n in range(600):
            healthy.write(f"/q/{n}-" + "p" * 2000, b"x")
        assert xs.server.connection_count == 2
        quitter.close()
        deadline = time.monotonic() + 5
        while xs.server.connection_count > 1:
            assert time.monotonic() < deadline, "the departed watcher was never closed"
            healthy.write("/q/poke", b"v")  # more events for it: the daemon must notice
            time.sleep(0.02)
        cpu0 = time.process_time()
        time.sleep(0.5)
        # the daemon thread idles again (it spun a core when the close was lost)
        assert time.process_time() - cpu0 < 0.25
        assert healthy.read("/q/0-" + "p" * 2000) == b"x"
