"""Message-by-message semantics of the simulated xenstored (xenstore.md §1-2, C column)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from xs_helpers import XsSim

from harness.xen.api import Perm, WatchEvent
from harness.xen.xsclient import XsClient
from protocol_models.xenstore import XsError, XsType, join, pack

T = XsType


@pytest.fixture
def xs(tmp_path: Path) -> Iterator[XsSim]:
    with XsSim(tmp_path) as sim:
        yield sim


@pytest.fixture
def c(xs: XsSim) -> XsClient:
    return xs.client()


def err(name: str) -> tuple[int, bytes]:
    return (T.ERROR, name.encode() + b"\0")


# (setup writes, type, payload, expected (type, payload)) — dom0 over its socket.
CASES = [
    ("read", [("/a", b"v")], T.READ, b"/a\0", (T.READ, b"v")),
    ("read-relative", [("/local/domain/0/r", b"rel")], T.READ, b"r\0", (T.READ, b"rel")),
    ("read-binary", [("/b", b"x\0y\n")], T.READ, b"/b\0", (T.READ, b"x\0y\n")),
    ("read-implicit-parent", [("/p/q/r", b"1")], T.READ, b"/p/q\0", (T.READ, b"")),
    ("read-missing", [], T.READ, b"/nope\0", err("ENOENT")),
    ("read-no-nul", [("/a", b"v")], T.READ, b"/a", err("ENOENT")),
    ("read-two-args", [("/a", b"v")], T.READ, b"/a\0b\0", err("ENOENT")),
    ("read-trailing-slash", [], T.READ, b"/a/\0", err("EINVAL")),
    ("read-double-slash", [], T.READ, b"/a//b\0", err("EINVAL")),
    ("read-bad-char", [], T.READ, b"/a b\0", err("EINVAL")),
    ("read-empty-path", [], T.READ, b"\0", err("EINVAL")),
    ("read-too-long", [], T.READ, b"/" + b"a" * 2102 + b"\0", err("EINVAL")),
    ("read-special", [], T.READ, b"@introduceDomain\0", err("EINVAL")),
    ("read-root", [], T.READ, b"/\0", (T.READ, b"")),
    ("write-no-nul", [], T.WRITE, b"/w", err("EINVAL")),
    ("write-empty-value", [], T.WRITE, b"/w\0", (T.WRITE, b"OK\0")),
    ("write-4000", [], T.WRITE, b"/w\0" + b"x" * 4000, (T.WRITE, b"OK\0")),
    ("mkdir", [], T.MKDIR, b"/m/n\0", (T.MKDIR, b"OK\0")),
    ("mkdir-existing", [("/m", b"keep")], T.MKDIR, b"/m\0", (T.MKDIR, b"OK\0")),
    ("rm", [("/z/a", b"")], T.RM, b"/z\0", (T.RM, b"OK\0")),
    ("rm-missing-parent-exists", [("/z", b"")], T.RM, b"/z/nope\0", (T.RM, b"OK\0")),
    ("rm-missing-parent-missing", [], T.RM, b"/nope/nope\0", err("ENOENT")),
    ("rm-root", [], T.RM, b"/\0", err("EINVAL")),
    ("directory", [("/d/x", b""), ("/d/a", b"")], T.DIRECTORY, b"/d\0",
     (T.DIRECTORY, b"x\0a\0")),
    ("directory-leaf", [("/d", b"1")], T.DIRECTORY, b"/d\0", (T.DIRECTORY, b"")),
    ("directory-missing", [], T.DIRECTORY, b"/nope\0", err("ENOENT")),
    ("get-perms", [], T.GET_PERMS, b"/tool\0", (T.GET_PERMS, b"n0\0")),
    ("get-perms-special", [], T.GET_PERMS, b"@releaseDomain\0", (T.GET_PERMS, b"n0\0")),
    ("set-perms", [("/s", b"")], T.SET_PERMS, b"/s\0n0\0r5\0", (T.SET_PERMS, b"OK\0")),
    ("set-perms-hex", [("/s", b"")], T.SET_PERMS, b"/s\0n0x10\0", (T.SET_PERMS, b"OK\0")),
    ("set-perms-missing", [], T.SET_PERMS, b"/nope\0n0\0", err("ENOENT")),
    ("set-perms-empty", [("/s", b"")], T.SET_PERMS, b"/s\0", err("EINVAL")),
    ("set-perms-bad-letter", [("/s", b"")], T.SET_PERMS, b"/s\0x0\0", err("EINVAL")),
    ("set-perms-bad-number", [("/s", b"")], T.SET_PERMS, b"/s\0r5z\0", err("EINVAL")),
    ("watch-depth-arg", [], T.WATCH, b"/w\0tok\0" + b"1\0", err("EINVAL")),
    ("watch-one-arg", [], T.WATCH, b"/w\0", err("EINVAL")),
    ("unwatch-unknown", [], T.UNWATCH, b"/w\0tok\0", err("ENOENT")),
    ("get-domain-path", [], T.GET_DOMAIN_PATH, b"5\0", (T.GET_DOMAIN_PATH,
                                                        b"/local/domain/5\0")),
    ("get-domain-path-atoi", [], T.GET_DOMAIN_PATH, b"abc\0", (T.GET_DOMAIN_PATH,
                                                               b"/local/domain/0\0")),
    ("is-introduced-0", [], T.IS_DOMAIN_INTRODUCED, b"0\0", (T.IS_DOMAIN_INTRODUCED, b"T\0")),
    ("is-introduced-unknown", [], T.IS_DOMAIN_INTRODUCED, b"42\0",
     (T.IS_DOMAIN_INTRODUCED, b"F\0")),
    ("introduce-0", [], T.INTRODUCE, b"0\0" + b"0\0" + b"1\0", (T.INTRODUCE, b"OK\0")),
    ("introduce-short", [], T.INTRODUCE, b"3\0", err("EINVAL")),
    ("release-0", [], T.RELEASE, b"0\0", err("EINVAL")),
    ("release-unknown", [], T.RELEASE, b"42\0", err("ENOENT")),
    ("resume-unknown", [], T.RESUME, b"42\0", err("ENOENT")),
    ("set-target-unknown", [], T.SET_TARGET, b"42\0" + b"43\0", err("ENOENT")),
    ("reset-watches", [], T.RESET_WATCHES, b"", (T.RESET_WATCHES, b"OK\0")),
    ("tx-end-bad-arg", [], T.TRANSACTION_END, b"X\0", err("EINVAL")),
    ("tx-end-no-tx", [], T.TRANSACTION_END, b"T\0", err("ENOENT")),
    ("control-unknown", [], T.CONTROL, b"frobnicate\0", err("EINVAL")),
    ("control-check", [], T.CONTROL, b"check\0", (T.CONTROL, b"OK\0")),
    ("dir-part-one-arg", [], T.DIRECTORY_PART, b"/\0", err("EINVAL")),
    ("dir-part-missing", [], T.DIRECTORY_PART, b"/nope\x000\0", err("ENOENT")),
    *[(f"enosys-{t}", [], t, b"/\0", err("ENOSYS")) for t in (15, 16, 20, 23, 24, 25, 26,
                                                             0xFFFF, 12345)],
]


@pytest.mark.parametrize(("setup", "type_", "payload", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_message(c: XsClient, setup: list[tuple[str, bytes]], type_: int, payload: bytes,
                 expected: tuple[int, bytes]) -> None:
    for path, value in setup:
        c.write(path, value)
    assert c.request(type_, payload) == expected


def test_reply_echoes_header(xs: XsSim) -> None:
    r = xs.raw()
    r.send(T.READ, b"/nope\0", req_id=0xABCD, tx_id=777)
    assert r.recv() == (T.ERROR, 0xABCD, 777, b"ENOENT\0")
    r.send(T.GET_DOMAIN_PATH, b"1\0", req_id=0xFFFFFFFF, tx_id=0)
    assert r.recv() == (T.GET_DOMAIN_PATH, 0xFFFFFFFF, 0, b"/local/domain/1\0")


def test_pipelined_replies_in_order(xs: XsSim) -> None:
    r = xs.raw()
    r.sock.sendall(b"".join(pack(T.GET_DOMAIN_PATH, f"{i}\0".encode(), i) for i in range(20)))
    assert [r.recv()[1] for _ in range(20)] == list(range(20))


def test_initial_tree(c: XsClient) -> None:
    assert c.directory("/") == ["tool", "local"]
    assert c.directory("/tool") == ["xenstored"]
    assert c.directory("/local") == ["domain"]
    for p in ("/", "/tool", "/tool/xenstored", "/local", "/local/domain"):
        assert c.get_perms(p) == [Perm("n", 0)]


def test_write_creates_parents_and_keeps_order(c: XsClient) -> None:
    c.write("/o/z", "1")
    c.write("/o/a", "2")
    c.write("/o/m/deep", "3")
    assert c.directory("/o") == ["z", "a", "m"]
    c.mkdir("/o/z")  # existing: value kept
    assert c.read("/o/z") == b"1"
    c.rm("/o/a")
    c.write("/o/a", "4")
    assert c.directory("/o") == ["z", "m", "a"]


def test_rm_removes_subtree(c: XsClient) -> None:
    c.write("/r/a/b/c", "1")
    c.write("/r/x", "2")
    c.rm("/r/a")
    assert c.directory("/r") == ["x"]
    for p in ("/r/a", "/r/a/b", "/r/a/b/c"):
        assert c.request(T.READ, join(p)) == err("ENOENT")


def test_perms_inherited_on_create(c: XsClient) -> None:
    c.write("/i", "")
    c.set_perms("/i", [Perm("n", 0), Perm("r", 3), Perm("w", 4)])
    c.write("/i/child/grand", "x")
    assert c.get_perms("/i/child/grand") == [Perm("n", 0), Perm("r", 3), Perm("w", 4)]


def test_perm_domid_parsed_like_strtol(c: XsClient) -> None:
    c.write("/s", "")
    assert c.request(T.SET_PERMS, b"/s\0n0\0r0x10\0b010\0") == (T.SET_PERMS, b"OK\0")
    assert c.get_perms("/s") == [Perm("n", 0), Perm("r", 16), Perm("b", 8)]


def test_dom0_not_limited_to_five_perms(c: XsClient) -> None:
    c.write("/s", "")
    perms = [Perm("n", 0)] + [Perm("r", i) for i in range(1, 10)]
    c.set_perms("/s", perms)
    assert c.get_perms("/s") == perms


def test_directory_part_chunks_500_children(c: XsClient) -> None:
    names = [f"child-with-a-long-name-{i:04d}" for i in range(500)]
    for n in names:
        c.write(f"/big/{n}", "")
    assert c.request(T.DIRECTORY, b"/big\0") == err("E2BIG")
    # walk it by hand: chunks end at child boundaries, the last one with an extra nul
    offset, chunks, gens = 0, [], set()
    while True:
        t, p = c.request(T.DIRECTORY_PART, join("/big", str(offset)))
        assert t == T.DIRECTORY_PART and len(p) <= 4096
        gen, _, chunk = p.partition(b"\0")
        gens.add(gen)
        if chunk.endswith(b"\0\0"):
            chunks.append(chunk[:-1])
            break
        assert chunk.endswith(b"\0")
        chunks.append(chunk)
        offset += len(chunk)
    assert len(chunks) > 3 and len(gens) == 1 and int(gens.pop()) > 0
    assert b"".join(chunks).split(b"\0")[:-1] == [n.encode() for n in names]
    t, p = c.request(T.DIRECTORY_PART, join("/big", "999999"))
    assert p.endswith(b"\0\0") and p.count(b"\0") == 2  # past the end: <gen>\0\0
    assert c.directory("/big") == names  # the client's fallback


def test_directory_part_generation_changes(c: XsClient) -> None:
    c.write("/g/a", "")
    g1 = c.request(T.DIRECTORY_PART, b"/g\x000\0")[1].split(b"\0")[0]
    c.write("/g/b", "")
    g2 = c.request(T.DIRECTORY_PART, b"/g\x000\0")[1].split(b"\0")[0]
    assert g1 != g2


# --------------------------------------------------------------------------- watches

def events(c: XsClient, timeout: float = 0.3) -> list[WatchEvent]:
    out = []
    while (ev := c.next_event(timeout)) is not None:
        out.append(ev)
    return out


def test_watch_fires_on_every_change(c: XsClient) -> None:
    c.watch("/w", "t")
    c.write("/w/a", "1")       # create
    c.write("/w/a", "1")       # same value again
    c.mkdir("/w/a")            # existing: no event
    c.mkdir("/w/b")            # new
    c.set_perms("/w/a", [Perm("n", 0), Perm("r", 1)])
    c.rm("/w/a")
    c.write("/other", "x")     # outside: nothing
    assert [e.path for e in events(c)] == ["/w", "/w/a", "/w/a", "/w/b", "/w/a", "/w/a"]


def test_watch_initial_fire_on_missing_node(c: XsClient) -> None:
    c.watch("/not/there", "tok")
    assert events(c) == [WatchEvent("/not/there", "tok")]


def test_watch_relative_paths(c: XsClient) -> None:
    c.watch("rw", "rel")
    c.write("/local/domain/0/rw/k", "1")
    assert events(c) == [WatchEvent("rw", "rel"), WatchEvent("rw/k", "rel")]


def test_rm_of_ancestor(c: XsClient) -> None:
    c.write("/z/a/b", "1")
    c.watch("/", "root")
    c.watch("/z/a", "exists")
    c.watch("/z/a/none", "missing")
    c.watch("/z/a/b", "leaf")
    events(c)
    c.rm("/z")
    assert events(c) == [WatchEvent("/z", "root"), WatchEvent("/z/a", "exists"),
                         WatchEvent("/z/a/b", "leaf")]


def test_watch_duplicates_and_unwatch(c: XsClient) -> None:
    c.watch("/d", "t")
    with pytest.raises(XsError) as e:
        c.watch("/d", "t")
    assert e.value.name == "EEXIST"
    c.watch("/d", "t2")  # another token is fine
    c.unwatch("/d", "t")
    events(c)
    c.write("/d", "x")
    assert events(c) == [WatchEvent("/d", "t2")]


def test_watches_fire_in_registration_order(c: XsClient) -> None:
    c.watch("/o", "first")
    c.watch("/", "second")
    c.watch("/o/p", "third")
    events(c)
    c.write("/o/p", "1")
    assert [e.token for e in events(c)] == ["first", "second", "third"]


def test_reset_watches(c: XsClient) -> None:
    c.watch("/rw", "t")
    events(c)
    tx = c.transaction_start()
    c.reset_watches()
    c.write("/rw", "x")
    assert events(c) == []
    assert c.request(T.READ, b"/rw\0", tx) == err("ENOENT")  # transaction dropped too


def test_watch_event_before_reply_on_own_connection(xs: XsSim) -> None:
    r = xs.raw()
    assert r.call(T.WATCH, b"@introduceDomain\0w\0") == (T.WATCH, b"OK\0")
    assert r.recv()[0] == T.WATCH_EVENT  # initial fire comes after the OK
    r.send(T.INTRODUCE, b"5\x000\x001\0", req_id=9)
    assert r.recv() == (T.WATCH_EVENT, 0, 0, b"@introduceDomain\0w\0")
    assert r.recv() == (T.INTRODUCE, 9, 0, b"OK\0")
    r.send(T.INTRODUCE, b"5\x000\x001\0", req_id=10)  # rebind: OK, no new event
    assert r.recv() == (T.INTRODUCE, 10, 0, b"OK\0")
    assert r.call(T.WATCH, b"@releaseDomain\0r\0") == (T.WATCH, b"OK\0")
    r.recv()
    r.send(T.RELEASE, b"5\0", req_id=11)
    assert r.recv() == (T.WATCH_EVENT, 0, 0, b"@releaseDomain\0r\0")
    assert r.recv() == (T.RELEASE, 11, 0, b"OK\0")


def test_special_watches_from_public_api(xs: XsSim, c: XsClient) -> None:
    c.watch("@introduceDomain", "i")
    c.watch("@releaseDomain", "r")
    c.watch("@other", "o")  # accepted, never fires
    events(c)
    xs.state.introduce(3)
    assert xs.state.is_introduced(3) and c.is_domain_introduced(3)
    assert xs.state.release(3) is True
    assert not xs.state.is_introduced(3)
    assert events(c) == [WatchEvent("@introduceDomain", "i"), WatchEvent("@releaseDomain", "r")]


def test_release_drops_the_domains_watches(xs: XsSim) -> None:
    guest = xs.client(4)
    xs.state.introduce(4)
    c = xs.client()
    c.write("/local/domain/4/dev", "")
    c.set_perms("/local/domain/4", [Perm("n", 4)])
    guest.watch("dev", "g")
    assert events(guest) == [WatchEvent("dev", "g")]
    xs.state.release(4)
    c.write("/local/domain/4/dev/x", "1")
    assert events(guest) == []


# --------------------------------------------------------------------------- transactions

def test_transaction_isolation_and_commit_events(c: XsClient, xs: XsSim) -> None:
    other = xs.client()
    other.watch("/t", "w")
    events(other)
    tx = c.transaction_start()
    c.write("/t/a", "in-tx", tx)
    assert c.read("/t/a", tx) == b"in-tx"
    assert c.directory("/t", tx) == ["a"]
    assert other.request(T.READ, b"/t/a\0") == err("ENOENT")
    assert events(other) == []  # nothing before commit
    assert c.transaction_end(tx) is True
    assert other.read("/t/a") == b"in-tx"
    assert events(other) == [WatchEvent("/t/a", "w")]


def test_transaction_abort(c: XsClient) -> None:
    c.write("/t", "old")
    tx = c.transaction_start()
    c.write("/t", "new", tx)
    c.rm("/t", tx)
    assert c.transaction_end(tx, commit=False) is True
    assert c.read("/t") == b"old"


def test_conflict_on_read_set(c: XsClient, xs: XsSim) -> None:
    other = xs.client()
    c.write("/t/read", "1")
    c.write("/t/written", "1")
    tx = c.transaction_start()
    c.read("/t/read", tx)
    c.write("/t/mine", "x", tx)
    other.write("/t/read", "2")
    assert c.transaction_end(tx) is False
    assert c.request(T.READ, b"/t/mine\0") == err("ENOENT")


def test_unrelated_write_does_not_conflict(c: XsClient, xs: XsSim) -> None:
    other = xs.client()
    c.write("/t/a", "1")
    c.write("/t/b", "1")
    tx = c.transaction_start()
    c.write("/t/a", "2", tx)
    other.write("/t/b", "2")  # existing node elsewhere: no conflict in 4.17
    assert c.transaction_end(tx) is True
    assert c.read("/t/a") == b"2" and c.read("/t/b") == b"2"


def test_conflict_on_written_node_and_rm(c: XsClient, xs: XsSim) -> None:
    other = xs.client()
    c.write("/t/a/b", "1")
    tx = c.transaction_start()
    c.rm("/t/a", tx)
    other.write("/t/a/b/new", "x")  # below the removed subtree
    assert c.transaction_end(tx) is False
    assert other.read("/t/a/b/new") == b"x"


def test_transaction_ids_and_errors(c: XsClient) -> None:
    t1, t2 = c.transaction_start(), c.transaction_start()
    assert (t1, t2) == (1, 2)
    assert c.request(T.TRANSACTION_START, b"\0", tx_id=t1) == err("EBUSY")
    assert c.request(T.READ, b"/\0", tx_id=99) == err("ENOENT")
    assert c.transaction_end(t1) is True
    assert c.request(T.READ, b"/\0", tx_id=t1) == err("ENOENT")  # ended
    assert c.request(T.TRANSACTION_END, b"X\0", tx_id=t2) == err("EINVAL")
    assert c.transaction_end(t2, commit=False) is True
    # watch and unwatch ignore tx_id
    assert c.request(T.WATCH, b"/x\0t\0", tx_id=12345) == (T.WATCH, b"OK\0")


def test_commit_event_arrives_before_reply(xs: XsSim) -> None:
    r = xs.raw()
    r.call(T.WATCH, b"/ce\0w\0")
    r.recv()
    _, p = r.call(T.TRANSACTION_START, b"\0")
    tx = int(p.rstrip(b"\0"))
    assert r.call(T.WRITE, b"/ce\0v", tx_id=tx) == (T.WRITE, b"OK\0")
    r.send(T.TRANSACTION_END, b"T\0", req_id=5, tx_id=tx)
    assert r.recv() == (T.WATCH_EVENT, 0, 0, b"/ce\0w\0")
    assert r.recv() == (T.TRANSACTION_END, 5, tx, b"OK\0")


# --------------------------------------------------------------------------- control, sizes

def test_control_commands(c: XsClient) -> None:
    help_text = c.control("help").decode()
    for cmd in ("check", "log", "live-update", "logfile", "memreport", "print", "quota",
                "quota-soft", "help"):
        assert cmd in help_text
    quota = c.control("quota").decode()
    assert "nodes" in quota and "1000" in quota and "transaction-nodes" in quota
    assert c.control("quota", "set", "watches", "3") == b"OK\0"


def test_oversize_resets_connection_only(xs: XsSim, c: XsClient) -> None:
    r = xs.raw()
    r.sock.sendall(pack(T.WRITE, b"/big\0" + b"x" * 4092))  # 4097 bytes of payload
    assert r.peer_closed()
    assert c.read("/local") == b""  # the others go on
    assert c.request(T.WRITE, b"/ok\0" + b"x" * 4091) == (T.WRITE, b"OK\0")  # 4096 is fine


def test_ended_connection_drops_its_transactions_and_watches(xs: XsSim) -> None:
    r = xs.raw()
    r.call(T.WATCH, b"/gone\0w\0")
    r.call(T.TRANSACTION_START, b"\0")
    assert any(conn.watches for conn in xs.state._conns)
    r.close()
    deadline = time.monotonic() + 5
    while any(conn.watches for conn in xs.state._conns):
        assert time.monotonic() < deadline, "watch of a closed connection kept"
        time.sleep(0.01)
    xs.client().write("/gone", "x")


# ------------------------------------------------ issue 17: differences from C 4.17


class _Conn:
    """A transport-free connection to a XenstoreState: requests in, messages out."""

    def __init__(self, state: object, domid: int) -> None:
        from harness.xen.sim.xenstored import XenstoreState

        assert isinstance(state, XenstoreState)
        self.state = state
        self.msgs: list[tuple[int, bytes]] = []
        self.conn = state.connect(domid, self._sink)

    def _sink(self, msg: bytes) -> None:
        from protocol_models.xenstore import HEADER, HEADER_SIZE

        type_, _, _, length = HEADER.unpack_from(msg)
        self.msgs.append((type_, msg[HEADER_SIZE:HEADER_SIZE + length]))

    def __call__(self, type_: int, *args: bytes, tx: int = 0) -> tuple[int, bytes]:
        self.msgs.clear()
        payload = b"\0".join(args) + (b"" if type_ == T.WRITE else b"\0")
        self.state.handle(self.conn, type_, 1, tx, payload)
        return next(m for m in self.msgs if m[0] != T.WATCH_EVENT)

    def events(self) -> list[bytes]:
        return [p for t, p in self.msgs if t == T.WATCH_EVENT]


def _state() -> object:
    from harness.xen.sim.xenstored import XenstoreState

    return XenstoreState()


def test_commit_fires_nothing_for_a_node_created_and_removed_inside() -> None:
    # item 11: C's finalize_transaction has no node to fire for
    st = _state()
    d0, w = _Conn(st, 0), _Conn(st, 0)
    d0(T.WRITE, b"/t", b"")
    w(T.WATCH, b"/t", b"tok")
    (_, tid) = d0(T.TRANSACTION_START, b"")
    tx = int(tid.rstrip(b"\0"))
    d0(T.WRITE, b"/t/tmp", b"x", tx=tx)
    d0(T.RM, b"/t/tmp", tx=tx)
    d0(T.WRITE, b"/t/kept", b"y", tx=tx)
    w.msgs.clear()
    assert d0(T.TRANSACTION_END, b"T", tx=tx) == (T.TRANSACTION_END, b"OK\0")
    assert w.events() == [b"/t/kept\0tok\0"]


def test_rm_in_transaction_after_concurrent_delete_is_eio_without_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    # item 11: the transaction saw /a/b; /a/b goes away outside; the RM reaches a parent
    # without that child: C's delete_child answers EIO (corrupt), no internal error
    st = _state()
    d0 = _Conn(st, 0)
    d0(T.WRITE, b"/a/b", b"1")
    (_, tid) = d0(T.TRANSACTION_START, b"")
    tx = int(tid.rstrip(b"\0"))
    assert d0(T.READ, b"/a/b", tx=tx) == (T.READ, b"1")
    d0(T.RM, b"/a/b")
    with caplog.at_level("INFO"):
        assert d0(T.RM, b"/a/b", tx=tx) == err("EIO")
    assert not any(r.exc_info for r in caplog.records)


def test_node_size_quota_applies_to_a_growing_parent() -> None:
    # item 10: C's create_node writes the parent with its new child list through
    # write_node_raw, which checks the node-size quota for an unprivileged domain
    st = _state()
    d0, d1 = _Conn(st, 0), _Conn(st, 1)
    d0(T.MKDIR, b"/local/domain/1")
    d0(T.SET_PERMS, b"/local/domain/1", b"n1")
    assert d1(T.WRITE, b"x" * 2030, b"") == err("ENOSPC")
    n = 0
    while d1(T.WRITE, b"many/k%04d" % n, b"") == (T.WRITE, b"OK\0"):
        n += 1
    # 24 + 8 + 6 * n < 2048: C stops at 336 children of 6 bytes (a 6-char name + NUL)
    assert n == (2048 - 24 - 8 - 1) // 6


def test_release_removes_the_domains_nodes_and_fires_their_watches() -> None:
    # item 9: C 4.17 destroy_domain -> domain_tree_remove deletes every subtree the
    # domain owns (rm_node, watches fire), then fires @releaseDomain
    st = _state()
    d0, w = _Conn(st, 0), _Conn(st, 0)
    st.introduce(3)
    d3 = _Conn(st, 3)
    d0(T.MKDIR, b"/local/domain/3")
    d0(T.SET_PERMS, b"/local/domain/3", b"n3")
    d0(T.MKDIR, b"/shared")
    d0(T.SET_PERMS, b"/shared", b"n0", b"b3")
    assert d3(T.WRITE, b"/local/domain/3/data/x", b"1")[0] == T.WRITE
    assert d3(T.WRITE, b"/shared/mine/y", b"2")[0] == T.WRITE
    d0(T.WRITE, b"/shared/dom0s", b"3")
    w(T.WATCH, b"/shared", b"s")
    w(T.WATCH, b"/local/domain/3/data/x", b"x")
    w(T.WATCH, b"@releaseDomain", b"r")
    w.msgs.clear()
    assert d0(T.RELEASE, b"3") == (T.RELEASE, b"OK\0")
    assert w.events() == [b"/local/domain/3/data/x\0x\0", b"/shared/mine\0s\0",
                          b"@releaseDomain\0r\0"]
    assert d0(T.READ, b"/shared/mine/y") == err("ENOENT")
    assert d0(T.READ, b"/local/domain/3/data") == err("ENOENT")
    assert d0(T.READ, b"/shared/dom0s") == (T.READ, b"3")
    assert d0(T.READ, b"/local/domain/3") == err("ENOENT")  # it owned its home too


def test_watch_and_transaction_quotas_count_per_domain() -> None:
    # item 4: C keeps domain->nbwatch and the transaction count per domain
    st = _state()
    a, b = _Conn(st, 5), _Conn(st, 5)
    for i in range(128):
        assert (a if i % 2 else b)(T.WATCH, b"/w%d" % i, b"t")[0] == T.WATCH
    assert a(T.WATCH, b"/one-more", b"t") == err("E2BIG")
    assert b(T.WATCH, b"/one-more", b"t") == err("E2BIG")
    for i in range(10):
        assert (a if i % 2 else b)(T.TRANSACTION_START, b"")[0] == T.TRANSACTION_START
    assert a(T.TRANSACTION_START, b"") == err("ENOSPC")
