"""Typed interfaces of the platform seam: Store, Grants, EventChannels, bundled per domain.

The frontend, toolstack and reference backend use these and nothing else, so the same code
runs on the simulated Xen (``harness.xen.sim``) and on a real host (``harness.xen.real``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from protocol_models.xenstore import XsError

T = TypeVar("T")


class XenTimeout(TimeoutError):
    """A wait on the platform ran out of time (the peer is hung or gone)."""


class PlatformDied(RuntimeError):
    """The platform itself ended under the harness (the simulator was killed): whatever
    failed in the harness at that moment is a consequence, not a finding."""


@dataclass(frozen=True)
class Perm:
    """One XenStore permission entry: ``n0``, ``r5``, ``w3``, ``b2``."""

    access: str  # "n", "r", "w" or "b"
    domid: int

    def __post_init__(self) -> None:
        if self.access not in ("n", "r", "w", "b"):
            raise ValueError(f"bad permission letter {self.access!r}")

    def __str__(self) -> str:
        return f"{self.access}{self.domid}"

    @classmethod
    def parse(cls, text: str | bytes) -> Perm:
        s = text.decode() if isinstance(text, bytes) else text
        if len(s) < 2:
            raise ValueError(f"bad permission {s!r}")
        return cls(s[0], int(s[1:], 0))


@dataclass(frozen=True)
class WatchEvent:
    path: str
    token: str


@runtime_checkable
class Store(Protocol):
    """A XenStore connection for one domain. Paths may be relative to the domain's path.
    ``tx`` is a transaction id (0: none). Failures raise :class:`XsError` by errno name."""

    domid: int

    def read(self, path: str, tx: int = 0) -> bytes: ...
    def write(self, path: str, value: bytes | str, tx: int = 0) -> None: ...
    def mkdir(self, path: str, tx: int = 0) -> None: ...
    def rm(self, path: str, tx: int = 0) -> None: ...
    def directory(self, path: str, tx: int = 0) -> list[str]: ...
    def get_perms(self, path: str, tx: int = 0) -> list[Perm]: ...
    def set_perms(self, path: str, perms: Sequence[Perm], tx: int = 0) -> None: ...
    def watch(self, path: str, token: str) -> None: ...
    def unwatch(self, path: str, token: str) -> None: ...
    def next_event(self, timeout: float) -> WatchEvent | None:
        """The next watch event, or None once ``timeout`` seconds pass without one."""
        ...
    def transaction_start(self) -> int: ...
    def transaction_end(self, tx: int, commit: bool = True) -> bool:
        """True when committed (or aborted as asked); False on a conflict (EAGAIN)."""
        ...
    def get_domain_path(self, domid: int) -> str: ...
    def close(self) -> None: ...


def in_transaction(store: Store, body: Callable[[int], T], *, attempts: int = 20,
                   timeout: float = 10.0) -> T:
    """Run ``body(tx)`` in a transaction, restarting it on EAGAIN as Linux and libxl do."""
    deadline = time.monotonic() + timeout
    for _ in range(attempts):
        tx = store.transaction_start()
        try:
            result = body(tx)
        except BaseException:
            try:
                store.transaction_end(tx, commit=False)
            except XsError:
                pass
            raise
        if store.transaction_end(tx, commit=True):
            return result
        if time.monotonic() > deadline:
            break
    raise XsError("EAGAIN", f"transaction still conflicting after {attempts} attempts")


class SharedPages(Protocol):
    """Pages shared by the granting side: one contiguous, writable view and the grant ref
    of each page (``refs[i]`` grants page ``i``)."""

    npages: int
    refs: Sequence[int]

    @property
    def view(self) -> memoryview: ...
    def page(self, index: int) -> memoryview: ...
    def free(self) -> None: ...


class Mapping(Protocol):
    """Foreign pages mapped by the mapping side as one contiguous view."""

    domid: int
    refs: tuple[int, ...]
    readonly: bool

    @property
    def view(self) -> memoryview: ...
    def unmap(self) -> None: ...


@runtime_checkable
class Grants(Protocol):
    """Grant tables, both sides.

    Sharing allocates and grants in one step, to one domain, as ``xengntshr_share_pages``
    and Linux's gntalloc do: a real host cannot grant a page it allocated earlier to a
    domain named later, so the seam does not offer that.
    """

    def share_pages(self, npages: int, domid: int, readonly: bool = False) -> SharedPages:
        """Allocate ``npages`` zeroed pages and grant each to ``domid``."""
        ...
    def revoke(self, ref: int) -> bool:
        """End foreign access. False when the grant is still mapped by its grantee (it stays
        busy and is released at unmap, as gnttab_end_foreign_access defers it)."""
        ...
    def map(self, domid: int, refs: Sequence[int], readonly: bool = False) -> Mapping: ...
    def close(self) -> None: ...


@runtime_checkable
class EventChannels(Protocol):
    """An event-channel handle; ``fileno()`` is readable while events are pending."""

    def alloc_unbound(self, remote_domid: int) -> int: ...
    def bind_interdomain(self, remote_domid: int, remote_port: int) -> int: ...
    def notify(self, port: int) -> None: ...
    def unbind(self, port: int) -> None: ...
    def fileno(self) -> int: ...
    def wait(self, timeout: float) -> list[int]:
        """Local ports that fired (each once, coalesced); [] when ``timeout`` passes."""
        ...
    def close(self) -> None: ...


class Domain(Protocol):
    """Everything one domain identity uses of Xen."""

    domid: int
    store: Store
    grants: Grants
    evtchn: EventChannels

    def close(self) -> None: ...


# -- the platform: domains, processes, and optional capabilities -------------------------

C = TypeVar("C")


@dataclass(frozen=True)
class MappingRecord:
    """``mapper`` maps page ``ref`` of ``granter`` since ``since`` (CLOCK_MONOTONIC ns);
    ``until`` is None while it is still mapped."""

    granter: int
    mapper: int
    ref: int
    readonly: bool
    since: int
    until: int | None


@dataclass(frozen=True)
class PortRecord:
    """An event-channel port of ``domid``; ``remote_*`` are set once it is interdomain."""

    domid: int
    port: int
    interdomain: bool
    remote_domid: int
    remote_port: int


@runtime_checkable
class GrantAccounting(Protocol):
    """Evidence no real Xen gives: who maps which page of whom, which ports are bound.
    Offered by the simulated Xen; the suites use it to find leaks."""

    def mappings(self, granter: int | None = None, mapper: int | None = None,
                 history: bool = False) -> list[MappingRecord]:
        """Current mappings (and, with ``history``, the recent ended ones)."""
        ...
    def ports(self, domid: int) -> list[PortRecord]: ...


@runtime_checkable
class XenStoreAccounting(Protocol):
    """How much each domain writes to XenStore (the suites judge write storms)."""

    def xs_writes(self, domid: int, since: int | None = None,
                  last: float | None = None, exclude_pid: int = 0) -> int:
        """Write requests of ``domid``: all, since ``since`` (monotonic ns), or in the
        ``last`` seconds; without those of process ``exclude_pid`` (e.g. the harness's own
        toolstack, which is dom0 like the backend)."""
        ...


@dataclass(frozen=True)
class FaultRecord:
    """An armed fault: ``op`` of ``domid`` fails with ``errno`` as ``mode`` says."""

    fault_id: int
    domid: int
    op: str
    errno: int
    mode: str  # "once", "always" or "from" (the Nth call on: ``n``)
    n: int
    calls: int  # calls of ``op`` seen while armed
    fired: int  # calls that failed


@runtime_checkable
class FaultInjection(Protocol):
    """Platform operations failed on purpose (the simulated Xen's): event-channel
    ``evtchn.alloc_unbound|bind_interdomain|notify|unbind``, grant
    ``grant.alloc|share|revoke|map|unmap`` and XenStore ``xs.read|write|...`` of one domain,
    once, always, or from the Nth call on, with the errno real Xen gives by default."""

    def inject_fault(self, domid: int, op: str, errno: int | str | None = None,
                     mode: str | tuple[str, int] = "once") -> int: ...
    def clear_faults(self, domid: int | None = None, fault_id: int | None = None) -> int: ...
    def faults(self) -> list[FaultRecord]: ...


class Platform(Protocol):
    """One Xen, simulated or real, as a run uses it: domain identities for this process,
    the environment of a process that acts as a domain, and optional capabilities."""

    kind: str  # "sim" or "real"

    def domain(self, domid: int) -> Domain:
        """A new connection of this process acting as ``domid`` (the caller closes it)."""
        ...
    def ensure_domain(self, domid: int, name: str) -> None:
        """Make sure domain ``domid`` exists (the sim creates it; a real host must have
        it already, else :class:`PlatformError`)."""
        ...
    def process_env(self, domid: int, *, foreign: bool = False) -> dict[str, str]:
        """The environment of a child process acting as ``domid``; ``foreign``: a program
        built on Xen's C libraries (the sim gives it its replacement libraries)."""
        ...
    def capability(self, kind: type[C]) -> C | None:
        """The optional capability ``kind`` (e.g. :class:`GrantAccounting`), or None."""
        ...
    def close(self) -> None: ...


class PlatformError(RuntimeError):
    """The platform cannot do what the run needs (the message says what and why)."""
