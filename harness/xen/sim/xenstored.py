"""The simulated xenstored: C xenstored 4.17 semantics (shared/spec/xenstore.md §1-2).

Two parts:

* :class:`XenstoreState` — the tree, permissions, watches, transactions, domains and quotas,
  behind one lock. Transport-free: a connection is a :class:`XsConnection` with a ``sink``
  callable that receives whole wire messages (replies and watch events) in order.
* :class:`XenstoreServer` (in :mod:`.xs_server`, re-exported here) — unix-socket listeners.
  **Identity is per socket**: ``add_listener(path, domid)`` makes every connection on that
  socket speak as ``domid``; dom0's socket is the privileged one.

Typical use (the sim daemon)::

    state = XenstoreState()
    server = XenstoreServer(state)
    server.add_listener(f"{rundir}/xenstored.sock", 0)      # dom0, privileged
    server.start()
    server.add_listener(f"{rundir}/xenstored.1.sock", 1)    # per created domain
    state.introduce(1)                                      # fires @introduceDomain
    ...
    state.release(1); server.remove_listener(...)           # on domain destroy
    server.stop()
"""

from __future__ import annotations

import errno as E
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.xen.api import Perm
from harness.xen.sim.faults import FaultTable
from harness.xen.sim.xs_tree import (
    PERM_OWNER,
    PERM_READ,
    PERM_WRITE,
    SPECIAL_PATHS,
    Node,
    atoi,
    basename,
    canonicalize,
    domain_path,
    format_perms,
    get_strings,
    is_child,
    onearg,
    parent_of,
    parse_perm,
    perm_for,
)
from protocol_models.xenstore import (
    XENSTORE_PAYLOAD_MAX,
    XS_ERRORS,
    XsError,
    XsType,
    error_payload,
    pack,
)

log = logging.getLogger(__name__)

#: C xenstored 4.17 defaults (``CONTROL quota``); they apply to unprivileged domains only.
DEFAULT_QUOTAS: dict[str, int] = {
    "nodes": 1000,
    "watches": 128,
    "transactions": 10,
    "outstanding": 20,
    "transaction-nodes": 1024,
    "memory": 2621440,
    "node-size": 2048,
    "path-max": 2048,
    "permissions": 5,
}
_QUOTA_HELP = {
    "nodes": "Max. number of accessible nodes per domain",
    "watches": "Max. number of watches per domain",
    "transactions": "Max. number of transactions per domain",
    "outstanding": "Max. number of outstanding requests per domain",
    "transaction-nodes": "Max. number of accessed nodes per transaction",
    "memory": "Max. memory usage per domain (not enforced by the simulator)",
    "node-size": "Max. size of a node",
    "path-max": "Max. length of a node path",
    "permissions": "Max. number of permissions per node",
}
_CONTROL_HELP = (
    "check", "log [on|off|+arg|-arg]", "live-update [...]", "logfile <file>", "memreport",
    "print <string>", "quota [set <name> <val>|<domid>]", "quota-soft [set <name> <val>]",
    "help",
)
PRIVILEGED_ONLY = frozenset({
    XsType.CONTROL, XsType.INTRODUCE, XsType.RELEASE, XsType.IS_DOMAIN_INTRODUCED,
    XsType.RESUME, XsType.SET_TARGET,
})
# Types whose tx_id is not looked up (C's XS_FLAG_NOTID). TRANSACTION_START is looked up
# (an unknown id: ENOENT), then refused inside a transaction (EBUSY), as C 4.17 does.
_NO_TX = frozenset({XsType.WATCH, XsType.UNWATCH})
_TX_OPS = frozenset({
    XsType.READ, XsType.WRITE, XsType.MKDIR, XsType.RM, XsType.DIRECTORY,
    XsType.DIRECTORY_PART, XsType.GET_PERMS, XsType.SET_PERMS, XsType.TRANSACTION_END,
})
_OK = b"OK\0"
#: request types a fault can be injected on, by fault op name (faults.OPS)
FAULT_OPS: dict[int, str] = {
    XsType.READ: "xs.read", XsType.WRITE: "xs.write", XsType.MKDIR: "xs.mkdir",
    XsType.RM: "xs.rm", XsType.DIRECTORY: "xs.directory",
    XsType.DIRECTORY_PART: "xs.directory", XsType.GET_PERMS: "xs.get_perms",
    XsType.SET_PERMS: "xs.set_perms", XsType.WATCH: "xs.watch", XsType.UNWATCH: "xs.unwatch",
    XsType.TRANSACTION_START: "xs.transaction_start",
    XsType.TRANSACTION_END: "xs.transaction_end",
}
#: requests counted as writes by the write accounting
WRITE_TYPES = frozenset({XsType.WRITE, XsType.MKDIR, XsType.RM, XsType.SET_PERMS})
WRITE_WINDOW = 65536  # write times kept per domain (totals are kept whatever the count)

