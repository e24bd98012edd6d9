"""The simulated xenstored against the real one: Debian's C xenstored 4.17 (from
``xen-utils-4.17``, extracted by ``.ci/setup`` into ``.cache/xen-utils``), run without a
hypervisor through an LD_PRELOAD stub (``tests/c/xs_cstub.c``). Guests speak to it over
ring pages (XS_INTRODUCE), dom0 over its socket; the sim gets the same requests on its
per-domain sockets. The same Hypothesis-generated request sequences go to both, and every
reply and every watch event must be the same (issue 17 items 8-11)."""

from __future__ import annotations

import mmap
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xs_helpers import REPO, XsSim, need_tool

from protocol_models.xenstore import HEADER, HEADER_SIZE, XsType, pack

T = XsType
C_XENSTORED = REPO / ".cache/xen-utils/usr/lib/xen-4.17/bin/xenstored"
STUB_SRC = REPO / "tests/c/xs_cstub.c"
GUESTS = (1, 2)
TIMEOUT = 5.0

Msg = tuple[int, int, bytes]  # type, tx_id, payload


class _Wire:
    """A connection that sends whole requests and reads whole messages."""

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv_some(self, timeout: float) -> bytes:
        raise NotImplementedError

    def __init__(self) -> None:
        self.buf = b""

    def request(self, type_: int, payload: bytes, tx_id: int = 0) -> list[Msg]:
        """Send one request; every message up to and including its reply."""
        self.send(pack(type_, payload, 0x55, tx_id))
        out: list[Msg] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            while len(self.buf) >= HEADER_SIZE:
                t, _, tx, n = HEADER.unpack_from(self.buf)
                if len(self.buf) < HEADER_SIZE + n:
                    break
                out.append((t, tx, self.buf[HEADER_SIZE:HEADER_SIZE + n]))
                self.buf = self.buf[HEADER_SIZE + n:]
                if t != T.WATCH_EVENT:
                    return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {type_} {payload!r}")
            self.buf += self.recv_some(left)


