"""Python clients of the simulated hypervisor: grants, event channels, the control ops, and
``SimDomain`` bundling them with an XsClient as an :class:`harness.xen.api.Domain`.

Each ``SimGrants`` / ``SimEventChannels`` opens its own connection to
``DIR/domN/hypervisor.sock``, as a process opens /dev/xen/gntalloc or evtchn: what it
allocates, binds or maps is released when it closes (or its process dies). None of these
objects is thread-safe; use one per thread.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.xen.api import XenTimeout
from harness.xen.sim import hvproto as P
from harness.xen.sim import shm
from harness.xen.sim.daemon import hypervisor_path, xenstored_path
from harness.xen.sim.faults import MODES as FAULT_MODES
from harness.xen.sim.faults import OPS as FAULT_OPS
from harness.xen.sim.faults import FaultError, parse_errno
from harness.xen.sim.hvproto import Op, PortState

DEFAULT_TIMEOUT = 5.0


def _error(status: int, what: str) -> OSError:
    return OSError(-status, f"{what}: {os.strerror(-status)}")


class HvConnection:
    """One connection to a hypervisor socket: request/reply by ``seq``, async messages handed
    to ``on_async`` whenever they arrive (also in the middle of waiting for a reply)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT,
                 on_async: Callable[[P.Message], None] | None = None) -> None:
        self.path = path
        self.timeout = timeout
        self.on_async = on_async
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
            self.sock.settimeout(None)  # reads below poll first, then use MSG_DONTWAIT
        except BaseException:
            self.sock.close()
            raise
        self._seq = 0
        self._poller = select.poll()
        self._poller.register(self.sock.fileno(), select.POLLIN)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _recv(self, timeout: float) -> P.Message:
        if not self._poller.poll(max(0, int(timeout * 1000))):
            raise XenTimeout(f"no reply from the hypervisor at {self.path}")
        msg = P.recv(self.sock, socket.MSG_DONTWAIT)
        if msg is None:
            raise ConnectionResetError(errno.ECONNRESET, "hypervisor closed the connection")
        return msg

    def _handle_stray(self, msg: P.Message) -> None:
        if msg.seq == 0 and msg.op & 0x80 and self.on_async is not None:
            self.on_async(msg)
        else:
            for fd in msg.fds:
                os.close(fd)

    def poll_async(self) -> None:
        """Process whatever async messages are queued, without blocking."""
        while self._poller.poll(0):
            msg = P.recv(self.sock, socket.MSG_DONTWAIT)
            if msg is None:
                raise ConnectionResetError(errno.ECONNRESET, "hypervisor closed the connection")
            self._handle_stray(msg)

    def _start(self, op: int, payload: bytes) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1
        P.send(self.sock, P.pack(op, self._seq, payload))
        return self._seq

    def _reply(self, op: int, seq: int, deadline: float) -> P.Message:
        while True:
            msg = self._recv(deadline - time.monotonic())
            if msg.seq == seq and msg.op == op:
                return msg
            self._handle_stray(msg)

    def call(self, op: int, payload: bytes = b"", *, ok_status: tuple[int, ...] = ()
             ) -> P.Message:
        seq = self._start(op, payload)
        msg = self._reply(op, seq, time.monotonic() + self.timeout)
        if msg.status < 0 and msg.status not in ok_status:
            for fd in msg.fds:
                os.close(fd)
            raise _error(msg.status, Op(op).name if op in Op._value2member_map_ else str(op))
        return msg

    def call_chunked(self, op: int, payload: bytes = b"") -> tuple[list[bytes], list[int], int]:
        """(entry payloads joined per chunk, all fds, extra) of a chunked reply."""
        seq = self._start(op, payload)
        deadline = time.monotonic() + self.timeout
        parts: list[bytes] = []
        fds: list[int] = []
        try:
            while True:
                msg = self._reply(op, seq, deadline)
                fds.extend(msg.fds)
                if msg.status < 0:
                    raise _error(msg.status, Op(op).name)
                total, first, count, extra = P.CHUNK.unpack_from(msg.payload)
                parts.append(msg.payload[P.CHUNK.size:])
                if first + count >= total:
                    return parts, fds, extra
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise


FAULT_PAGE_NOTIFY = 0x1  # hypervisor.FAULT_PAGE_NOTIFY


