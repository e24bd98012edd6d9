"""Thin I/O: carry a :mod:`plan` out through an ``api.Store`` (the only module here that
touches XenStore). Every wait has a deadline (design: "every wait has a timeout")."""

from __future__ import annotations

import itertools
import time
from collections.abc import Container
from dataclasses import dataclass

from harness.xen.api import Store, XenTimeout, in_transaction
from protocol_models.constants import LIBXL_INIT_TIMEOUT_S
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

from .plan import DevicePlan, RemovalPlan, RemoveTree, WriteNode

_tokens = itertools.count()


class DeviceTimeout(XenTimeout):
    """The backend did not reach the awaited state in time (SND-A-09 / SND-A-18)."""

    def __init__(self, path: str, expected: str, last: str | None, timeout: float) -> None:
        self.path, self.expected, self.last, self.timeout = path, expected, last, timeout
        shown = "missing" if last is None else repr(last)
        state = XenbusState.parse(last)
        if state is not None:
            shown += f" ({state.name})"
        super().__init__(f"backend did not reach {expected} within {timeout:g} s: "
                         f"{path} is {shown}")


def _read(store: Store, path: str, tx: int = 0) -> str | None:
    try:
        return store.read(path, tx).decode(errors="replace")
    except XsError as exc:
        if exc.name == "ENOENT":
            return None
        raise


def wait_for_state(store: Store, path: str, states: Container[XenbusState],
                   timeout: float) -> tuple[bool, str | None]:
    """Watch ``path`` until it parses as one of ``states`` or ``timeout`` passes. The watch
    fires once at registration (xenstore.txt), so a state already reached counts."""
    token = f"harness-toolstack-{next(_tokens)}"
    deadline = time.monotonic() + timeout
    store.watch(path, token)
    try:
        while True:
            last = _read(store, path)
            if XenbusState.parse(last) in states:
                return True, last
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, last
            store.next_event(remaining)  # any event: re-read, the value is what counts
    finally:
        try:
            store.unwatch(path, token)
        except XsError:
            pass


def _rm_quiet(store: Store, path: str, tx: int) -> None:
    try:
        store.rm(path, tx)
    except XsError as exc:
        if exc.name != "ENOENT":  # libxl ignores xs_rm failures of stale paths
            raise


def write_plan(store: Store, plan: DevicePlan) -> None:
    """All of ``plan`` in ONE transaction, restarted on EAGAIN (libxl's retry loop)."""

    def body(tx: int) -> None:
        for path in plan.clear:
            _rm_quiet(store, path, tx)
        for w in plan.writes:
            if w.value is None:
                store.mkdir(w.path, tx)
            else:
                store.write(w.path, w.value, tx)
            store.set_perms(w.path, w.perms, tx)

    in_transaction(store, body)


def create_device(store: Store, plan: DevicePlan,
                  wait_initwait: float = float(LIBXL_INIT_TIMEOUT_S)) -> None:
    """Write the device, then wait for BE state InitWait(2) like
    ``libxl__wait_device_connection`` (SND-A-09). Raises :class:`DeviceTimeout`."""
    write_plan(store, plan)
    ok, last = wait_for_state(store, plan.be_state_path, {XenbusState.InitWait},
                              wait_initwait)
    if not ok:
        raise DeviceTimeout(plan.be_state_path, "InitWait (2)", last, wait_initwait)


@dataclass(frozen=True)
class RemovalResult:
    """``reached_closed`` False: the BE missed SND-A-18 and the paths were removed anyway
    (libxl's forced retry); None: there was no BE ``state`` node to ask."""

    reached_closed: bool | None
    last_state: str | None
    elapsed: float


def remove_device(store: Store, removal: RemovalPlan,
                  timeout: float | None = None) -> RemovalResult:
    """Ask the BE to close, wait up to ``timeout`` (default the plan's
    LIBXL_DESTROY_TIMEOUT) for BE state Closed(6), then remove FE, libxl and BE paths."""
    start = time.monotonic()
    wait = removal.wait.timeout if timeout is None else timeout

    def initiate(tx: int) -> str | None:
        current = _read(store, removal.be_state_path, tx)
        if current is None:
            return None  # nothing to ask (our choice: do not recreate a vanished BE dir)
        for step in removal.initiate:
            if isinstance(step, WriteNode) or current.strip() not in step.unless:
                store.write(step.path, step.value, tx)
        return current

    reached: bool | None = None
    last = in_transaction(store, initiate)
    if last is not None:
        reached, last = wait_for_state(store, removal.wait.path, {XenbusState.Closed}, wait)

    def destroy(tx: int) -> None:
        for step in removal.destroy:
            _remove_tree(store, step, tx)

    in_transaction(store, destroy)
    return RemovalResult(reached, last, time.monotonic() - start)


def _remove_tree(store: Store, step: RemoveTree, tx: int) -> None:
    _rm_quiet(store, step.path, tx)
    if not step.prune_empty_parents:
        return
    parent = step.path.rsplit("/", 1)[0]
    while parent:
        try:
            if store.directory(parent, tx):
                return
            store.rm(parent, tx)
        except XsError:
            return
        parent = parent.rsplit("/", 1)[0]
