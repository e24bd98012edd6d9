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
import socket
import time
from dataclasses import dataclass, field

from harness.xen.sim import shm
from harness.xen.sim.hvproto import PortState

FIRST_GREF = 8  # Xen reserves refs 0-7 (GNTTAB_NR_RESERVED_ENTRIES)
MAX_PORTS = 4096
MAX_GRANTS = 1 << 20
MAX_HISTORY = 100_000


class HvError(Exception):
    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(err, message or os.strerror(err))
        self.errno = err


@dataclass
class Channel:
    """A bound interdomain channel; the hypervisor keeps both socket ends so it can shut the
    channel down authoritatively (peers then see EOF) whoever holds copies."""

    a: socket.socket
    b: socket.socket

    def shut(self) -> None:
        for s in (self.a, self.b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@dataclass
class Port:
    domid: int
    port: int
    conn: int
    state: PortState
    remote_domid: int
    remote_port: int = 0
    channel: Channel | None = None


@dataclass
class Page:
    id: int
    domid: int
    conn: int
    fd: int
    freed: bool = False
    grants: set[int] = field(default_factory=set)


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
class MapSet:
    id: int
    mapper: int
    conn: int
    grants: list[Grant]
    records: list[MapRecord]


@dataclass
class Domain:
    domid: int
    name: str
    ports: dict[int, Port] = field(default_factory=dict)
    grants: dict[int, Grant] = field(default_factory=dict)
    next_ref: int = FIRST_GREF


@dataclass
class BindResult:
    port: int
    fd: int  # the binder's end (hypervisor keeps its own copy)
    owner_conn: int  # connection that owns the remote port: gets ASYNC_EVTCHN_BOUND
    owner_port: int
    owner_fd: int
    remote_domid: int
    remote_port: int


class Hypervisor:
    def __init__(self) -> None:
        self.domains: dict[int, Domain] = {0: Domain(0, "Domain-0")}
        self._pages: dict[int, Page] = {}
        self._next_page = 1
        self._maps: dict[int, MapSet] = {}
        self._next_map = 1
        self.history: list[MapRecord] = []  # unmapped records, oldest first
        self.revokes: list[RevokeRecord] = []

    # ---------------------------------------------------------------- domains

    def _domain(self, domid: int) -> Domain:
        dom = self.domains.get(domid)
        if dom is None:
            raise HvError(errno.ESRCH, f"no domain {domid}")
        return dom

    def create_domain(self, domid: int, name: str) -> None:
        if not 0 < domid < 0x7FF0:
            raise HvError(errno.EINVAL, f"bad domid {domid}")
        if domid in self.domains:
            raise HvError(errno.EEXIST, f"domain {domid} exists")
        self.domains[domid] = Domain(domid, name or f"domain-{domid}")

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

    def list_domains(self) -> list[Domain]:
        return [self.domains[d] for d in sorted(self.domains)]

    def release_connection(self, conn: int, domid: int) -> None:
        """A connection closed (or its process died): drop its ports, mappings and pages."""
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
        for n in range(1, MAX_PORTS):
            if n not in dom.ports:
                return n
        raise HvError(errno.ENOSPC, "no free port")

    def alloc_unbound(self, conn: int, domid: int, remote: int) -> int:
        dom = self._domain(domid)
        if remote == 0x7FF0:  # DOMID_SELF
            remote = domid
        n = self._alloc_port(dom)
        dom.ports[n] = Port(domid, n, conn, PortState.UNBOUND, remote)
        return n

    def bind_interdomain(self, conn: int, domid: int, remote: int, rport: int) -> BindResult:
        dom = self._domain(domid)
        if remote == 0x7FF0:
            remote = domid
        rdom = self._domain(remote)
        rp = rdom.ports.get(rport)
        # Xen: -EINVAL unless the remote port is unbound and offered to the caller.
        if rp is None or rp.state != PortState.UNBOUND or rp.remote_domid != domid:
            raise HvError(errno.EINVAL, f"port {rport} of domain {remote} is not offered "
                                        f"to domain {domid}")
        n = self._alloc_port(dom)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        chan = Channel(a, b)
        dom.ports[n] = Port(domid, n, conn, PortState.INTERDOMAIN, remote, rport, chan)
        rp.state = PortState.INTERDOMAIN
        rp.remote_port = n
        rp.channel = chan
        return BindResult(n, a.fileno(), rp.conn, rport, b.fileno(), remote, rport)

    def port_status(self, domid: int, port: int) -> Port | None:
        return self._domain(domid).ports.get(port)

    def unbind(self, conn: int, domid: int, port: int) -> None:
        dom = self._domain(domid)
        p = dom.ports.get(port)
        if p is None or p.conn != conn:
            raise HvError(errno.ENOTCONN, f"port {port} not bound here")
        self._close_port(dom, p)

    def reset(self, conn: int, domid: int) -> None:
        dom = self._domain(domid)
        for p in [p for p in dom.ports.values() if p.conn == conn]:
            self._close_port(dom, p)

    def _close_port(self, dom: Domain, p: Port) -> None:
        dom.ports.pop(p.port, None)
        if p.state == PortState.INTERDOMAIN:
            # As Xen's evtchn_close: the peer's port goes back to unbound (offered to us
            # again); its channel socket sees EOF.
            rdom = self.domains.get(p.remote_domid)
            rp = rdom.ports.get(p.remote_port) if rdom else None
            if rp is not None and rp.channel is p.channel:
                rp.state = PortState.UNBOUND
                rp.remote_domid = dom.domid
                rp.remote_port = 0
                rp.channel = None
            if p.channel is not None:
                p.channel.shut()
        p.state = PortState.CLOSED

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
        out: list[tuple[int, int]] = []
        try:
            for _ in range(n):
                fd = shm.new_page_fd()
                page = Page(self._next_page, domid, conn, fd)
                self._next_page += 1
                self._pages[page.id] = page
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
        return self._revoke(dom, g)

    def _revoke(self, dom: Domain, g: Grant) -> bool:
        if g.nmaps:
            if not g.revoked:
                g.revoked = True
                g.revoke_record = RevokeRecord(dom.domid, g.ref, g.grantee, time.monotonic_ns())
                self.revokes.append(g.revoke_record)
                del self.revokes[:-MAX_HISTORY]
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
        dom = self.domains.get(page.domid)
        for ref in list(page.grants):
            g = dom.grants.get(ref) if dom else None
            if g is not None and not g.revoked:
                self._revoke(dom, g)
        self._maybe_close_page(page)

    def _maybe_close_page(self, page: Page) -> None:
        if page.freed and not page.grants and page.fd >= 0:
            os.close(page.fd)
            page.fd = -1
            self._pages.pop(page.id, None)

    def map(self, conn: int, mapper: int, granter: int, refs: list[int],
            readonly: bool) -> tuple[int, list[int]]:
        """Map ``refs`` of ``granter``: (map id, one fd per page to send and close)."""
        self._domain(mapper)
        gdom = self._domain(granter)
        if not 0 < len(refs) <= 1024:
            raise HvError(errno.EINVAL, f"bad ref count {len(refs)}")
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
        self._maps[mid] = MapSet(mid, mapper, conn, grants, records)
        return mid, fds

    def unmap(self, conn: int, map_id: int) -> None:
        mset = self._maps.get(map_id)
        if mset is None or mset.conn != conn:
            raise HvError(errno.EINVAL, f"no mapping {map_id}")
        self._unmap(mset)

    def _unmap(self, mset: MapSet) -> None:
        del self._maps[mset.id]
        now = time.monotonic_ns()
        for rec in mset.records:
            rec.until = now
        self.history.extend(mset.records)
        del self.history[:-MAX_HISTORY]
        for g in mset.grants:
            g.nmaps -= 1
            if g.nmaps == 0 and g.revoked:
                self._drop_grant(g)

    # -------------------------------------------------------------- accounting

    def mappings(self, granter: int | None = None, mapper: int | None = None,
                 history: bool = False) -> list[MapRecord]:
        recs = [r for m in self._maps.values() for r in m.records]
        if history:
            recs = self.history + recs
        return [r for r in recs if (granter is None or r.granter == granter)
                and (mapper is None or r.mapper == mapper)]

    def grants(self, domid: int | None = None) -> list[Grant]:
        doms = [self.domains[domid]] if domid in self.domains else (
            [] if domid is not None else self.list_domains())
        return [g for d in doms for _, g in sorted(d.grants.items())]

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