class _SockWire(_Wire):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_some(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return b""
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed")
        return data

    def close(self) -> None:
        self.sock.close()


# struct xenstore_domain_interface: req[1024], rsp[1024], then u32 req_cons, req_prod,
# rsp_cons, rsp_prod (xen/include/public/io/xs_wire.h)
_RING = 1024
_REQ_CONS, _REQ_PROD, _RSP_CONS, _RSP_PROD = 2048, 2052, 2056, 2060


class _RingWire(_Wire):
    def __init__(self, ring_path: str, kick_path: str) -> None:
        super().__init__()
        fd = os.open(ring_path, os.O_RDWR)
        try:
            self.m = mmap.mmap(fd, 4096)
        finally:
            os.close(fd)
        self.kick_fd = os.open(kick_path, os.O_WRONLY | os.O_NONBLOCK)

    def _u32(self, off: int) -> int:
        return int(struct.unpack_from("<I", self.m, off)[0])

    def _set(self, off: int, v: int) -> None:
        struct.pack_into("<I", self.m, off, v & 0xFFFFFFFF)

    def _kick(self) -> None:
        try:
            os.write(self.kick_fd, b"k")
        except BlockingIOError:
            pass  # a kick is pending anyway

    def send(self, data: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while data:
            cons, prod = self._u32(_REQ_CONS), self._u32(_REQ_PROD)
            space = _RING - ((prod - cons) & 0xFFFFFFFF)
            if space == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("request ring full")
                self._kick()
                time.sleep(0.001)
                continue
            idx = prod % _RING
            n = min(space, _RING - idx, len(data))
            self.m[idx:idx + n] = data[:n]
            self._set(_REQ_PROD, prod + n)
            data = data[n:]
            self._kick()

    def recv_some(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            cons, prod = self._u32(_RSP_CONS), self._u32(_RSP_PROD)
            if prod != cons:
                out = bytearray()
                while cons != prod:
                    idx = cons % _RING
                    n = min((prod - cons) & 0xFFFFFFFF, _RING - idx)
                    out += self.m[_RING + idx:_RING + idx + n]
                    cons = (cons + n) & 0xFFFFFFFF
                self._set(_RSP_CONS, cons)
                self._kick()  # xenstored may wait for room
                return bytes(out)
            if time.monotonic() > deadline:
                return b""
            time.sleep(0.0005)

    def close(self) -> None:
        self.m.close()
        os.close(self.kick_fd)


class CXenstored:
    """Debian's C xenstored on sockets in a temporary directory, guests on ring files."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cxs-")
        stub = os.path.join(self.dir, "stub.so")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", stub, str(STUB_SRC), "-ldl"],
                       check=True, timeout=60)
        os.mkfifo(os.path.join(self.dir, "kick"))
        for d in (0, *GUESTS):
            with open(os.path.join(self.dir, f"ring-{d}"), "wb") as f:
                f.write(bytes(4096))
        with open(os.path.join(self.dir, "xsd_port"), "w") as f:
            f.write("99")
        self.socket = os.path.join(self.dir, "socket")
        env = {**os.environ, "XS_STUB_DIR": self.dir, "XENSTORED_RUNDIR": self.dir,
               "XENSTORED_PATH": self.socket, "LD_PRELOAD": stub}
        self.proc = subprocess.Popen(
            [str(C_XENSTORED), "-N", "-F", os.path.join(self.dir, "pid")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self._listening():  # the file appears at bind(), before listen()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                self.close()
                raise RuntimeError(f"C xenstored did not start: {err!r}")
            time.sleep(0.02)

    def _listening(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def dom0(self) -> _SockWire:
        return _SockWire(self.socket)

    def guest(self, domid: int, dom0: _Wire) -> _RingWire:
        [(t, _, p)] = dom0.request(T.INTRODUCE, b"%d\0%d\0%d\0" % (domid, 0x1000, 7))
        assert t == T.INTRODUCE, p
        return _RingWire(os.path.join(self.dir, f"ring-{domid}"),
                         os.path.join(self.dir, "kick"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def need_c_xenstored() -> None:
    need_tool(os.access(C_XENSTORED, os.X_OK) and shutil.which("gcc") is not None,
              "Debian's C xenstored 4.17 and gcc",
              "`bash .ci/setup` extracts xen-utils-4.17 into .cache/xen-utils")


class Pair:
    """The same connections on both: index 0 is dom0, then one per guest."""

    def __init__(self, c: CXenstored, sim: XsSim) -> None:
        c0 = c.dom0()
        self.c = [c0, *(c.guest(d, c0) for d in GUESTS)]
        for d in GUESTS:
            sim.state.introduce(d)
            sim.listen(d)
        self.s: list[_SockWire] = [_SockWire(sim.dom0),
                                   *(_SockWire(str(sim.dir / f"xs{d}.sock")) for d in GUESTS)]

    def both(self, who: int, type_: int, payload: bytes, tx: int = 0
             ) -> tuple[list[Msg], list[Msg]]:
        return (self.c[who].request(type_, payload, tx),
                self.s[who].request(type_, payload, tx))

    def sync(self, only: tuple[int, ...] | None = None
             ) -> tuple[list[list[Msg]], list[list[Msg]]]:
        """Pending watch events of every connection (a no-op request flushes them)."""
        cs, ss = [], []
        for i in range(len(self.c)) if only is None else only:
            a, b = self.both(i, T.GET_DOMAIN_PATH, b"0\0")
            cs.append(a)
            ss.append(b)
        return cs, ss

    def close(self) -> None:
        for w in (*self.c, *self.s):
            w.close()


@pytest.fixture(scope="module")
def cxs() -> None:
    need_c_xenstored()


@pytest.fixture
def pair(cxs: None, tmp_path: Path) -> Iterator[Pair]:
    # a fresh C xenstored per test: no state carried between examples
    c = CXenstored()
    with XsSim(tmp_path) as sim:
        p = Pair(c, sim)
        setup(p)
        yield p
        p.close()
    c.close()


def setup(p: Pair) -> None:
    for d in GUESTS:
        for type_, payload in ((T.MKDIR, b"/local/domain/%d\0" % d),
                               (T.SET_PERMS, b"/local/domain/%d\0n%d\0" % (d, d))):
            a, b = p.both(0, type_, payload)
            assert a == b
    p.sync()


# ------------------------------------------------------------- fixed differences

def test_children_stop_where_c_stops(pair: Pair) -> None:
    # item 10: the node-size quota applies to the parent whose child list grows
    n = 0
    while True:
        a, b = pair.both(1, T.WRITE, b"many/k%04d\0" % n)
        assert a == b, n
        if a[-1][0] == T.ERROR:
            break
        n += 1
    a, b = pair.both(1, T.WRITE, b"x" * 2000 + b"\0")
    assert a == b


def test_transaction_create_and_remove_fires_like_c(pair: Pair) -> None:
    # item 11
    assert pair.both(0, T.WATCH, b"/local/domain/1\0w\0")[0][-1][0] == T.WATCH
    pair.sync()
    [(_, _, tid)] = pair.c[1].request(T.TRANSACTION_START, b"\0")
    [(_, _, tid2)] = pair.s[1].request(T.TRANSACTION_START, b"\0")
    assert tid == tid2
    tx = int(tid.rstrip(b"\0"))
    for type_, payload in ((T.WRITE, b"tmp\0x"), (T.RM, b"tmp\0"), (T.WRITE, b"kept\0y"),
                           (T.TRANSACTION_END, b"T\0")):
        a, b = pair.both(1, type_, payload, tx)
        assert a == b
    ca, sa = pair.sync()
    assert ca == sa


def test_release_deletes_the_domains_nodes_like_c(pair: Pair) -> None:
    # item 9: RELEASE removes what the domain owns and fires the watches
    for who, type_, payload in ((1, T.WRITE, b"data/x\0v"),
                                (0, T.WATCH, b"/local/domain/1/data/x\0x\0"),
                                (0, T.WATCH, b"/local/domain\0all\0"),
                                (0, T.WATCH, b"@releaseDomain\0r\0")):
        a, b = pair.both(who, type_, payload)
        assert a == b
    pair.sync()
    a = pair.c[0].request(T.RELEASE, b"1\0")
    b = pair.s[0].request(T.RELEASE, b"1\0")
    assert a[-1] == b[-1] == (T.RELEASE, 0, b"OK\0")
    a2, b2 = pair.sync((0, 2))  # domain 1's ring is gone in C
    # C frees the domain's connection when its main loop lets go of it, after the reply:
    # the events come after the OK there, before it here; the events are the same
    assert [m for m in a[:-1] + a2[0] if m[0] == T.WATCH_EVENT] == \
        [m for m in b[:-1] + b2[0] if m[0] == T.WATCH_EVENT]
    for path in (b"/local/domain/1/data/x\0", b"/local/domain/1\0"):
        assert pair.c[0].request(T.READ, path) == pair.s[0].request(T.READ, path)


# ------------------------------------------------------------- random sequences

PATHS = [b"/a", b"/a/b", b"/a/b/c", b"/a/d", b"/local/domain/1/x", b"/local/domain/1/x/y",
         b"/local/domain/2/z", b"x", b"x/y", b"z"]
PERMS = [b"n0", b"r1", b"w2", b"b1", b"n1", b"n2", b"r0"]

_op = st.one_of(
    st.tuples(st.just(T.WRITE), st.sampled_from(PATHS), st.binary(max_size=8)),
    st.tuples(st.just(T.MKDIR), st.sampled_from(PATHS)),
    st.tuples(st.just(T.RM), st.sampled_from(PATHS)),
    st.tuples(st.just(T.READ), st.sampled_from(PATHS)),
    st.tuples(st.just(T.DIRECTORY), st.sampled_from(PATHS)),
    st.tuples(st.just(T.GET_PERMS), st.sampled_from(PATHS)),
    st.tuples(st.just(T.SET_PERMS), st.sampled_from(PATHS),
              st.lists(st.sampled_from(PERMS), min_size=1, max_size=3)),
    st.tuples(st.just(T.WATCH), st.sampled_from(PATHS), st.sampled_from([b"t1", b"t2"])),
    st.tuples(st.just(T.UNWATCH), st.sampled_from(PATHS), st.sampled_from([b"t1", b"t2"])),
    st.tuples(st.just(T.TRANSACTION_START)),
    st.tuples(st.just(T.TRANSACTION_END), st.sampled_from([b"T", b"F"])),
    st.tuples(st.just(T.WATCH), st.sampled_from([b"@introduceDomain", b"@releaseDomain"]),
              st.just(b"s")),
    st.tuples(st.just(T.RESET_WATCHES)),
    st.tuples(st.just(T.IS_DOMAIN_INTRODUCED), st.sampled_from([b"1", b"2", b"3"])),
    st.tuples(st.just(T.GET_DOMAIN_PATH), st.sampled_from([b"1", b"7"])),
)
_step = st.tuples(st.integers(0, len(GUESTS)), st.booleans(), _op)


def _payload(op: tuple) -> bytes:  # type: ignore[type-arg]
    type_ = op[0]
    if type_ == T.WRITE:
        return op[1] + b"\0" + op[2]
    if type_ == T.SET_PERMS:
        return op[1] + b"\0" + b"".join(p + b"\0" for p in op[2])
    if type_ in (T.WATCH, T.UNWATCH):
        return op[1] + b"\0" + op[2] + b"\0"
    if type_ in (T.TRANSACTION_START, T.RESET_WATCHES):
        return b"\0"
    if type_ == T.TRANSACTION_END:
        return op[1] + b"\0"
    return op[1] + b"\0"


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(steps=st.lists(_step, min_size=5, max_size=40))
def test_random_sequences_match_c(cxs: None, tmp_path_factory: pytest.TempPathFactory,
                                  steps: list) -> None:  # type: ignore[type-arg]
    c = CXenstored()
    try:
        with XsSim(tmp_path_factory.mktemp("xs")) as sim:
            p = Pair(c, sim)
            try:
                setup(p)
                txs: dict[int, int] = {}
                for i, (who, in_tx, op) in enumerate(steps):
                    tx = txs.get(who, 0) if in_tx or op[0] == T.TRANSACTION_END else 0
                    a, b = p.both(who, op[0], _payload(op), tx)
                    assert a == b, (i, who, op, tx)
                    if op[0] == T.TRANSACTION_START and a[-1][0] == T.TRANSACTION_START:
                        txs[who] = int(a[-1][2].rstrip(b"\0"))
                    elif op[0] == T.TRANSACTION_END and tx:
                        txs.pop(who, None)
                    ca, sa = p.sync()
                    assert ca == sa, (i, who, op, tx)
            finally:
                p.close()
    finally:
        c.close()


def test_transaction_start_inside_an_unknown_transaction_like_c(pair: Pair) -> None:
    # found by the sequences above: C looks the tx id up first (ENOENT), then refuses a
    # start inside a live transaction (EBUSY)
    for tx in (77, 0):
        a, b = pair.both(0, T.TRANSACTION_START, b"\0", tx)
        assert a == b
    tid = int(a[-1][2].rstrip(b"\0"))
    a, b = pair.both(0, T.TRANSACTION_START, b"\0", tid)
    assert a == b == [(T.ERROR, tid, b"EBUSY\0")]