Perms = tuple[Perm, ...]
#: a watch event: ``("change", path, [perms…])`` or ``("rm", path, {removed: perms})``
Event = tuple[str, str, list[Perms] | dict[str, Perms]]
#: a handler's reply payload, optionally with messages to send after it
Reply = bytes | tuple[bytes, list[bytes]]


class WriteLog:
    """XenStore write requests per domain: a total, and the times of the recent ones, to
    answer "how many writes by D since T" (a backend writing in a storm shows here)."""

    def __init__(self, window: int = WRITE_WINDOW) -> None:
        self.window = window
        self.totals: Counter[int] = Counter()
        self.times: dict[int, deque[tuple[int, int]]] = {}  # (time, writer pid)

    def record(self, domid: int, now: int, pid: int = 0) -> None:
        self.totals[domid] += 1
        q = self.times.get(domid)
        if q is None:
            q = self.times[domid] = deque(maxlen=self.window)
        q.append((now, pid))

    def count(self, domid: int, since: int = 0, exclude_pid: int = 0) -> int:
        """Writes by ``domid`` at or after ``since`` (time.monotonic_ns), leaving out those
        of process ``exclude_pid``; a ``since`` older than the window counts the window."""
        if since <= 0 and not exclude_pid:
            return self.totals[domid]
        q = self.times.get(domid, ())
        return sum(1 for t, pid in q if t >= since and (not exclude_pid or pid != exclude_pid))

    def rows(self, domid: int | None, since: int,
             exclude_pid: int = 0) -> list[tuple[int, int, int]]:
        doms = sorted(self.totals) if domid is None else [domid]
        return [(d, self.totals[d], self.count(d, since, exclude_pid)) for d in doms]


@dataclass
class Watch:
    path: str  # absolute node name, or a special ``@`` name
    token: bytes
    strip: int  # chars to strip from event paths: len("/local/domain/N/") if relative


@dataclass
class Transaction:
    id: int
    # Copy-on-access view of every node touched (None: absent/deleted in this transaction).
    view: dict[str, Node | None] = field(default_factory=dict)
    # Generation of each touched node in the global tree at first access (-1: absent).
    accessed: dict[str, int] = field(default_factory=dict)
    written: dict[str, None] = field(default_factory=dict)  # ordered set
    events: list[Event] = field(default_factory=list)  # fired at commit
    created: int = 0  # nodes created (for the unprivileged "nodes" quota)


class XsConnection:
    """One client connection's server-side state. ``sink(msg)`` must not block: the server
    queues bytes per connection."""

    def __init__(self, domid: int, sink: Callable[[bytes], None]) -> None:
        self.domid = domid
        self.privileged = domid == 0
        self.sink = sink
        self.watches: list[Watch] = []
        self.txs: dict[int, Transaction] = {}
        self.next_tx = 1
        self.open = True
        self.internal = False  # the simulator's own toolstack writes: no faults, not counted
        self.pid = 0  # the connecting process, when the transport knows it

    def __repr__(self) -> str:
        return f"XsConnection(dom{self.domid}, watches={len(self.watches)})"


