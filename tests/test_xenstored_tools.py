"""Third-party clients against the simulated xenstored: Debian's test-xenstore,
xenstore-utils (libxenstore) and pyxs, plus the PyxsStore wrapper."""

from __future__ import annotations

import copy
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyxs
from pyxs.exceptions import PyXSError
from xs_helpers import XsSim, need_test_xenstore, need_xenstore_utils

from harness.xen.api import Perm, WatchEvent, in_transaction
from harness.xen.real.pyxs_store import PyxsStore
from protocol_models.xenstore import XsError


@pytest.fixture
def xs(tmp_path: Path) -> Iterator[XsSim]:
    with XsSim(tmp_path) as sim:
        yield sim


def _env(xs: XsSim) -> dict[str, str]:
    return dict(os.environ, XENSTORED_PATH=xs.dom0)


def _run(xs: XsSim, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_env(xs), capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- test-xenstore

@pytest.mark.parametrize("args", [(), ("-i", "20"), ("-r", "2")], ids=["all", "i20", "r2"])
def test_test_xenstore_passes(xs: XsSim, args: tuple[str, ...]) -> None:
    binary = need_test_xenstore()
    res = _run(xs, binary, *args, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    if not args:  # every one of its 12 tests ran
        names = {line.split(":")[0].strip() for line in res.stdout.splitlines() if ":" in line}
        assert {"read 1", "write 2000", "dir", "rm dir", "ta rmw", "ta err"} <= names
    # it cleans up after itself, in a transaction
    assert "xenstore-test" not in xs.client().directory("/local/domain/0")


def test_test_xenstore_detects_a_broken_server(xs: XsSim) -> None:
    """The check is real: without transaction conflicts test-xenstore fails ("ta err")."""
    binary = need_test_xenstore()
    from harness.xen.sim import xenstored

    original = xenstored.XenstoreState._op_transaction_end

    def no_conflicts(self, conn, tx, payload):  # type: ignore[no-untyped-def]
        if tx is not None:
            tx.accessed.clear()
        return original(self, conn, tx, payload)

    xenstored._HANDLERS[7] = no_conflicts
    try:
        res = _run(xs, binary, "-t", "ta err")
    finally:
        xenstored._HANDLERS[7] = original
    assert res.returncode == 3, res.stdout + res.stderr


# --------------------------------------------------------------------------- xenstore-utils

def test_xenstore_utils(xs: XsSim) -> None:
    need_xenstore_utils()
    assert _run(xs, "xenstore-write", "/local/domain/0/name", "Domain-0",
                "/test/a", "hello").returncode == 0
    res = _run(xs, "xenstore-read", "/test/a")
    assert (res.returncode, res.stdout) == (0, "hello\n")
    ls = _run(xs, "xenstore-ls", "-fp").stdout
    assert '/tool = ""' in ls and '/test/a = "hello"' in ls and "(n0)" in ls
    assert _run(xs, "xenstore-chmod", "/test/a", "n0", "r5").returncode == 0
    assert "(n0,r5)" in _run(xs, "xenstore-ls", "-p", "/test").stdout
    assert xs.client().get_perms("/test/a") == [Perm("n", 0), Perm("r", 5)]
    missing = _run(xs, "xenstore-read", "/nope")
    assert missing.returncode == 1 and "couldn't read path /nope" in missing.stderr
    assert _run(xs, "xenstore-exists", "/nope").returncode == 1
    assert _run(xs, "xenstore-rm", "/test/a").returncode == 0
    assert xs.client().directory("/test") == []


def test_xenstore_watch_counts_initial_fire(xs: XsSim) -> None:
    need_xenstore_utils()
    watcher = subprocess.Popen(["xenstore-watch", "-n", "4", "/w"], env=_env(xs),
                               stdout=subprocess.PIPE, text=True)
    try:
        c = xs.client()
        deadline = time.monotonic() + 5  # wait until the watch is registered
        while not any(w.path == "/w" for conn in xs.state._conns for w in conn.watches):
            assert time.monotonic() < deadline, "xenstore-watch never registered"
            time.sleep(0.02)
        c.write("/w/x", "1")
        c.write("/w/y/z", "2")
        c.rm("/w/x")
        out, _ = watcher.communicate(timeout=10)
    finally:
        watcher.kill()
        watcher.wait(5)
    assert out.split() == ["/w", "/w/x", "/w/y/z", "/w/x"]
    assert watcher.returncode == 0


def test_xenstore_watch_special_path(xs: XsSim) -> None:
    need_xenstore_utils()
    res = _run(xs, "xenstore-watch", "-n", "1", "@introduceDomain", timeout=10)
    assert (res.returncode, res.stdout.split()) == (0, ["@introduceDomain"])


def test_xenstore_utils_large_directory(xs: XsSim) -> None:
    """libxenstore falls back to DIRECTORY_PART: 500 children list fine."""
    need_xenstore_utils()
    c = xs.client()
    for i in range(500):
        c.write(f"/big/child-with-a-long-name-{i:04d}", "")
    res = _run(xs, "xenstore-list", "/big")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f"child-with-a-long-name-{i:04d}" for i in range(500)]


# --------------------------------------------------------------------------- pyxs

@pytest.fixture
def pyxs_client(xs: XsSim) -> Iterator[pyxs.Client]:
    c = pyxs.Client(unix_socket_path=xs.dom0)
    c.connect()
    yield c
    c.close()


def test_pyxs_read_write_list(pyxs_client: pyxs.Client) -> None:
    c = pyxs_client
    c.write(b"/p/a", b"1")
    c[b"/p/b"] = b"two"
    assert c.read(b"/p/a") == b"1" and c[b"/p/b"] == b"two"
    assert c.list(b"/p") == [b"a", b"b"]
    assert c.exists(b"/p") and not c.exists(b"/nope")
    assert c.get_domain_path(7) == b"/local/domain/7"
    with pytest.raises(PyXSError) as e:
        c.read(b"/nope")
    assert e.value.args[0] == 2  # ENOENT
    c.delete(b"/p")
    assert not c.exists(b"/p")


def test_pyxs_transaction_conflict(pyxs_client: pyxs.Client) -> None:
    c = pyxs_client
    c.write(b"/counter", b"0")
    t = copy.copy(c)
    t.transaction()
    t.write(b"/counter", str(int(t.read(b"/counter")) + 1).encode())
    c.write(b"/counter", b"41")  # intervening write of a node the transaction read
    assert t.commit() is False
    assert c.read(b"/counter") == b"41"
    t.transaction()
    t.write(b"/counter", b"42")
    assert t.commit() is True
    assert c.read(b"/counter") == b"42"


def test_pyxs_watch_initial_fire(pyxs_client: pyxs.Client) -> None:
    m = pyxs_client.monitor()
    m.watch(b"/pw", b"tok")
    assert m.events.get(timeout=2) == (b"/pw", b"tok")
    pyxs_client.write(b"/pw/k", b"v")
    assert m.events.get(timeout=2) == (b"/pw/k", b"tok")
    m.unwatch(b"/pw", b"tok")


def test_pyxs_large_listing_is_e2big(pyxs_client: pyxs.Client) -> None:
    for i in range(500):
        pyxs_client.write(f"/big/child-with-a-long-name-{i:04d}".encode(), b"")
    with pytest.raises(PyXSError) as e:
        pyxs_client.list(b"/big")
    assert e.value.args[0] == 7  # E2BIG: pyxs has no DIRECTORY_PART fallback


# --------------------------------------------------------------------------- PyxsStore

@pytest.fixture
def pstore(xs: XsSim) -> Iterator[PyxsStore]:
    s = PyxsStore(unix_socket_path=xs.dom0, timeout=3.0)
    yield s
    s.close()


def test_pyxs_store_basics(pstore: PyxsStore) -> None:
    pstore.write("/s/empty", b"")  # the patched 7-bit check accepts empty values
    assert pstore.read("/s/empty") == b""
    pstore.write("/s/v", "text")
    assert pstore.directory("/s") == ["empty", "v"]
    pstore.set_perms("/s/v", [Perm("n", 0), Perm("r", 3)])
    assert pstore.get_perms("/s/v") == [Perm("n", 0), Perm("r", 3)]
    pstore.rm("/s/v")
    with pytest.raises(XsError) as e:
        pstore.read("/s/v")
    assert e.value.name == "ENOENT"
    with pytest.raises(XsError) as e:
        pstore.write("/s/bin", b"\n\x01")
    assert e.value.name == "EINVAL"  # pyxs cannot send non-printable bytes
    assert pstore.get_domain_path(4) == "/local/domain/4"


def test_pyxs_store_privileged_calls(pstore: PyxsStore) -> None:
    pstore.introduce(9, 0, 3)
    assert pstore.is_domain_introduced(9)
    pstore.release(9)  # works only because Client.SU is forced on
    assert not pstore.is_domain_introduced(9)


def test_pyxs_store_transactions_and_watches(xs: XsSim, pstore: PyxsStore) -> None:
    pstore.watch("/tw", "t")
    assert pstore.next_event(2) == WatchEvent("/tw", "t")
    other = xs.client()
    pstore.write("/tw/n", "0")
    assert pstore.next_event(2) == WatchEvent("/tw/n", "t")
    tx = pstore.transaction_start()
    pstore.read("/tw/n", tx)
    pstore.write("/tw/n", "1", tx)
    assert other.read("/tw/n") == b"0"
    other.write("/tw/n", "5")
    assert pstore.transaction_end(tx) is False
    assert pstore.next_event(2) == WatchEvent("/tw/n", "t")
    in_transaction(pstore, lambda t: pstore.write("/tw/n", "6", t))
    assert other.read("/tw/n") == b"6"
    assert pstore.next_event(2) == WatchEvent("/tw/n", "t")
    assert pstore.next_event(0.1) is None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pyxs_store_times_out_instead_of_hanging(xs: XsSim) -> None:
    s = PyxsStore(unix_socket_path=xs.dom0, timeout=0.5)
    try:
        s.write("/x", "1")
        xs.server.remove_listener(xs.dom0)  # server closes the connection under pyxs
        t0 = time.monotonic()
        with pytest.raises((TimeoutError, XsError)):
            s.read("/x")
        assert time.monotonic() - t0 < 3
        with pytest.raises((TimeoutError, XsError)):  # and stays failed, promptly
            s.read("/x")
    finally:
        s.close()


def test_the_real_seam_finds_xenstore_as_libxenstore_does(tmp_path, monkeypatch) -> None:
    """dom0 (xenstored's socket there) talks over the socket; a guest (no socket) over
    the kernel's xenbus device, which pyxs alone would never try."""
    import os

    from harness.xen.real import pyxs_store

    sock = tmp_path / "socket"
    monkeypatch.setenv("XENSTORED_PATH", str(sock))
    sock.touch()
    assert pyxs_store.default_transport() == (str(sock), None)
    sock.unlink()
    bus = "/dev/xen/xenbus"
    monkeypatch.setattr(os, "access", lambda path, mode: path == bus)
    assert pyxs_store.default_transport() == (None, bus)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert pyxs_store.default_transport() == (str(sock), None)  # the error names the socket
