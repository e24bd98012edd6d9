"""State of the simulated hypervisor: domains, event-channel port tables, grant tables, and
the accounting of every mapping. No sockets here except the channel socketpairs it creates;
the server (``hvserver``) turns requests into calls and results into messages.

Ownership follows Linux's devices: ports, pages and mappings belong to the *connection*
(one open of /dev/xen/evtchn, gntalloc or gntdev) that made them, so a process that dies
releases them, as closing the device file does.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import time
from collections import deque
from dataclasses import dataclass, field

from harness.xen.sim import shm
from harness.xen.sim.faults import FaultTable
from harness.xen.sim.hvproto import PortState

FIRST_GREF = 8  # Xen reserves refs 0-7 (GNTTAB_NR_RESERVED_ENTRIES)
MAX_PORTS = 4096  # domain 0
# Xen's defaults, so a guest meets the limits it would meet on Xen (and one guest can't
# exhaust the daemon's descriptors for every domain): libxl's max_event_channels 1023 for a
# guest; gnttab_max_frames 64 v1 frames = 64 * 4096 / 8 grant entries per domain.
MAX_GUEST_PORTS = 1024
MAX_GRANTS = 64 * 4096 // 8
# Pages one domain may hold (Linux's gntalloc refuses past its "limit" module parameter;
# each page is a descriptor in the daemon), and descriptors kept free for every domain's
# sockets whatever the guests hold.
MAX_PAGES_PER_DOMAIN = 8192
FD_RESERVE = 1024
MAX_HISTORY = 4096  # unmapped records kept (current mappings are always kept in full)
MAX_REVOKES = 4096
FAULT_PAGE_NOTIFY = 0x1  # fault page bit: evtchn.notify is armed for the domain


class HvError(Exception):
    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(err, message or os.strerror(err))
        self.errno = err


@dataclass
class Channel:
    """The data plane of one port: a stream socketpair made when the port is allocated. The
    port's holder gets one end; whoever binds to the port later gets the other. The
    hypervisor keeps both ends for as long as the port exists, so a peer that goes away
    (unbind, crash, domain destroyed) never makes the survivor's end readable (no EOF):
    on Linux a peer's close does not wake /dev/xen/evtchn either."""

    a: socket.socket
    b: socket.socket

    def other(self, end: socket.socket) -> socket.socket:
        return self.b if end is self.a else self.a

    def shut(self) -> None:
        for s in (self.a, self.b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _drain(sock: socket.socket) -> None:
    """Discard what was written to an end nobody held (notifications of an unbound port)."""
    while True:
        try:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return
        except OSError:
            return


def _kick(sock: socket.socket) -> None:
    """One notification out of ``sock`` (full buffer: one is pending already)."""
    try:
        sock.send(b"\1", socket.MSG_DONTWAIT)
    except OSError:
        pass


@dataclass
class Port:
    domid: int
    port: int
    conn: int
    state: PortState
    remote_domid: int
    remote_port: int = 0
    channel: Channel | None = None
    end: socket.socket | None = None  # this port's end of ``channel``


@dataclass
class Page:
    id: int
    domid: int
    conn: int
    fd: int
    ino: int = 0  # the memfd's inode: how its holders are found in /proc
    pid: int = 0  # the allocating process: its own memory, whatever becomes of the domain
    freed: bool = False
    grants: set[int] = field(default_factory=set)
    notify: UnmapNotify | None = None


@dataclass
class Grant:
    domid: int
    ref: int
    page: Page
    grantee: int
    readonly: bool
    revoked: bool = False
    nmaps: int = 0
    revoke_record: RevokeRecord | None = None


@dataclass
class MapRecord:
    map_id: int
    granter: int
    mapper: int
    ref: int
    readonly: bool
    since: int  # time.monotonic_ns(): CLOCK_MONOTONIC, the same clock in every process
    until: int = 0  # 0 while mapped


@dataclass
class RevokeRecord:
    granter: int
    ref: int
    grantee: int
    at: int
    released: int = 0


@dataclass
class UnmapNotify:
    """gntdev/gntalloc SET_UNMAP_NOTIFY: at unmap (or free), clear one byte and/or send an
    event on a port of the domain that asked."""

    offset: int | None  # byte offset in the mapping (None: no byte to clear)
    port: int | None  # port of the domain that asked (None: no event)


@dataclass
class Exposure:
    """A page some mapper was handed a descriptor of: ``granter``'s ``ref``, mapped by
    ``mapper``. A process that kept that descriptor (or a mapping made from it) after the
    unmap still reaches the page, which Xen would not allow."""

    page: Page
    granter: int
    ref: int
    mapper: int
    readonly: bool
    since: int


@dataclass
class MapSet:
    id: int
    mapper: int
    conn: int
    grants: list[Grant]
    records: list[MapRecord]
    readonly: bool = False
    notify: UnmapNotify | None = None


@dataclass
class Domain:
    domid: int
    name: str
    ports: dict[int, Port] = field(default_factory=dict)
    grants: dict[int, Grant] = field(default_factory=dict)
    next_ref: int = FIRST_GREF
    fault_fd: int = -1  # the domain's fault page (see FAULT_PAGE in PROTOCOL.md)


@dataclass
class BindResult:
    port: int
    fd: int  # the binder's end (hypervisor keeps its own copy)
    remote_domid: int
    remote_port: int


@dataclass
class MapCounter:
    """Pages mapped and unmapped by ``mapper`` of ``granter``'s grants, since the start."""

    granter: int
    mapper: int
    maps: int = 0
    unmaps: int = 0


class Hypervisor:
    def __init__(self, faults: FaultTable | None = None) -> None:
        self.domains: dict[int, Domain] = {}
        self.faults = faults if faults is not None else FaultTable()
        self.faults.add_listener(self._update_fault_page)
        self._add_domain(0, "Domain-0")
        self._pages: dict[int, Page] = {}
        self._next_page = 1
        self._maps: dict[int, MapSet] = {}
        self._next_map = 1
        # unmapped records, oldest first: a window (counters below keep the totals)
        self.history: deque[MapRecord] = deque(maxlen=MAX_HISTORY)
        self.history_dropped = 0  # unmapped records that fell out of the window
        self.counters: dict[tuple[int, int], MapCounter] = {}
        self.revokes: deque[RevokeRecord] = deque(maxlen=MAX_REVOKES)
        self.conn_pids: dict[int, int] = {}  # connection -> its process (SO_PEERCRED)
        self._conn_domains: dict[int, int] = {}  # connection -> its domain
        self._scan: dict[int, set[int]] | None = None
        self._domain_pages: dict[int, int] = {}  # live page descriptors per domain
        self._channels = 0  # live channel socketpairs (two descriptors each)
        # pages handed to a mapper, by inode, kept while any process may still reach
        # them: see leaks()
        self._exposed: dict[int, Exposure] = {}
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.fd_budget = (soft if soft != resource.RLIM_INFINITY else 1 << 20) - FD_RESERVE

    def _fault(self, domid: int, op: str) -> None:
        err = self.faults.check(domid, op)
        if err:
            raise HvError(err, f"injected fault: {op}")

    def _counter(self, granter: int, mapper: int) -> MapCounter:
        c = self.counters.get((granter, mapper))
        if c is None:
            c = self.counters[(granter, mapper)] = MapCounter(granter, mapper)
        return c

    # ---------------------------------------------------------------- domains

    def _domain(self, domid: int) -> Domain:
        dom = self.domains.get(domid)
        if dom is None:
            raise HvError(errno.ESRCH, f"no domain {domid}")
        return dom

    def _add_domain(self, domid: int, name: str) -> None:
        dom = Domain(domid, name)
        dom.fault_fd = shm.new_page_fd("xen-sim-faults")
        self.domains[domid] = dom
        self._update_fault_page(domid)

    def _update_fault_page(self, domid: int) -> None:
        """Publish which client-side checks the domain's processes must make: bit 0, ask
        the hypervisor before each notify (EVTCHN_NOTIFY_CHECK)."""
        dom = self.domains.get(domid)
        if dom is None or dom.fault_fd < 0:
            return
        bits = FAULT_PAGE_NOTIFY if "evtchn.notify" in self.faults.armed_ops(domid) else 0
        try:
            os.pwrite(dom.fault_fd, bits.to_bytes(4, "little"), 0)
        except OSError:
            pass

    def fault_page(self, domid: int) -> int:
        """A read-only fd of the domain's fault page (to send and close)."""
        return shm.reopen_readonly(self._domain(domid).fault_fd)

    def create_domain(self, domid: int, name: str) -> None:
        if not 0 < domid < 0x7FF0:
            raise HvError(errno.EINVAL, f"bad domid {domid}")
        if domid in self.domains:
            raise HvError(errno.EEXIST, f"domain {domid} exists")
        self._add_domain(domid, name or f"domain-{domid}")

    def rename_domain(self, domid: int, name: str) -> None:
        self._domain(domid).name = name or f"domain-{domid}"

    def destroy_domain(self, domid: int, conns: list[int]) -> None:
        """Tear domain ``domid`` down: everything its connections held is released."""
        if domid == 0:
            raise HvError(errno.EINVAL, "domain 0 can't be destroyed")
        self._domain(domid)
        for conn in conns:
            self.release_connection(conn, domid)
        dom = self.domains.pop(domid)
        for port in list(dom.ports.values()):
            self._close_port(dom, port)
        for grant in list(dom.grants.values()):
            self._revoke(dom, grant)
        os.close(dom.fault_fd)
        dom.fault_fd = -1

    def list_domains(self) -> list[Domain]:
        return [self.domains[d] for d in sorted(self.domains)]

    def add_connection(self, conn: int, domid: int, pid: int) -> None:
        self.conn_pids[conn] = pid
        self._conn_domains[conn] = domid

    def release_connection(self, conn: int, domid: int) -> None:
        """A connection closed (or its process died): drop its ports, mappings and pages."""
        self.conn_pids.pop(conn, None)
        self._conn_domains.pop(conn, None)
        self._scan = None
        dom = self.domains.get(domid)
        if dom is not None:
            for port in [p for p in dom.ports.values() if p.conn == conn]:
                self._close_port(dom, port)
        for mset in [m for m in self._maps.values() if m.conn == conn]:
            self._unmap(mset)
        for page in [p for p in self._pages.values() if p.conn == conn and not p.freed]:
            self._free_page(page)

    # ---------------------------------------------------------- event channels

    def _alloc_port(self, dom: Domain) -> int:
        if self._fds_in_use() + 2 > self.fd_budget:
            raise HvError(errno.ENOSPC, "no free port (simulator descriptors)")
        for n in range(1, MAX_PORTS if dom.domid == 0 else MAX_GUEST_PORTS):
            if n not in dom.ports:
                return n
        raise HvError(errno.ENOSPC, "no free port")

    def _fds_in_use(self) -> int:
        return sum(self._domain_pages.values()) + 2 * self._channels

    def alloc_unbound(self, conn: int, domid: int, remote: int) -> tuple[int, int]:
        """A new unbound port offered to ``remote``: (port, its channel end's fd; the
        hypervisor keeps its own copy)."""
        dom = self._domain(domid)
        self._fault(domid, "evtchn.alloc_unbound")
        if remote == 0x7FF0:  # DOMID_SELF
            remote = domid
        n = self._alloc_port(dom)
        try:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise HvError(exc.errno or errno.ENOSPC, "no free port") from exc
        self._channels += 1
        dom.ports[n] = Port(domid, n, conn, PortState.UNBOUND, remote, 0, Channel(a, b), a)
        return n, a.fileno()

    def bind_interdomain(self, conn: int, domid: int, remote: int, rport: int) -> BindResult:
        dom = self._domain(domid)
        self._fault(domid, "evtchn.bind_interdomain")
        if remote == 0x7FF0:
            remote = domid
        rdom = self._domain(remote)
        rp = rdom.ports.get(rport)
        # Xen: -EINVAL unless the remote port is unbound and offered to the caller.
        if rp is None or rp.state != PortState.UNBOUND or rp.remote_domid != domid:
            raise HvError(errno.EINVAL, f"port {rport} of domain {remote} is not offered "
                                        f"to domain {domid}")
        assert rp.channel is not None and rp.end is not None
        n = self._alloc_port(dom)
        mine = rp.channel.other(rp.end)
        _drain(mine)  # what the remote sent while unbound was dropped, as on Xen
        dom.ports[n] = Port(domid, n, conn, PortState.INTERDOMAIN, remote, rport, rp.channel,
                            mine)
        rp.state = PortState.INTERDOMAIN
        rp.remote_port = n
        # Xen's evtchn_bind_interdomain "may have lost notifications on the remote unbound
        # port": it always sets the new local port pending.
        _kick(rp.end)
        return BindResult(n, mine.fileno(), remote, rport)

    def notify_check(self, domid: int, port: int) -> None:
        """A notify that must consult the fault table (see the domain's fault page)."""
        self._domain(domid)
        self._fault(domid, "evtchn.notify")

    def port_status(self, domid: int, port: int) -> Port | None:
        return self._domain(domid).ports.get(port)

    def unbind(self, conn: int, domid: int, port: int) -> None:
        dom = self._domain(domid)
        p = dom.ports.get(port)
        if p is None or p.conn != conn:
            raise HvError(errno.ENOTCONN, f"port {port} not bound here")
        self._fault(domid, "evtchn.unbind")
        self._close_port(dom, p)

    def reset(self, conn: int, domid: int) -> None:
        dom = self._domain(domid)
        for p in [p for p in dom.ports.values() if p.conn == conn]:
            self._close_port(dom, p)

    def _close_port(self, dom: Domain, p: Port) -> None:
        dom.ports.pop(p.port, None)
        rp = None
        if p.state == PortState.INTERDOMAIN:
            # As Xen's evtchn_close: the peer's port goes back to unbound (offered to us
            # again). It keeps its channel: we keep our end, so the peer sees no EOF, and a
            # later binder gets our end (drained).
            rdom = self.domains.get(p.remote_domid)
            rp = rdom.ports.get(p.remote_port) if rdom else None
            if rp is not None and rp.channel is p.channel:
                rp.state = PortState.UNBOUND
                rp.remote_domid = dom.domid
                rp.remote_port = 0
            else:
                rp = None
        if rp is None and p.channel is not None:
            p.channel.shut()
            self._channels -= 1
        p.channel = None
        p.end = None
        p.state = PortState.CLOSED

    def send_event(self, domid: int, port: int) -> None:
        """Notify the remote end of ``port`` of ``domid`` (as notify_remote_via_evtchn)."""
        dom = self.domains.get(domid)
        p = dom.ports.get(port) if dom else None
        if p is not None and p.state == PortState.INTERDOMAIN and p.end is not None:
            _kick(p.end)

    def ports(self, domid: int | None = None) -> list[Port]:
        doms = [self.domains[domid]] if domid in self.domains else (
            [] if domid is not None else self.list_domains())
        return [p for d in doms for _, p in sorted(d.ports.items())]

    # ------------------------------------------------------------ grant tables

    def alloc_pages(self, conn: int, domid: int, n: int) -> list[tuple[int, int]]:
        """``n`` new pages: (page id, fd to send and close) each."""
        self._domain(domid)
        if not 0 < n <= 1024:
            raise HvError(errno.EINVAL, f"bad page count {n}")
        self._fault(domid, "grant.alloc")
        held = self._domain_pages.get(domid, 0)
        if held + n > MAX_PAGES_PER_DOMAIN:
            raise HvError(errno.ENOSPC, f"domain {domid} holds {held} pages (limit "
                                        f"{MAX_PAGES_PER_DOMAIN})")
        # the reply carries a dup of each page: 2n descriptors for a moment
        if self._fds_in_use() + 2 * n > self.fd_budget:
            raise HvError(errno.ENOMEM, "simulator out of page descriptors")
        out: list[tuple[int, int]] = []
        try:
            for _ in range(n):
                fd = shm.new_page_fd()
                page = Page(self._next_page, domid, conn, fd, os.fstat(fd).st_ino,
                            self.conn_pids.get(conn, 0))
                self._next_page += 1
                self._pages[page.id] = page
                self._domain_pages[domid] = self._domain_pages.get(domid, 0) + 1
                out.append((page.id, os.dup(fd)))
        except OSError as exc:
            for pid, fd in out:
                os.close(fd)
                self._free_page(self._pages[pid])
            raise HvError(exc.errno or errno.ENOMEM, "page allocation failed") from exc
        return out

    def grant(self, conn: int, domid: int, page_id: int, grantee: int, readonly: bool) -> int:
        dom = self._domain(domid)
        page = self._pages.get(page_id)
        if page is None or page.conn != conn or page.freed:
            raise HvError(errno.EINVAL, f"page {page_id} is not yours")
        self._fault(domid, "grant.share")
        if len(dom.grants) >= MAX_GRANTS:
            raise HvError(errno.ENOSPC, "grant table full")
        ref = dom.next_ref
        while ref in dom.grants or ref < FIRST_GREF:
            ref = ref + 1 if ref + 1 < 0xFFFFFFFF else FIRST_GREF
        dom.next_ref = ref + 1
        g = Grant(domid, ref, page, grantee, readonly)
        dom.grants[ref] = g
        page.grants.add(ref)
        return ref

    def revoke(self, conn: int, domid: int, ref: int) -> bool:
        dom = self._domain(domid)
        g = dom.grants.get(ref)
        if g is None or g.page.conn != conn or g.revoked:
            raise HvError(errno.EINVAL, f"no grant {ref}")
        self._fault(domid, "grant.revoke")
        return self._revoke(dom, g)

    def _revoke(self, dom: Domain, g: Grant) -> bool:
        if g.nmaps or self._still_reached(g.page):
            if not g.revoked:
                g.revoked = True
                g.revoke_record = RevokeRecord(dom.domid, g.ref, g.grantee, time.monotonic_ns())
                self.revokes.append(g.revoke_record)
            return False
        self._drop_grant(g)
        return True

    def _drop_grant(self, g: Grant) -> None:
        dom = self.domains.get(g.domid)
        if dom is not None and dom.grants.get(g.ref) is g:
            del dom.grants[g.ref]
        g.page.grants.discard(g.ref)
        if g.revoke_record is not None:
            g.revoke_record.released = time.monotonic_ns()
        self._maybe_close_page(g.page)

    def free_pages(self, conn: int, domid: int, page_ids: list[int]) -> None:
        for pid in page_ids:
            page = self._pages.get(pid)
            if page is None or page.conn != conn or page.freed:
                raise HvError(errno.EINVAL, f"page {pid} is not yours")
        for pid in page_ids:
            self._free_page(self._pages[pid])

    def _free_page(self, page: Page) -> None:
        # gntalloc semantics: freeing ends foreign access; mapped grants stay busy.
        page.freed = True
        if page.notify is not None:  # gntalloc's __del_gref
            self._do_notify(page.domid, page.notify, [page.fd], False)
            page.notify = None
        dom = self.domains.get(page.domid)
        for ref in list(page.grants):
            g = dom.grants.get(ref) if dom else None
            if dom is not None and g is not None and not g.revoked:
                self._revoke(dom, g)
        self._maybe_close_page(page)

    def _maybe_close_page(self, page: Page) -> None:
        if page.freed and not page.grants and page.fd >= 0:
            os.close(page.fd)
            page.fd = -1
            self._pages.pop(page.id, None)
            self._domain_pages[page.domid] -= 1
            if page.ino in self._exposed and not self._still_reached(page):
                del self._exposed[page.ino]  # nobody can reach it again

    def map(self, conn: int, mapper: int, granter: int, refs: list[int],
            readonly: bool) -> tuple[int, list[int]]:
        """Map ``refs`` of ``granter``: (map id, one fd per page to send and close)."""
        self._domain(mapper)
        gdom = self._domain(granter)
        if not 0 < len(refs) <= 1024:
            raise HvError(errno.EINVAL, f"bad ref count {len(refs)}")
        self._fault(mapper, "grant.map")
        grants: list[Grant] = []
        for ref in refs:
            g = gdom.grants.get(ref)
            if g is None or g.revoked or g.grantee != mapper:
                raise HvError(errno.EINVAL, f"grant {ref} of domain {granter} is not "
                                            f"granted to domain {mapper}")
            if g.readonly and not readonly:
                raise HvError(errno.EPERM, f"grant {ref} is read-only")
            grants.append(g)
        fds: list[int] = []
        try:
            for g in grants:
                fds.append(shm.reopen_readonly(g.page.fd) if readonly else os.dup(g.page.fd))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise HvError(exc.errno or errno.ENOMEM, "map failed") from exc
        now = time.monotonic_ns()
        mid = self._next_map
        self._next_map += 1
        records = [MapRecord(mid, granter, mapper, g.ref, readonly, now) for g in grants]
        for g in grants:
            g.nmaps += 1
            self._exposed[g.page.ino] = Exposure(g.page, granter, g.ref, mapper, readonly, now)
        self._counter(granter, mapper).maps += len(grants)
        self._maps[mid] = MapSet(mid, mapper, conn, grants, records, readonly)
        return mid, fds

    def unmap(self, conn: int, map_id: int) -> None:
        mset = self._maps.get(map_id)
        if mset is None or mset.conn != conn:
            raise HvError(errno.EINVAL, f"no mapping {map_id}")
        self._fault(mset.mapper, "grant.unmap")
        self._unmap(mset)

    def _check_notify_port(self, domid: int, port: int | None) -> None:
        # Linux's evtchn_get: the port must be bound (through the evtchn device) in the
        # caller's domain, else -EINVAL
        if port is not None and port not in self._domain(domid).ports:
            raise HvError(errno.EINVAL, f"port {port} is not bound in domain {domid}")

    def set_map_notify(self, conn: int, map_id: int, offset: int | None,
                       port: int | None) -> None:
        """gntdev's IOCTL_GNTDEV_SET_UNMAP_NOTIFY on a mapping of this connection."""
        mset = self._maps.get(map_id)
        if mset is None or mset.conn != conn:
            raise HvError(errno.ENOENT, f"no mapping {map_id}")
        if offset is not None and not 0 <= offset < len(mset.grants) * shm.PAGE_SIZE:
            raise HvError(errno.EINVAL, f"offset {offset} outside the mapping")
        if offset is not None and mset.readonly:
            raise HvError(errno.EINVAL, "clear-byte notify on a read-only mapping")
        self._check_notify_port(mset.mapper, port)
        mset.notify = UnmapNotify(offset, port)

    def set_page_notify(self, conn: int, domid: int, page_id: int, offset: int | None,
                        port: int | None) -> None:
        """gntalloc's IOCTL_GNTALLOC_SET_UNMAP_NOTIFY on a page of this connection."""
        page = self._pages.get(page_id)
        if page is None or page.conn != conn or page.freed:
            raise HvError(errno.ENOENT, f"page {page_id} is not yours")
        if offset is not None and not 0 <= offset < shm.PAGE_SIZE:
            raise HvError(errno.EINVAL, f"offset {offset} outside the page")
        self._check_notify_port(domid, port)
        page.notify = UnmapNotify(offset, port)

    def _do_notify(self, domid: int, notify: UnmapNotify, fds: list[int],
                   readonly: bool) -> None:
        if notify.offset is not None and not readonly:
            fd = fds[notify.offset // shm.PAGE_SIZE]
            if fd >= 0:
                try:
                    os.pwrite(fd, b"\0", notify.offset % shm.PAGE_SIZE)
                except OSError:
                    pass
        if notify.port is not None:
            self.send_event(domid, notify.port)

    def _unmap(self, mset: MapSet) -> None:
        del self._maps[mset.id]
        if mset.notify is not None:  # gntdev's unmap_grant_pages
            self._do_notify(mset.mapper, mset.notify, [g.page.fd for g in mset.grants],
                            mset.readonly)
        now = time.monotonic_ns()
        for rec in mset.records:
            rec.until = now
        dropped = len(self.history) + len(mset.records) - MAX_HISTORY
        if dropped > 0:
            self.history_dropped += dropped
        self.history.extend(mset.records)
        if mset.grants:
            self._counter(mset.grants[0].domid, mset.mapper).unmaps += len(mset.grants)
        for g in mset.grants:
            g.nmaps -= 1
            if g.nmaps == 0 and g.revoked:
                self._drop_grant(g)

    # ------------------------------------------------------- access after unmap

    def begin_request(self) -> None:
        """A new request: the /proc scan of the previous one is stale."""
        self._scan = None

    def _holders(self) -> dict[int, set[int]]:
        """Inode -> processes (not this one) holding a descriptor or a mapping of an
        exposed page, scanned once per request."""
        if self._scan is not None:
            return self._scan
        wanted = self._exposed.keys()
        scan: dict[int, set[int]] = {}
        me = os.getpid()
        for name in os.listdir("/proc") if wanted else ():
            if not name.isdigit() or int(name) == me:
                continue
            pid = int(name)
            try:
                fddir = f"/proc/{pid}/fd"
                for fd in os.listdir(fddir):
                    try:
                        if "memfd:xen-sim-page" not in os.readlink(f"{fddir}/{fd}"):
                            continue
                        ino = os.stat(f"{fddir}/{fd}").st_ino
                    except OSError:
                        continue
                    if ino in wanted:
                        scan.setdefault(ino, set()).add(pid)
                with open(f"/proc/{pid}/maps", "rb") as f:
                    for line in f:
                        if b"memfd:xen-sim-page" in line:
                            ino = int(line.split()[4])
                            if ino in wanted:
                                scan.setdefault(ino, set()).add(pid)
            except (OSError, ValueError, IndexError):
                continue  # gone, or not ours to read
        self._scan = scan
        return scan

    def _intruders(self, page: Page) -> set[int]:
        """Processes that reach ``page`` without being entitled to: entitled are those of
        the granting domain (a page is its owner's memory; a process with no connection of
        its own counts as its parent's, e.g. a child between fork and exec) and those that
        map it now."""
        held = self._holders().get(page.ino)
        if not held:
            return set()
        pid_domains: dict[int, set[int]] = {}
        for c, d in self._conn_domains.items():
            pid_domains.setdefault(self.conn_pids.get(c, -1), set()).add(d)
        mappers = {self.conn_pids.get(m.conn, -1) for m in self._maps.values()
                   if any(g.page is page for g in m.grants)}
        out = set()
        for pid in held - mappers - {page.pid}:
            doms = pid_domains.get(pid) or pid_domains.get(_ppid(pid), set())
            if page.domid not in doms:
                out.add(pid)
        return out

    def _still_reached(self, page: Page) -> bool:
        """Some process outside the granting domain still holds a descriptor or mapping
        of ``page`` that no live mapping accounts for: on Xen the grant would still be in
        use (gnttab_end_foreign_access fails), so it is reported and kept busy."""
        return page.ino in self._exposed and bool(self._intruders(page))

    def leaks(self) -> list[MapRecord]:
        """Pages reached after their unmap (a kept descriptor, a copied mapping), as mapping
        records with ``map_id`` 0; exposures nobody reaches any more are forgotten, and a
        revoke they held up completes."""
        out: list[MapRecord] = []
        if not self._exposed:
            return out
        for ino, ex in list(self._exposed.items()):
            if self._intruders(ex.page):
                out.append(MapRecord(0, ex.granter, ex.mapper, ex.ref, ex.readonly, ex.since))
                continue
            if any(g.page is ex.page for m in self._maps.values() for g in m.grants):
                continue  # mapped now: stays exposed
            del self._exposed[ino]
            dom = self.domains.get(ex.granter)
            g = dom.grants.get(ex.ref) if dom else None
            if g is not None and g.page is ex.page and g.revoked and g.nmaps == 0:
                self._drop_grant(g)
        return out

    # -------------------------------------------------------------- accounting

    def mappings(self, granter: int | None = None, mapper: int | None = None,
                 history: bool = False) -> list[MapRecord]:
        recs = [r for m in self._maps.values() for r in m.records] + self.leaks()
        if history:
            recs = list(self.history) + recs
        return [r for r in recs if (granter is None or r.granter == granter)
                and (mapper is None or r.mapper == mapper)]

    def grants(self, domid: int | None = None) -> list[Grant]:
        self.leaks()  # completes the revokes that leaked access held up
        doms = [self.domains[domid]] if domid in self.domains else (
            [] if domid is not None else self.list_domains())
        return [g for d in doms for _, g in sorted(d.grants.items())]

    def map_counters(self, granter: int | None = None,
                     mapper: int | None = None) -> list[MapCounter]:
        return [c for _, c in sorted(self.counters.items())
                if (granter is None or c.granter == granter)
                and (mapper is None or c.mapper == mapper)]

    def busy_revokes(self, granter: int | None = None) -> list[RevokeRecord]:
        return [r for r in self.revokes if granter is None or r.granter == granter]

    def close(self) -> None:
        for mset in list(self._maps.values()):
            self._unmap(mset)
        for d in self.domains.values():
            for p in list(d.ports.values()):
                self._close_port(d, p)
        for page in list(self._pages.values()):
            if page.fd >= 0:
                os.close(page.fd)
                page.fd = -1
        self._pages.clear()
        for d in self.domains.values():
            if d.fault_fd >= 0:
                os.close(d.fault_fd)
                d.fault_fd = -1