def _fault_page(conn: HvConnection) -> mmap.mmap | None:
    """The domain's fault page, read-only (None from a sim without one)."""
    try:
        msg = conn.call(Op.FAULT_PAGE)
    except OSError:
        return None
    if len(msg.fds) != 1:
        for fd in msg.fds:
            os.close(fd)
        return None
    try:
        return mmap.mmap(msg.fds[0], shm.PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(msg.fds[0])


def _faults_armed(page: mmap.mmap | None, bit: int) -> bool:
    return page is not None and bool(int.from_bytes(page[0:4], "little") & bit)


def _records(parts: list[bytes], st: struct.Struct) -> list[tuple[Any, ...]]:
    return [rec for part in parts for rec in st.iter_unpack(part)]


# ------------------------------------------------------------------ event channels


class SimEventChannels:
    """An event-channel handle (``api.EventChannels``). ``fileno()`` is an epoll fd over the
    channel sockets only: it is readable only while a port has an event pending, as
    /dev/xen/evtchn is."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._conn = HvConnection(path, timeout)
        self._ep = select.epoll()
        self._ports: dict[int, int | None] = {}  # local port -> channel fd
        self._fd_port: dict[int, int] = {}
        self._pending: list[int] = []
        self._faults = _fault_page(self._conn)

    def _add_channel(self, port: int, fd: int) -> None:
        os.set_blocking(fd, False)
        self._ports[port] = fd
        self._fd_port[fd] = port
        self._ep.register(fd, select.EPOLLIN)

    def _drop_channel(self, port: int) -> None:
        fd = self._ports.get(port)
        if fd is not None:
            self._ports[port] = None
            del self._fd_port[fd]
            self._ep.unregister(fd)
            os.close(fd)

    def _bound(self, msg: P.Message, what: str) -> int:
        (port,) = P.unpack_u32s(msg.payload, 1)
        if len(msg.fds) != 1:
            for fd in msg.fds:
                os.close(fd)
            raise OSError(errno.EPROTO, f"{what} reply without its channel fd")
        self._ports[port] = None
        self._add_channel(port, msg.fds[0])
        return port

    def alloc_unbound(self, remote_domid: int) -> int:
        msg = self._conn.call(Op.EVTCHN_ALLOC_UNBOUND, P.u32s(remote_domid))
        return self._bound(msg, "alloc_unbound")

    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int:
        msg = self._conn.call(Op.EVTCHN_BIND_INTERDOMAIN, P.u32s(remote_domid, remote_port))
        return self._bound(msg, "bind_interdomain")

    def notify(self, port: int) -> None:
        fd = self._ports.get(port, -1)
        if fd is None or fd == -1:
            raise OSError(errno.ENOTCONN, f"port {port} is not bound by this handle")
        if _faults_armed(self._faults, FAULT_PAGE_NOTIFY):
            self._conn.call(Op.EVTCHN_NOTIFY_CHECK, P.u32s(port))
        try:
            os.write(fd, b"\1")
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass  # full: an event is already pending; closed: peer gone (silent on Xen)

    def status(self, port: int) -> tuple[PortState, int, int]:
        """(state, remote domid, remote port) of one of this domain's ports."""
        msg = self._conn.call(Op.EVTCHN_STATUS, P.u32s(port))
        state, rdom, rport = P.unpack_u32s(msg.payload, 3)
        return PortState(state), rdom, rport

    def unbind(self, port: int) -> None:
        if port not in self._ports:
            raise OSError(errno.ENOTCONN, f"port {port} is not bound by this handle")
        self._conn.call(Op.EVTCHN_UNBIND, P.u32s(port))
        self._drop_channel(port)
        del self._ports[port]
        self._pending = [p for p in self._pending if p != port]

    @property
    def ports(self) -> list[int]:
        return sorted(self._ports)

    def fileno(self) -> int:
        return self._ep.fileno()

    def wait(self, timeout: float) -> list[int]:
        fired: list[int] = []
        deadline = time.monotonic() + timeout
        remaining = max(0.0, timeout)
        while True:
            for fd, _ in self._ep.poll(remaining):
                port = self._fd_port.get(fd)
                if port is None:
                    continue
                if self._drain(fd, port) and port not in fired:
                    fired.append(port)
            if fired:
                return fired
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []

    def _drain(self, fd: int, port: int) -> bool:
        got = False
        while True:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return got
            except OSError:
                data = b""
            if not data:  # the hypervisor closed the port (our domain died, or the sim)
                self._drop_channel(port)
                return got
            got = True
            if len(data) < 4096:
                return got

    def close(self) -> None:
        for port in list(self._ports):
            self._drop_channel(port)
        self._ports.clear()
        self._ep.close()
        if self._faults is not None:
            self._faults.close()
        self._conn.close()

    def __enter__(self) -> SimEventChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------- grant tables


class SimSharedPages:
    """Pages allocated for granting (``api.SharedPages``)."""

    def __init__(self, grants: SimGrants, page_ids: list[int], mapping: shm.ContiguousMapping
                 ) -> None:
        self._grants = grants
        self.page_ids = page_ids
        self.npages = len(page_ids)
        self.refs: list[int] = []  # filled by share_pages; alloc_pages leaves granting to you
        self._mapping = mapping

    @property
    def view(self) -> memoryview:
        return self._mapping.view

    def page(self, index: int) -> memoryview:
        return self._mapping.page(index)

    def free(self) -> None:
        if self._mapping.closed:
            return
        self._mapping.close()
        self._grants._free(self)


class SimMapping:
    """Foreign pages mapped contiguously (``api.Mapping``)."""

    def __init__(self, grants: SimGrants, map_id: int, domid: int, refs: tuple[int, ...],
                 readonly: bool, mapping: shm.ContiguousMapping) -> None:
        self._grants = grants
        self.map_id = map_id
        self.domid = domid
        self.refs = refs
        self.readonly = readonly
        self._mapping = mapping

    @property
    def view(self) -> memoryview:
        return self._mapping.view

    @property
    def mapped(self) -> bool:
        return not self._mapping.closed

    def unmap(self) -> None:
        if self._mapping.closed:
            return
        self._mapping.close()
        self._grants._unmap(self)


class SimGrants:
    """Grant tables of one domain, both sides (``api.Grants``)."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._conn = HvConnection(path, timeout)
        self._pages: set[SimSharedPages] = set()
        self._maps: set[SimMapping] = set()

    def alloc_pages(self, npages: int) -> SimSharedPages:
        parts, fds, _ = self._conn.call_chunked(Op.GNT_ALLOC, P.u32s(npages))
        ids = [i for part in parts for (i,) in P.U32.iter_unpack(part)]
        try:
            mapping = shm.map_and_close(fds)
        except OSError:
            self._conn.call(Op.GNT_FREE, P.u32s(len(ids), *ids))
            raise
        pages = SimSharedPages(self, ids, mapping)
        self._pages.add(pages)
        return pages

    def share_pages(self, npages: int, domid: int, readonly: bool = False) -> SimSharedPages:
        """``api.Grants.share_pages``: allocate, then grant every page to ``domid``."""
        pages = self.alloc_pages(npages)
        try:
            pages.refs = [self.grant(pages, i, domid, readonly) for i in range(npages)]
        except BaseException:
            pages.free()
            raise
        return pages

    def grant(self, pages: SimSharedPages, index: int, domid: int,
              readonly: bool = False) -> int:
        if not 0 <= index < pages.npages:
            raise IndexError(f"page {index} out of range")
        msg = self._conn.call(Op.GNT_GRANT, P.u32s(pages.page_ids[index], domid,
                                                   P.GRANT_READONLY if readonly else 0))
        return P.unpack_u32s(msg.payload, 1)[0]

    def revoke(self, ref: int) -> bool:
        msg = self._conn.call(Op.GNT_REVOKE, P.u32s(ref), ok_status=(-errno.EBUSY,))
        return msg.status == 0

    def map(self, domid: int, refs: Sequence[int], readonly: bool = False) -> SimMapping:
        refs = tuple(refs)
        _, fds, map_id = self._conn.call_chunked(
            Op.GNT_MAP, P.u32s(domid, P.GRANT_READONLY if readonly else 0, len(refs), *refs))
        try:
            mapping = shm.map_and_close(fds, readonly, dontfork=True)  # gntdev: VM_DONTCOPY
        except OSError:
            self._conn.call(Op.GNT_UNMAP, P.u32s(map_id))
            raise
        m = SimMapping(self, map_id, domid, refs, readonly, mapping)
        self._maps.add(m)
        return m

    def _unmap(self, m: SimMapping) -> None:
        self._maps.discard(m)
        self._conn.call(Op.GNT_UNMAP, P.u32s(m.map_id))

    def _free(self, pages: SimSharedPages) -> None:
        self._pages.discard(pages)
        self._conn.call(Op.GNT_FREE, P.u32s(len(pages.page_ids), *pages.page_ids))

    def close(self) -> None:
        # closing the connection releases everything in the hypervisor at once
        for m in list(self._maps):
            m._mapping.close()
        for p in list(self._pages):
            p._mapping.close()
        self._maps.clear()
        self._pages.clear()
        self._conn.close()

    def __enter__(self) -> SimGrants:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------- control (dom0)


@dataclass(frozen=True)
class DomainInfo:
    domid: int
    name: str
    privileged: bool


@dataclass(frozen=True)
class MappingRecord:
    """``mapper`` maps page ``ref`` of ``granter`` since ``since`` (time.monotonic_ns)."""

    granter: int
    mapper: int
    ref: int
    readonly: bool
    since: int
    until: int | None  # None while still mapped
    map_id: int


@dataclass(frozen=True)
class PortRecord:
    domid: int
    port: int
    state: PortState
    remote_domid: int
    remote_port: int


@dataclass(frozen=True)
class GrantRecord:
    domid: int
    ref: int
    grantee: int
    readonly: bool
    busy: bool  # revoked while mapped: released at its last unmap
    nmaps: int


@dataclass(frozen=True)
class RevokeRecord:
    granter: int
    ref: int
    grantee: int
    at: int
    released: int | None


@dataclass(frozen=True)
class MapCounterRecord:
    """Pages of ``granter`` mapped and unmapped by ``mapper`` since the sim started (kept
    whatever the size of the history window)."""

    granter: int
    mapper: int
    maps: int
    unmaps: int

    @property
    def mapped(self) -> int:
        return self.maps - self.unmaps


@dataclass(frozen=True)
class FaultRecord:
    """An injected fault: ``op`` of ``domid`` fails with ``errno``; ``calls`` matching
    calls were seen, ``fired`` of them failed; a spent ``once`` fault fires no more."""

    id: int
    domid: int
    op: str
    errno: int
    mode: str  # "once", "always" or "from"
    n: int
    calls: int
    fired: int
    spent: bool


@dataclass(frozen=True)
class XsWriteCount:
    domid: int
    total: int  # every write request (write, mkdir, rm, set-perms) since the sim started
    since: int  # those at or after the asked time


_MODE_NAMES = {v: k for k, v in FAULT_MODES.items()}


def _any(v: int | None) -> int:
    return P.ANY if v is None else v


class SimControl:
    """Domain 0's privileged control ops: domains and accounting."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._conn = HvConnection(path, timeout)

    def create_domain(self, domid: int, name: str = "") -> None:
        self._conn.call(Op.CTL_CREATE_DOMAIN, P.u32s(domid) + name.encode() + b"\0")

    def destroy_domain(self, domid: int) -> None:
        self._conn.call(Op.CTL_DESTROY_DOMAIN, P.u32s(domid))

    def list_domains(self) -> list[DomainInfo]:
        parts, _, _ = self._conn.call_chunked(Op.CTL_LIST_DOMAINS)
        return [DomainInfo(d, n.rstrip(b"\0").decode(), bool(f & P.DOMAIN_FLAG_PRIVILEGED))
                for d, f, n in _records(parts, P.DOMAIN_REC)]

    def mappings(self, granter: int | None = None, mapper: int | None = None,
                 history: bool = False) -> list[MappingRecord]:
        parts, _, _ = self._conn.call_chunked(
            Op.CTL_MAPPINGS, P.u32s(_any(granter), _any(mapper), 1 if history else 0))
        return [MappingRecord(g, m, r, bool(f & P.MAP_FLAG_READONLY), s, u or None, mid)
                for g, m, r, f, s, u, mid, _ in _records(parts, P.MAPPING_REC)]

    def ports(self, domid: int | None = None) -> list[PortRecord]:
        parts, _, _ = self._conn.call_chunked(Op.CTL_PORTS, P.u32s(_any(domid)))
        return [PortRecord(d, p, PortState(s), rd, rp)
                for d, p, s, rd, rp in _records(parts, P.PORT_REC)]

    def grants(self, domid: int | None = None) -> list[GrantRecord]:
        parts, _, _ = self._conn.call_chunked(Op.CTL_GRANTS, P.u32s(_any(domid)))
        return [GrantRecord(d, r, g, bool(f & P.GRANT_FLAG_READONLY),
                            bool(f & P.GRANT_FLAG_BUSY), n)
                for d, r, g, f, n in _records(parts, P.GRANT_REC)]

    def busy_revokes(self, granter: int | None = None) -> list[RevokeRecord]:
        parts, _, _ = self._conn.call_chunked(Op.CTL_BUSY_REVOKES, P.u32s(_any(granter)))
        return [RevokeRecord(g, r, gr, at, rel or None)
                for g, r, gr, _, at, rel in _records(parts, P.REVOKE_REC)]

    def rename_domain(self, domid: int, name: str) -> None:
        """Set the domain's name (and its XenStore ``name`` nodes, as libxl's rename)."""
        self._conn.call(Op.CTL_RENAME_DOMAIN, P.u32s(domid) + name.encode() + b"\0")

    def map_counters(self, granter: int | None = None,
                     mapper: int | None = None) -> list[MapCounterRecord]:
        """Per (granter, mapper): pages mapped and unmapped since the start."""
        parts, _, _ = self._conn.call_chunked(Op.CTL_MAP_COUNTERS,
                                              P.u32s(_any(granter), _any(mapper)))
        return [MapCounterRecord(*r) for r in _records(parts, P.COUNTER_REC)]

    def inject_fault(self, domid: int, op: str, errno: int | str | None = None,
                     mode: str | tuple[str, int] = "once") -> int:
        """Make ``op`` (see ``faults.OPS``) of ``domid`` fail with ``errno`` (a number, a
        name, or None: the op's default): ``"once"``, ``"always"``, or ``("from", n)``:
        the n-th matching call (1-based) and every one after. Returns the fault's id."""
        if op not in FAULT_OPS:
            raise FaultError(f"unknown operation {op!r} (one of: {', '.join(FAULT_OPS)})")
        err = parse_errno(errno, op)
        name, n = (mode, 1) if isinstance(mode, str) else mode
        if name not in FAULT_MODES:
            raise FaultError(f"unknown mode {mode!r} (once, always or ('from', n))")
        msg = self._conn.call(Op.CTL_FAULT_INJECT,
                              P.u32s(domid, FAULT_MODES[name], n, err) + op.encode() + b"\0")
        return P.unpack_u32s(msg.payload, 1)[0]

    def clear_faults(self, domid: int | None = None, fault_id: int | None = None) -> int:
        """Remove the faults of ``domid`` (all when None), or just ``fault_id``."""
        msg = self._conn.call(Op.CTL_FAULT_CLEAR, P.u32s(_any(fault_id), _any(domid)))
        return P.unpack_u32s(msg.payload, 1)[0]

    def faults(self) -> list[FaultRecord]:
        parts, _, _ = self._conn.call_chunked(Op.CTL_FAULT_LIST)
        return [FaultRecord(i, d, name.rstrip(b"\0").decode(), e, _MODE_NAMES[m], n, c, f,
                            bool(fl & 1))
                for i, d, m, n, e, c, f, fl, name in _records(parts, P.FAULT_REC)]

    def xs_writes(self, domid: int | None = None, since: int = 0,
                  exclude_pid: int = 0) -> list[XsWriteCount]:
        """XenStore write requests per domain: the total, and those at or after ``since``
        (``time.monotonic_ns()``; 0: all) not made by process ``exclude_pid``."""
        parts, _, _ = self._conn.call_chunked(
            Op.CTL_XS_WRITES, P.u32s(_any(domid), since & 0xFFFFFFFF, since >> 32,
                                     exclude_pid))
        return [XsWriteCount(d, total, n) for d, _, total, n in _records(parts,
                                                                        P.XS_WRITES_REC)]

    def shutdown(self) -> None:
        self._conn.call(Op.CTL_SHUTDOWN)

    def close(self) -> None:
        self._conn.close()


# ----------------------------------------------------------------------- a domain


class SimDomain:
    """Everything one simulated domain uses of Xen (``api.Domain``)."""

    def __init__(self, dir: str, domid: int, timeout: float = DEFAULT_TIMEOUT,
                 store: bool = True) -> None:
        self.domid = domid
        self.dir = dir
        hv = hypervisor_path(dir, domid)
        self.grants = SimGrants(hv, timeout)
        self.evtchn = SimEventChannels(hv, timeout)
        self.store: Any = None
        if store:
            from harness.xen.xsclient import XsClient

            try:
                self.store = XsClient(xenstored_path(dir, None if domid == 0 else domid),
                                      domid=domid, timeout=timeout)
            except BaseException:
                self.grants.close()
                self.evtchn.close()
                raise

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **kw: object) -> SimDomain:
        """The domain a process was started as (``running_sim().env(domid)``)."""
        env = os.environ if environ is None else environ
        return cls(env["XEN_SIM_DIR"], int(env["XEN_SIM_DOMID"]), **kw)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.grants.close()
        self.evtchn.close()

    def __enter__(self) -> SimDomain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
