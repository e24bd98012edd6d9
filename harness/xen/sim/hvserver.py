"""The hypervisor socket server: one listening SOCK_SEQPACKET socket per domain, identity by
socket, a single-threaded selector loop turning requests into :class:`Hypervisor` calls.

Every request is answered before the next is read. Faults (``faults.py``) are checked by the
hypervisor; the control ops set and list them.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.xen.sim import hvproto as P
from harness.xen.sim import peercheck
from harness.xen.sim.faults import FaultError
from harness.xen.sim.hvproto import Op
from harness.xen.sim.hypervisor import HvError, Hypervisor

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

log = logging.getLogger(__name__)

#: reply frames: (message, fds to pass with it)
_Frames = list[tuple[bytes, list[int]]]

MAX_GUEST_CONNECTIONS = 256  # per unprivileged domain (a descriptor each in the daemon)
ACCEPT_REST = 0.1  # seconds a listener rests after a failed accept (out of descriptors)


@dataclass
class Conn:
    id: int
    domid: int
    sock: socket.socket
    # Replies the client hasn't read yet. A hypercall can't block Xen for other domains:
    # sends never block; while frames are queued the connection's requests aren't read (a
    # client gets each reply before its next request is served), so the queue holds the
    # replies of one request at most.
    out: list[tuple[bytes, list[int]]] = field(default_factory=list)


class HvServer:
    """Serves ``hv`` on per-domain sockets. ``on_create``/``on_destroy`` hook the rest of the
    simulation (xenstored, socket directories) into the control ops."""

    def __init__(self, hv: Hypervisor, *,
                 on_create: Callable[[int, str], None] | None = None,
                 on_destroy: Callable[[int], None] | None = None,
                 on_shutdown: Callable[[], None] | None = None,
                 on_rename: Callable[[int, str], None] | None = None,
                 xs_writes: Callable[[int | None, int, int], list[tuple[int, int, int]]]
                 | None = None) -> None:
        self.hv = hv
        self.on_rename = on_rename
        self.xs_writes = xs_writes
        self.sel = selectors.DefaultSelector()
        self._listeners: dict[int, tuple[socket.socket, str]] = {}
        self._conns: dict[int, Conn] = {}
        self._next_conn = 1
        self.on_create = on_create
        self.on_destroy = on_destroy
        self.on_shutdown = on_shutdown
        self._resting: list[tuple[float, socket.socket, int]] = []  # listeners after EMFILE
        self._warned_accept = False
        self.sim_dir: str | None = None  # set: refuse programs started as another domain

    # -------------------------------------------------------------- listeners

    def add_domain_socket(self, domid: int, path: str) -> None:
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(path)
        sock.listen(64)
        sock.setblocking(False)
        self._listeners[domid] = (sock, path)
        self.sel.register(sock, selectors.EVENT_READ, ("listen", domid))

    def remove_domain_socket(self, domid: int) -> None:
        entry = self._listeners.pop(domid, None)
        if entry is None:
            return
        sock, path = entry
        self._resting = [r for r in self._resting if r[1] is not sock]
        if sock.fileno() >= 0 and sock in [k.fileobj for k in self.sel.get_map().values()]:
            self.sel.unregister(sock)
        sock.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def domain_conns(self, domid: int) -> list[int]:
        return [c.id for c in self._conns.values() if c.domid == domid]

    def drop_domain_conns(self, domid: int) -> None:
        for cid in self.domain_conns(domid):
            self._drop(cid, release=False)

    def close(self) -> None:
        for cid in list(self._conns):
            self._drop(cid)
        for domid in list(self._listeners):
            self.remove_domain_socket(domid)
        self.sel.close()

    # ------------------------------------------------------------------- loop

    def poll(self, timeout: float) -> None:
        now = time.monotonic()
        for entry in list(self._resting):
            if entry[0] <= now:
                self._resting.remove(entry)
                _, lsock, domid = entry
                if self._listeners.get(domid, (None,))[0] is lsock:
                    self.sel.register(lsock, selectors.EVENT_READ, ("listen", domid))
        if self._resting:
            timeout = min(timeout, ACCEPT_REST)
        for key, mask in self.sel.select(timeout):
            kind, ident = key.data
            if kind == "listen":
                self._accept(key.fileobj, ident)  # type: ignore[arg-type]
            elif kind == "conn" and mask & selectors.EVENT_WRITE:
                conn = self._conns.get(ident)
                if conn is not None:
                    self._flush(conn)
            elif kind == "conn":
                self._serve(ident)
            elif kind == "extra":
                ident()

    def add_reader(self, fileobj: FileDescriptorLike, callback: Callable[[], object]) -> None:
        """Call ``callback`` (its result is ignored) whenever ``fileobj`` is readable."""
        self.sel.register(fileobj, selectors.EVENT_READ, ("extra", callback))

    def _accept(self, lsock: socket.socket, domid: int) -> None:
        try:
            sock, _ = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # out of descriptors: the client waits in the backlog; the listener rests a
            # moment (else the selector reports it again at once: a busy loop, a log storm)
            if not self._warned_accept:
                log.warning("hypervisor: accept for domain %d failed: %s", domid, exc)
                self._warned_accept = True
            self.sel.unregister(lsock)
            self._resting.append((time.monotonic() + ACCEPT_REST, lsock, domid))
            return
        self._warned_accept = False
        pid = _peer_pid(sock)
        other = peercheck.foreign(pid, self.sim_dir, domid)
        if other is not None:
            log.warning("hypervisor: process %d of domain %d refused on domain %d's socket",
                        pid, other, domid)
            sock.close()
            return
        if domid != 0 and len(self.domain_conns(domid)) >= MAX_GUEST_CONNECTIONS:
            # each open of libxenevtchn/libxengnttab is a connection; a guest needs a few
            log.warning("hypervisor: domain %d has %d connections: refusing another", domid,
                        MAX_GUEST_CONNECTIONS)
            sock.close()
            return
        sock.setblocking(False)
        cid = self._next_conn
        self._next_conn += 1
        self._conns[cid] = Conn(cid, domid, sock)
        self.hv.add_connection(cid, domid, pid)
        self.sel.register(sock, selectors.EVENT_READ, ("conn", cid))

    def _drop(self, cid: int, release: bool = True) -> None:
        conn = self._conns.pop(cid, None)
        if conn is None:
            return
        self.sel.unregister(conn.sock)
        conn.sock.close()
        for _, fds in conn.out:
            for fd in fds:
                os.close(fd)
        conn.out.clear()
        self.hv.begin_request()
        if release:
            self.hv.release_connection(cid, conn.domid)
        else:
            self.hv.conn_pids.pop(cid, None)

    def _flush(self, conn: Conn) -> None:
        """Send what the client will take now; keep the rest (and stop reading its requests)
        until it reads."""
        while conn.out:
            data, fds = conn.out[0]
            try:
                P.send(conn.sock, data, fds)  # non-blocking socket
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.info("dropping connection %d (domain %d): %s", conn.id, conn.domid, exc)
                self._drop(conn.id)
                return
            conn.out.pop(0)
            for fd in fds:
                os.close(fd)
        if conn.id in self._conns:
            self.sel.modify(conn.sock, selectors.EVENT_WRITE if conn.out
                            else selectors.EVENT_READ, ("conn", conn.id))

    def _serve(self, cid: int) -> None:
        conn = self._conns.get(cid)
        if conn is None:
            return
        try:
            msg = P.recv(conn.sock)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except (OSError, ValueError) as exc:
            log.info("bad message on connection %d: %s", cid, exc)
            self._drop(cid)
            return
        if msg is None:
            self._drop(cid)
            return
        for fd in msg.fds:  # no request carries fds
            os.close(fd)
        self.hv.begin_request()
        try:
            replies = self._dispatch(conn, msg)
        except HvError as exc:
            replies = [(P.pack(msg.op, msg.seq, status=-exc.errno), [])]
        except (ValueError, struct.error, KeyError):
            replies = [(P.pack(msg.op, msg.seq, status=-errno.EINVAL), [])]
        if cid not in self._conns:  # dropped while dispatching (destroyed its domain)
            for _, fds in replies:
                for fd in fds:
                    os.close(fd)
            return
        conn.out.extend(replies)
        self._flush(conn)

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, conn: Conn, msg: P.Message) -> list[tuple[bytes, list[int]]]:
        op, seq, pl, hv, d = msg.op, msg.seq, msg.payload, self.hv, conn.domid

        def reply(payload: bytes = b"", fds: list[int] | None = None,
                  status: int = 0) -> list[tuple[bytes, list[int]]]:
            return [(P.pack(op, seq, payload, status), fds or [])]

        def chunked(entries: list[bytes], size: int, fds: list[int] | None = None,
                    extra: int = 0) -> list[tuple[bytes, list[int]]]:
            return [(P.pack(op, seq, payload), f)
                    for payload, f in P.chunks(entries, fds, extra, size)]

        # dup: the reply's fds are closed after sending, the hypervisor keeps its own
        if op == Op.EVTCHN_ALLOC_UNBOUND:
            (remote,) = P.unpack_u32s(pl, 1)
            port, fd = hv.alloc_unbound(conn.id, d, remote)
            return reply(P.u32s(port), [os.dup(fd)])
        if op == Op.EVTCHN_BIND_INTERDOMAIN:
            remote, rport = P.unpack_u32s(pl, 2)
            res = hv.bind_interdomain(conn.id, d, remote, rport)
            return reply(P.u32s(res.port), [os.dup(res.fd)])
        if op == Op.EVTCHN_NOTIFY_CHECK:
            (port,) = P.unpack_u32s(pl, 1)
            hv.notify_check(d, port)
            return reply()
        if op == Op.EVTCHN_UNBIND:
            (port,) = P.unpack_u32s(pl, 1)
            hv.unbind(conn.id, d, port)
            return reply()
        if op == Op.EVTCHN_STATUS:
            (port,) = P.unpack_u32s(pl, 1)
            p = hv.port_status(d, port)
            if p is None:
                return reply(P.u32s(P.PortState.CLOSED, 0, 0))
            return reply(P.u32s(p.state, p.remote_domid, p.remote_port))
        if op == Op.EVTCHN_RESET:
            hv.reset(conn.id, d)
            return reply()
        if op == Op.GNT_ALLOC:
            (n,) = P.unpack_u32s(pl, 1)
            pages = hv.alloc_pages(conn.id, d, n)
            return chunked([P.u32s(pid) for pid, _ in pages], 4, [fd for _, fd in pages])
        if op == Op.GNT_GRANT:
            page_id, grantee, flags = P.unpack_u32s(pl, 3)
            ref = hv.grant(conn.id, d, page_id, grantee, bool(flags & P.GRANT_READONLY))
            return reply(P.u32s(ref))
        if op == Op.GNT_REVOKE:
            (ref,) = P.unpack_u32s(pl, 1)
            return reply(status=0 if hv.revoke(conn.id, d, ref) else -errno.EBUSY)
        if op == Op.GNT_FREE:
            (n,) = P.unpack_u32s(pl, 1)
            hv.free_pages(conn.id, d, list(P.unpack_u32s(pl, n, 4)))
            return reply()
        if op == Op.GNT_MAP:
            granter, flags, n = P.unpack_u32s(pl, 3)
            refs = list(P.unpack_u32s(pl, n, 12))
            mid, fds = hv.map(conn.id, d, granter, refs, bool(flags & P.GRANT_READONLY))
            return chunked([P.u32s(r) for r in refs], 4, fds, extra=mid)
        if op == Op.GNT_UNMAP:
            (mid,) = P.unpack_u32s(pl, 1)
            hv.unmap(conn.id, mid)
            return reply()
        if op in (Op.GNT_MAP_NOTIFY, Op.GNT_PAGE_NOTIFY):
            ident, flags, offset, port = P.unpack_u32s(pl, 4)
            off = offset if flags & P.NOTIFY_CLEAR_BYTE else None
            prt = port if flags & P.NOTIFY_SEND_EVENT else None
            if op == Op.GNT_MAP_NOTIFY:
                hv.set_map_notify(conn.id, ident, off, prt)
            else:
                hv.set_page_notify(conn.id, d, ident, off, prt)
            return reply()
        if op == Op.WHOAMI:
            return reply(P.u32s(d))
        if op == Op.FAULT_PAGE:
            return reply(fds=[hv.fault_page(d)])
        if Op.CTL_CREATE_DOMAIN <= op <= Op.CTL_RENAME_DOMAIN:
            if d != 0:
                raise HvError(errno.EPERM, "control ops are for domain 0")
            return self._control(op, pl, reply, chunked)
        raise HvError(errno.ENOSYS, f"unknown op {op:#x}")

    def _control(self, op: int, pl: bytes, reply: Callable[..., _Frames],
                 chunked: Callable[..., _Frames]) -> _Frames:
        hv = self.hv

        def opt(v: int) -> int | None:
            return None if v == P.ANY else v

        if op == Op.CTL_CREATE_DOMAIN:
            (domid,) = P.unpack_u32s(pl, 1)
            name = pl[4:].split(b"\0", 1)[0].decode("utf-8", "replace")[:P.NAME_LEN - 1]
            hv.create_domain(domid, name)
            if self.on_create is not None:
                try:
                    self.on_create(domid, name)
                except OSError as exc:
                    hv.destroy_domain(domid, [])
                    raise HvError(exc.errno or errno.EIO, str(exc)) from exc
            return reply()
        if op == Op.CTL_DESTROY_DOMAIN:
            (domid,) = P.unpack_u32s(pl, 1)
            conns = self.domain_conns(domid)
            hv.destroy_domain(domid, conns)
            self.drop_domain_conns(domid)
            if self.on_destroy is not None:
                self.on_destroy(domid)
            return reply()
        if op == Op.CTL_LIST_DOMAINS:
            recs = [P.DOMAIN_REC.pack(dm.domid, P.DOMAIN_FLAG_PRIVILEGED if dm.domid == 0
                                      else 0, dm.name.encode()[:P.NAME_LEN - 1])
                    for dm in hv.list_domains()]
            return chunked(recs, P.DOMAIN_REC.size)
        if op == Op.CTL_MAPPINGS:
            granter, mapper, flags = P.unpack_u32s(pl, 3)
            recs = [P.MAPPING_REC.pack(r.granter, r.mapper, r.ref,
                                       (P.MAP_FLAG_READONLY if r.readonly else 0)
                                       | (0 if r.until else P.MAP_FLAG_MAPPED),
                                       r.since, r.until, r.map_id, 0)
                    for r in hv.mappings(opt(granter), opt(mapper), bool(flags & 1))]
            return chunked(recs, P.MAPPING_REC.size)
        if op == Op.CTL_PORTS:
            (domid,) = P.unpack_u32s(pl, 1)
            recs = [P.PORT_REC.pack(p.domid, p.port, p.state, p.remote_domid, p.remote_port)
                    for p in hv.ports(opt(domid))]
            return chunked(recs, P.PORT_REC.size)
        if op == Op.CTL_GRANTS:
            (domid,) = P.unpack_u32s(pl, 1)
            recs = [P.GRANT_REC.pack(g.domid, g.ref, g.grantee,
                                     (P.GRANT_FLAG_READONLY if g.readonly else 0)
                                     | (P.GRANT_FLAG_BUSY if g.revoked else 0), g.nmaps)
                    for g in hv.grants(opt(domid))]
            return chunked(recs, P.GRANT_REC.size)
        if op == Op.CTL_BUSY_REVOKES:
            (granter,) = P.unpack_u32s(pl, 1)
            recs = [P.REVOKE_REC.pack(r.granter, r.ref, r.grantee, 0, r.at, r.released)
                    for r in hv.busy_revokes(opt(granter))]
            return chunked(recs, P.REVOKE_REC.size)
        if op == Op.CTL_SHUTDOWN:
            if self.on_shutdown is not None:
                self.on_shutdown()
            return reply()
        if op == Op.CTL_MAP_COUNTERS:
            granter, mapper = P.unpack_u32s(pl, 2)
            recs = [P.COUNTER_REC.pack(c.granter, c.mapper, c.maps, c.unmaps)
                    for c in hv.map_counters(opt(granter), opt(mapper))]
            return chunked(recs, P.COUNTER_REC.size)
        if op == Op.CTL_FAULT_INJECT:
            domid, mode, n, err = P.unpack_u32s(pl, 4)
            name = pl[16:].split(b"\0", 1)[0].decode("ascii", "replace")
            try:
                return reply(P.u32s(hv.faults.inject(domid, name, err, mode, n)))
            except FaultError as exc:
                raise HvError(errno.EINVAL, str(exc)) from exc
        if op == Op.CTL_FAULT_CLEAR:
            fid, domid = P.unpack_u32s(pl, 2)
            return reply(P.u32s(hv.faults.clear(opt(fid), opt(domid))))
        if op == Op.CTL_FAULT_LIST:
            recs = [P.FAULT_REC.pack(f.id, f.domid, f.mode, f.n, f.errno, f.calls, f.fired,
                                     1 if f.spent else 0, f.op.encode()[:P.NAME_LEN - 1])
                    for f in hv.faults.list()]
            return chunked(recs, P.FAULT_REC.size)
        if op == Op.CTL_XS_WRITES:
            domid, lo, hi = P.unpack_u32s(pl, 3)
            exclude = P.unpack_u32s(pl, 1, 12)[0] if len(pl) >= 16 else 0
            rows = self.xs_writes(opt(domid), lo | hi << 32, exclude) if self.xs_writes \
                else []
            return chunked([P.XS_WRITES_REC.pack(d, 0, total, since)
                            for d, total, since in rows], P.XS_WRITES_REC.size)
        if op == Op.CTL_RENAME_DOMAIN:
            (domid,) = P.unpack_u32s(pl, 1)
            name = pl[4:].split(b"\0", 1)[0].decode("utf-8", "replace")[:P.NAME_LEN - 1]
            hv.rename_domain(domid, name)
            if self.on_rename is not None:
                self.on_rename(domid, name)
            return reply()
        raise HvError(errno.ENOSYS, f"unknown control op {op:#x}")


def _peer_pid(sock: socket.socket) -> int:
    """The connecting process (SO_PEERCRED; 0: unknown)."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    return int(struct.unpack("3i", creds)[0])