class XenstoreState:
    """The whole store; thread-safe (one re-entrant lock around every operation).

    Public API for the daemon: :meth:`introduce`, :meth:`release`, :meth:`is_introduced`;
    for transports: :meth:`connect`, :meth:`disconnect`, :meth:`handle`."""

    def __init__(self, quotas: dict[str, int] | None = None,
                 faults: FaultTable | None = None) -> None:
        self.faults = faults
        self.writes = WriteLog()
        self._toolstack: XsConnection | None = None
        self.lock = threading.RLock()
        self.quotas = dict(DEFAULT_QUOTAS, **(quotas or {}))
        self._gen = 0
        self._nodes: dict[str, Node] = {}
        self._owned: Counter[int] = Counter()
        self._conns: list[XsConnection] = []
        self._introduced: set[int] = {0}
        self._targets: dict[int, int] = {}
        self._special_perms: dict[str, tuple[Perm, ...]] = {
            p: (Perm("n", 0),) for p in SPECIAL_PATHS
        }
        n0 = (Perm("n", 0),)
        for path in ("/", "/tool", "/tool/xenstored", "/local", "/local/domain"):
            if path != "/":
                parent = self._nodes[parent_of(path)].copy()
                parent.children.append(basename(path))
                self._gput(parent_of(path), parent)
            self._gput(path, Node(b"", n0))

    # ------------------------------------------------------------------ public (daemon)

    def introduce(self, domid: int) -> None:
        """Mark ``domid`` introduced; fires ``@introduceDomain`` the first time."""
        with self.lock:
            if domid not in self._introduced:
                self._introduced.add(domid)
                self._fire_special("@introduceDomain")

    def release(self, domid: int) -> bool:
        """Domain ``domid`` is gone: fire ``@releaseDomain`` and drop the watches and
        transactions of its connections (their sockets stay until ``remove_listener``).
        Fires even for a never-introduced domain, so backends learn of every destroy.
        Returns whether it was introduced."""
        if domid == 0:
            raise ValueError("dom0 cannot be released")
        with self.lock:
            was = domid in self._introduced
            self._introduced.discard(domid)
            self._targets.pop(domid, None)
            for conn in self._conns:
                if conn.domid == domid:
                    conn.watches.clear()
                    conn.txs.clear()
            self._remove_owned(domid)
            self._fire_special("@releaseDomain")
            return was

    def _remove_owned(self, domid: int) -> None:
        """C 4.17's domain_tree_remove (xenstored_domain.c, run by destroy_domain before
        @releaseDomain fires): walk the tree from / (pre-order, children in order); each
        node the domain owns is removed with its subtree (rm_node: watches fire as for an
        XS_RM), and its children are skipped."""
        if not self._owned[domid]:
            return
        stack = ["/"]
        while stack and self._owned[domid] > 0:
            path = stack.pop()
            node = self._nodes.get(path)
            if node is None:
                continue
            if node.perms[0].domid == domid and path != "/":
                removed = {p: self._nodes[p].perms for p in self._subtree_global(path)}
                for p in removed:
                    self._gdel(p)
                parent = self._nodes[parent_of(path)].copy()
                parent.children.remove(basename(path))
                self._gput(parent_of(path), parent)
                self._fire(("rm", path, removed))
                continue
            base = path if path != "/" else ""
            stack.extend(f"{base}/{c}" for c in reversed(node.children))

    def _subtree_global(self, path: str) -> list[str]:
        out, stack = [], [path]
        while stack:
            p = stack.pop()
            node = self._nodes.get(p)
            if node is not None:
                out.append(p)
                stack.extend((p if p != "/" else "") + "/" + c for c in node.children)
        return out

    def toolstack(self, ops: list[tuple[str, ...]]) -> None:
        """Apply ``ops`` as the toolstack (dom0, privileged; watches fire, nothing is
        counted or faulted): ``("write", path, value)``, ``("mkdir", path)``,
        ``("rm", path)``, ``("perms", path, "n0", "r1", ...)``. Failures are logged."""
        with self.lock:
            if self._toolstack is None:
                self._toolstack = XsConnection(0, lambda msg: None)
                self._toolstack.internal = True
            conn = self._toolstack
            for op in ops:
                kind, path, *rest = op
                if kind == "write":
                    type_, payload = XsType.WRITE, path.encode() + b"\0" + rest[0].encode()
                elif kind == "perms":
                    type_ = XsType.SET_PERMS
                    payload = b"".join(x.encode() + b"\0" for x in (path, *rest))
                else:
                    type_ = XsType.MKDIR if kind == "mkdir" else XsType.RM
                    payload = path.encode() + b"\0"
                try:
                    self._dispatch(conn, type_, 0, payload)
                except XsError as e:
                    if not (kind == "rm" and e.name == "ENOENT"):
                        log.warning("xenstored: toolstack %s %s: %s", kind, path, e.name)

    def write_counts(self, domid: int | None = None, since: int = 0,
                     exclude_pid: int = 0) -> list[tuple[int, int, int]]:
        """(domid, total writes, writes since ``since`` not by ``exclude_pid``) per domain
        that ever wrote."""
        with self.lock:
            return self.writes.rows(domid, since, exclude_pid)

    def is_introduced(self, domid: int) -> bool:
        with self.lock:
            return domid in self._introduced

    def node_count(self) -> int:
        with self.lock:
            return len(self._nodes)

    # ------------------------------------------------------------------ transports

    def connect(self, domid: int, sink: Callable[[bytes], None]) -> XsConnection:
        conn = XsConnection(domid, sink)
        with self.lock:
            self._conns.append(conn)
        return conn

    def disconnect(self, conn: XsConnection) -> None:
        """Drop the connection with its watches and transactions (idempotent)."""
        with self.lock:
            conn.open = False
            conn.watches.clear()
            conn.txs.clear()
            if conn in self._conns:
                self._conns.remove(conn)

    def handle(self, conn: XsConnection, type_: int, req_id: int, tx_id: int,
               payload: bytes) -> None:
        """Process one request; the reply (and any watch events, in C's order) go to the
        sinks. Never raises: unexpected failures become an EIO reply."""
        with self.lock:
            if not conn.open:
                return
            if not conn.internal:
                if type_ in WRITE_TYPES:
                    self.writes.record(conn.domid, time.monotonic_ns(), conn.pid)
                fault_op = FAULT_OPS.get(type_)
                err = self.faults.check(conn.domid, fault_op) if (
                    self.faults is not None and fault_op) else 0
                if err:
                    name = E.errorcode.get(err, "EIO")
                    name = name if name in XS_ERRORS else "EIO"
                    conn.sink(pack(XsType.ERROR, error_payload(name), req_id, tx_id))
                    return
            try:
                reply, after = self._dispatch(conn, type_, tx_id, payload)
            except XsError as e:
                conn.sink(pack(XsType.ERROR, error_payload(e.name), req_id, tx_id))
                return
            except Exception:  # a bug must cost one reply, not the server
                log.exception("xenstored: internal error on type %s", type_)
                conn.sink(pack(XsType.ERROR, error_payload("EIO"), req_id, tx_id))
                return
            if len(reply) > XENSTORE_PAYLOAD_MAX:
                conn.sink(pack(XsType.ERROR, error_payload("E2BIG"), req_id, tx_id))
            else:
                conn.sink(pack(type_, reply, req_id, tx_id))
            for msg in after:  # WATCH's initial event comes after its OK
                conn.sink(msg)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, conn: XsConnection, type_: int, tx_id: int,
                  payload: bytes) -> tuple[bytes, list[bytes]]:
        handler = _HANDLERS.get(type_)
        if handler is None:
            raise XsError("ENOSYS")
        tx = None
        if type_ not in _NO_TX and tx_id:
            tx = conn.txs.get(tx_id)
            if tx is None:
                raise XsError("ENOENT", f"no transaction {tx_id}")
        if type_ in PRIVILEGED_ONLY and not conn.privileged:
            raise XsError("EACCES")
        if type_ == XsType.TRANSACTION_START and tx_id:
            raise XsError("EBUSY")
        if type_ not in _TX_OPS:
            tx = None
        result = handler(self, conn, tx, payload)
        if isinstance(result, tuple):
            return result
        return result, []

    # ------------------------------------------------------------------ storage layer

    def _next_gen(self) -> int:
        self._gen += 1
        return self._gen

    def _gput(self, path: str, node: Node) -> None:
        old = self._nodes.get(path)
        if old is not None:
            self._owned[old.perms[0].domid] -= 1
        node.gen = self._next_gen()
        self._nodes[path] = node
        self._owned[node.perms[0].domid] += 1

    def _gdel(self, path: str) -> None:
        old = self._nodes.pop(path, None)
        if old is not None:
            self._owned[old.perms[0].domid] -= 1

    def _get(self, conn: XsConnection, tx: Transaction | None, path: str) -> Node | None:
        if tx is None:
            return self._nodes.get(path)
        if path in tx.view:
            return tx.view[path]
        if not conn.privileged and len(tx.accessed) >= self.quotas["transaction-nodes"]:
            raise XsError("ENOSPC", "transaction-nodes quota")
        node = self._nodes.get(path)
        tx.accessed[path] = node.gen if node is not None else -1
        tx.view[path] = node
        return node

    def _put(self, tx: Transaction | None, path: str, node: Node) -> None:
        if tx is None:
            self._gput(path, node)
        else:
            node.gen = self._next_gen()
            tx.view[path] = node
            tx.written[path] = None

    def _del(self, tx: Transaction | None, path: str) -> None:
        if tx is None:
            self._gdel(path)
        else:
            tx.view[path] = None
            tx.written[path] = None

    # ------------------------------------------------------------------ permissions

    def _perm(self, conn: XsConnection, perms: tuple[Perm, ...]) -> int:
        return perm_for(conn.domid, conn.privileged, self._targets.get(conn.domid), perms)

    def _node_for(self, conn: XsConnection, tx: Transaction | None, path: str,
                  need: int) -> Node:
        """C's ``get_node``: the node if ``conn`` has ``need`` on it. Missing: ENOENT when
        the nearest existing ancestor grants ``need``, else EACCES (no existence leak)."""
        node = self._get(conn, tx, path)
        if node is not None:
            if self._perm(conn, node.perms) & need != need:
                raise XsError("EACCES")
            return node
        raise XsError(self._missing_errno(conn, tx, path, need))

    def _missing_errno(self, conn: XsConnection, tx: Transaction | None, path: str,
                       need: int) -> str:
        p = path
        while p != "/":
            p = parent_of(p)
            parent = self._get(conn, tx, p)
            if parent is not None:
                ok = self._perm(conn, parent.perms) & need & (PERM_READ | PERM_WRITE)
                return "ENOENT" if ok else "EACCES"
        return "ENOENT"

    def _path(self, conn: XsConnection, raw: bytes | None, special: bool = False) -> str:
        if raw is None:
            raise XsError("EINVAL", "malformed arguments")
        return canonicalize(raw, conn.domid, self.quotas["path-max"], special)

    # ------------------------------------------------------------------ node operations

    def _create(self, conn: XsConnection, tx: Transaction | None, path: str,
                value: bytes) -> Node:
        """Create ``path`` and any missing parents (empty values); perms are inherited from
        the parent and an unprivileged creator becomes the owner."""
        ppath = parent_of(path)
        parent = self._get(conn, tx, ppath)
        if parent is None:
            parent = self._create(conn, tx, ppath, b"")
        perms = parent.perms
        if not conn.privileged:
            owned = self._owned[conn.domid] + (tx.created if tx else 0)
            if owned >= self.quotas["nodes"]:
                raise XsError("ENOSPC", "nodes quota")
            perms = (Perm(perms[0].access, conn.domid), *perms[1:])
        node = Node(value, perms)
        self._check_size(conn, node)
        parent = parent.copy()
        parent.children.append(basename(path))
        # C's create_node writes the parent too (write_node_raw): its grown child list
        # counts against the node-size quota as well
        self._check_size(conn, parent)
        self._put(tx, ppath, parent)
        self._put(tx, path, node)
        if tx is not None:
            tx.created += 1
        return node

    def _check_size(self, conn: XsConnection, node: Node) -> None:
        if not conn.privileged and node.record_size() >= self.quotas["node-size"]:
            raise XsError("ENOSPC", "node-size quota")

    def _subtree(self, conn: XsConnection, tx: Transaction | None, path: str) -> list[str]:
        out, stack = [], [path]
        while stack:
            p = stack.pop()
            node = self._get(conn, tx, p)
            if node is None:
                continue
            out.append(p)
            stack.extend((p if p != "/" else "") + "/" + c for c in node.children)
        return out

    # ------------------------------------------------------------------ watches

    def _emit(self, conn: XsConnection | None, tx: Transaction | None, event: Event) -> None:
        if tx is not None:
            tx.events.append(event)
        else:
            self._fire(event)

    def _fire(self, event: Event) -> None:
        """Queue the event on every matching watch, in connection then registration order.

        ``("change", path, [perms…])``: watches at or above ``path`` fire with ``path``.
        ``("rm", path, {removed: perms})``: also watches on removed nodes below ``path``
        fire, each with its own path (C: only those whose node existed)."""
        _, path, info = event  # "change" carries a list, "rm" a dict
        for conn in self._conns:
            for w in conn.watches:
                if w.path.startswith("@"):
                    continue
                if is_child(path, w.path):
                    epath = path
                    perms_list = info if isinstance(info, list) else [info[path]]
                elif isinstance(info, dict) and w.path in info:
                    epath, perms_list = w.path, [info[w.path]]
                else:
                    continue
                if any(self._perm(conn, p) & PERM_READ for p in perms_list):
                    self._send_event(conn, w, epath)

    def _fire_special(self, name: str) -> None:
        perms = self._special_perms[name]
        for conn in self._conns:
            for w in conn.watches:
                if w.path == name and self._perm(conn, perms) & PERM_READ:
                    self._send_event(conn, w, name)

    @staticmethod
    def _event_msg(w: Watch, epath: str) -> bytes:
        shown = epath[w.strip:] if w.strip else epath
        return pack(XsType.WATCH_EVENT, shown.encode() + b"\0" + w.token + b"\0")

    def _send_event(self, conn: XsConnection, w: Watch, epath: str) -> None:
        conn.sink(self._event_msg(w, epath))

    # ------------------------------------------------------------------ handlers

    def _op_read(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        raw = onearg(payload)
        if raw is None:  # C's canonicalize(NULL) leaves errno at ENOENT
            raise XsError("ENOENT")
        return self._node_for(conn, tx, self._path(conn, raw), PERM_READ).value

    def _op_write(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        strings = get_strings(payload)
        if not strings:
            raise XsError("EINVAL")
        path = self._path(conn, strings[0])
        value = payload[len(strings[0]) + 1:]
        node = self._get(conn, tx, path)
        if node is None:
            errno = self._missing_errno(conn, tx, path, PERM_WRITE)
            if errno != "ENOENT":
                raise XsError(errno)
            node = self._create(conn, tx, path, value)
        else:
            if not self._perm(conn, node.perms) & PERM_WRITE:
                raise XsError("EACCES")
            node = node.copy()
            node.value = value
            self._check_size(conn, node)
            self._put(tx, path, node)
        self._emit(conn, tx, ("change", path, [node.perms]))
        return _OK

    def _op_mkdir(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        path = self._path(conn, onearg(payload))
        node = self._get(conn, tx, path)
        if node is not None:
            if not self._perm(conn, node.perms) & PERM_WRITE:
                raise XsError("EACCES")
            return _OK  # existing: no event
        errno = self._missing_errno(conn, tx, path, PERM_WRITE)
        if errno != "ENOENT":
            raise XsError(errno)
        node = self._create(conn, tx, path, b"")
        self._emit(conn, tx, ("change", path, [node.perms]))
        return _OK

    def _op_rm(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        path = self._path(conn, onearg(payload))
        node = self._get(conn, tx, path)
        if node is None:
            errno = self._missing_errno(conn, tx, path, PERM_WRITE)
            if errno == "ENOENT" and path != "/" and self._get(conn, tx, parent_of(path)):
                return _OK  # already gone, parent exists: fine
            raise XsError(errno)
        if not self._perm(conn, node.perms) & PERM_WRITE:
            raise XsError("EACCES")
        if path == "/":
            raise XsError("EINVAL", "cannot remove /")
        ppath = parent_of(path)
        old_parent = self._get(conn, tx, ppath)
        # In a transaction the node and its parent may come from different moments (the
        # parent read after a concurrent delete): C's _rm answers EINVAL for a missing
        # parent, delete_child EIO for a child missing from its parent's list (corrupt()).
        if old_parent is None:
            raise XsError("EINVAL")
        if basename(path) not in old_parent.children:
            log.info("xenstored: can't find child %s in %s", basename(path), ppath)
            raise XsError("EIO")
        removed: dict[str, Perms] = {}
        for p in self._subtree(conn, tx, path):
            sub = self._get(conn, tx, p)
            if sub is not None:
                removed[p] = sub.perms
                self._del(tx, p)
        parent = old_parent.copy()
        parent.children.remove(basename(path))
        self._put(tx, ppath, parent)
        self._emit(conn, tx, ("rm", path, removed))
        return _OK

    def _op_directory(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        raw = onearg(payload)
        if raw is None:
            raise XsError("ENOENT")
        node = self._node_for(conn, tx, self._path(conn, raw), PERM_READ)
        return node.children_bytes()  # > 4096 becomes E2BIG in handle()

    def _op_directory_part(self, conn: XsConnection, tx: Transaction | None,
                           payload: bytes) -> bytes:
        if payload.count(b"\0") != 2:
            raise XsError("EINVAL")
        raw, off_raw = get_strings(payload)[:2]
        node = self._node_for(conn, tx, self._path(conn, raw), PERM_READ)
        off = atoi(off_raw)
        gen = str(node.gen).encode() + b"\0"
        children = node.children_bytes()
        if off >= len(children):
            return gen + b"\0"
        maxlen = XENSTORE_PAYLOAD_MAX - len(gen) - 1
        end = off
        while end < len(children):
            nxt = children.index(b"\0", end) + 1
            if nxt - off > maxlen:
                break
            end = nxt
        chunk = children[off:end]
        return gen + chunk + (b"\0" if end == len(children) else b"")

    def _op_get_perms(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        raw = onearg(payload)
        if raw is None:
            raise XsError("ENOENT")
        path = self._path(conn, raw, special=True)
        if path in SPECIAL_PATHS:
            return format_perms(self._special_perms[path])
        return format_perms(self._node_for(conn, tx, path, PERM_READ).perms)

    def _op_set_perms(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        count = payload.count(b"\0")
        if count < 2:
            raise XsError("EINVAL")
        if not conn.privileged and count - 1 > self.quotas["permissions"]:
            raise XsError("ENOSPC", "permissions quota")
        strings = get_strings(payload)
        perms = tuple(parse_perm(s) for s in strings[1:count])
        path = self._path(conn, strings[0], special=True)
        if path in SPECIAL_PATHS:
            old = self._special_perms[path]
            if not self._perm(conn, old) & PERM_OWNER:
                raise XsError("EACCES")
            self._special_perms[path] = perms
            return _OK
        node = self._node_for(conn, tx, path, PERM_WRITE | PERM_OWNER)
        if not conn.privileged and perms[0].domid != node.perms[0].domid:
            raise XsError("EPERM", "only privileged domains may change the owner")
        old_perms = node.perms
        node = node.copy()
        node.perms = perms
        self._put(tx, path, node)
        self._emit(conn, tx, ("change", path, [old_perms, perms]))
        return _OK

    def _op_watch(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> Reply:
        strings = get_strings(payload)
        if len(strings) != 2:
            raise XsError("EINVAL")
        path, strip = self._watch_path(conn, strings[0])
        token = strings[1]
        if any(w.path == path and w.token == token for w in conn.watches):
            raise XsError("EEXIST")
        # C counts watches per domain (domain->nbwatch), whatever the connections
        if not conn.privileged and self._domain_count(conn.domid, "watches") >= \
                self.quotas["watches"]:
            raise XsError("E2BIG", "watches quota")
        w = Watch(path, token, strip)
        conn.watches.append(w)
        return _OK, [self._event_msg(w, path)]  # the initial fire follows the OK

    def _domain_count(self, domid: int, what: str) -> int:
        """Watches or transactions of every connection of ``domid`` (C keeps them per
        domain: a guest can't multiply its quota by opening connections)."""
        return sum(len(getattr(c, what)) for c in self._conns if c.domid == domid)

    def _watch_path(self, conn: XsConnection, raw: bytes) -> tuple[str, int]:
        if raw.startswith(b"@"):
            if len(raw) > self.quotas["path-max"]:
                raise XsError("EINVAL")
            try:
                return raw.decode("ascii"), 0
            except UnicodeDecodeError:
                raise XsError("EINVAL") from None
        path = self._path(conn, raw)
        strip = 0 if raw.startswith(b"/") else len(domain_path(conn.domid)) + 1
        return path, strip

    def _op_unwatch(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        strings = get_strings(payload)
        if len(strings) != 2:
            raise XsError("EINVAL")
        path, _ = self._watch_path(conn, strings[0])
        for i, w in enumerate(conn.watches):
            if w.path == path and w.token == strings[1]:
                del conn.watches[i]
                return _OK
        raise XsError("ENOENT")

    def _op_transaction_start(self, conn: XsConnection, tx: Transaction | None,
                              payload: bytes) -> bytes:
        if not conn.privileged and self._domain_count(conn.domid, "txs") >= \
                self.quotas["transactions"]:
            raise XsError("ENOSPC", "transactions quota")
        tid = conn.next_tx
        while tid == 0 or tid in conn.txs:
            tid = (tid + 1) & 0xFFFFFFFF
        conn.next_tx = (tid + 1) & 0xFFFFFFFF
        conn.txs[tid] = Transaction(tid)
        return str(tid).encode() + b"\0"

    def _op_transaction_end(self, conn: XsConnection, tx: Transaction | None,
                            payload: bytes) -> bytes:
        arg = onearg(payload)
        if arg not in (b"T", b"F"):
            raise XsError("EINVAL")
        if tx is None:
            raise XsError("ENOENT")
        del conn.txs[tx.id]  # ended either way, as in C
        if arg == b"F":
            return _OK
        for path, gen in tx.accessed.items():
            cur = self._nodes.get(path)
            if (cur.gen if cur is not None else -1) != gen:
                raise XsError("EAGAIN")
        for path in tx.written:
            node = tx.view[path]
            if node is None:
                self._gdel(path)
            else:
                self._gput(path, node.copy())
        for event in tx.events:  # queued before the reply, as C does
            kept = self._committed_event(tx, event)
            if kept is not None:
                self._fire(kept)
        return _OK

    @staticmethod
    def _committed_event(tx: Transaction, event: Event) -> Event | None:
        """``event`` as C fires it at commit, or None. C's finalize_transaction fires per
        accessed node; a node created and deleted inside the transaction has no generation
        and is not there to be seen: no event (nor for such nodes below a removed one)."""
        def transient(p: str) -> bool:
            return tx.accessed.get(p, 0) == -1 and tx.view.get(p, 0) is None

        kind, path, info = event
        if transient(path):
            return None
        if isinstance(info, dict):
            info = {p: perms for p, perms in info.items() if not transient(p)}
        return (kind, path, info)

    def _op_get_domain_path(self, conn: XsConnection, tx: Transaction | None,
                            payload: bytes) -> bytes:
        raw = onearg(payload)
        if raw is None:
            raise XsError("EINVAL")
        return domain_path(atoi(raw)).encode() + b"\0"

    def _op_introduce(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        strings = get_strings(payload)
        if len(strings) < 3:
            raise XsError("EINVAL")
        domid, port = atoi(strings[0]), atoi(strings[2])
        if port == 0 or port >= 0x80000000:  # C: int port <= 0
            raise XsError("EINVAL")
        self.introduce(domid)  # re-introduce is a rebind: OK, no event
        return _OK

    def _domain_arg(self, payload: bytes) -> int:
        raw = onearg(payload)
        if raw is None:
            raise XsError("EINVAL")
        domid = atoi(raw)
        if domid == 0:
            raise XsError("EINVAL")
        if domid not in self._introduced:
            raise XsError("ENOENT")
        return domid

    def _op_release(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        self.release(self._domain_arg(payload))
        return _OK

    def _op_resume(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        self._domain_arg(payload)
        return _OK

    def _op_is_domain_introduced(self, conn: XsConnection, tx: Transaction | None,
                                 payload: bytes) -> bytes:
        raw = onearg(payload)
        if raw is None:
            raise XsError("EINVAL")
        return b"T\0" if atoi(raw) in self._introduced else b"F\0"

    def _op_set_target(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        strings = get_strings(payload)
        if len(strings) < 2:
            raise XsError("EINVAL")
        domid, target = atoi(strings[0]), atoi(strings[1])
        if domid not in self._introduced or target not in self._introduced:
            raise XsError("ENOENT")
        self._targets[domid] = target
        return _OK

    def _op_reset_watches(self, conn: XsConnection, tx: Transaction | None,
                          payload: bytes) -> bytes:
        conn.watches.clear()
        conn.txs.clear()
        return _OK

    def _op_control(self, conn: XsConnection, tx: Transaction | None, payload: bytes) -> bytes:
        args = get_strings(payload)
        if not args:
            raise XsError("EINVAL")
        cmd, rest = args[0], args[1:]
        if cmd in (b"check", b"log", b"logfile", b"print"):
            return _OK
        if cmd == b"help":
            return ("Available commands:\n" + "".join(f"{c}\n" for c in _CONTROL_HELP)
                    ).encode() + b"\0"
        if cmd == b"memreport":
            return f"nodes: {len(self._nodes)}\n".encode() + b"\0"
        if cmd in (b"quota", b"quota-soft"):
            return self._control_quota(rest)
        raise XsError("EINVAL", f"unknown control command {cmd!r}")

    def _control_quota(self, rest: list[bytes]) -> bytes:
        if not rest:
            lines = [f"{n:<18}: {v:8d} {_QUOTA_HELP[n]}\n" for n, v in self.quotas.items()]
            return "".join(lines).encode() + b"\0"
        if rest[0] == b"set":
            if len(rest) != 3 or rest[1].decode(errors="replace") not in self.quotas:
                raise XsError("EINVAL")
            value = atoi(rest[2])
            if value == 0:
                raise XsError("EINVAL")
            self.quotas[rest[1].decode()] = value
            return _OK
        domid = atoi(rest[0])
        if domid not in self._introduced:
            raise XsError("EINVAL")
        watches = sum(len(c.watches) for c in self._conns if c.domid == domid)
        txs = sum(len(c.txs) for c in self._conns if c.domid == domid)
        return (f"nodes       : {self._owned[domid]}\nwatches     : {watches}\n"
                f"transactions: {txs}\n").encode() + b"\0"


_Handler = Callable[[XenstoreState, XsConnection, Transaction | None, bytes], Reply]
_HANDLERS: dict[int, _Handler] = {
    XsType.CONTROL: XenstoreState._op_control,
    XsType.DIRECTORY: XenstoreState._op_directory,
    XsType.READ: XenstoreState._op_read,
    XsType.GET_PERMS: XenstoreState._op_get_perms,
    XsType.WATCH: XenstoreState._op_watch,
    XsType.UNWATCH: XenstoreState._op_unwatch,
    XsType.TRANSACTION_START: XenstoreState._op_transaction_start,
    XsType.TRANSACTION_END: XenstoreState._op_transaction_end,
    XsType.INTRODUCE: XenstoreState._op_introduce,
    XsType.RELEASE: XenstoreState._op_release,
    XsType.GET_DOMAIN_PATH: XenstoreState._op_get_domain_path,
    XsType.WRITE: XenstoreState._op_write,
    XsType.MKDIR: XenstoreState._op_mkdir,
    XsType.RM: XenstoreState._op_rm,
    XsType.SET_PERMS: XenstoreState._op_set_perms,
    XsType.IS_DOMAIN_INTRODUCED: XenstoreState._op_is_domain_introduced,
    XsType.RESUME: XenstoreState._op_resume,
    XsType.SET_TARGET: XenstoreState._op_set_target,
    XsType.RESET_WATCHES: XenstoreState._op_reset_watches,
    XsType.DIRECTORY_PART: XenstoreState._op_directory_part,
}


__all__ = ["DEFAULT_QUOTAS", "XenstoreState", "XsConnection"]
