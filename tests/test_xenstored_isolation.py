"""A guest domain on its own listener sees the store as an unprivileged domain does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from xs_helpers import XsSim

from harness.xen.api import Perm, WatchEvent
from harness.xen.xsclient import XsClient
from protocol_models.xenstore import XsError, XsType

T = XsType


@pytest.fixture
def xs(tmp_path: Path) -> Iterator[XsSim]:
    with XsSim(tmp_path) as sim:
        dom0 = sim.client()
        # what a toolstack does for domain 5 (xenstore.md §2.3)
        dom0.write("/local/domain/5/name", "guest")
        dom0.write("/local/domain/5/data/x", "1")
        for p in ("/local/domain/5", "/local/domain/5/name", "/local/domain/5/data",
                  "/local/domain/5/data/x"):
            dom0.set_perms(p, [Perm("n", 5), Perm("r", 0)])
        dom0.write("/local/domain/0/name", "Domain-0")
        dom0.write("/shared", "s")
        dom0.set_perms("/shared", [Perm("n", 0), Perm("r", 5)])
        sim.state.introduce(5)
        yield sim


@pytest.fixture
def guest(xs: XsSim) -> XsClient:
    return xs.client(5)


def code(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(XsError) as e:
        fn(*args)
    return e.value.name


def test_relative_paths_resolve_to_own_domain(guest: XsClient) -> None:
    assert guest.read("name") == b"guest"
    guest.write("data/y", "2")
    assert guest.read("/local/domain/5/data/y") == b"2"


def test_reads_and_writes_outside_permissions(guest: XsClient) -> None:
    assert code(guest.read, "/local/domain/0/name") == "EACCES"
    assert code(guest.write, "/top", "x") == "EACCES"
    assert code(guest.directory, "/") == "EACCES"
    assert code(guest.write, "/shared", "x") == "EACCES"  # r only
    assert code(guest.rm, "/shared") == "EACCES"
    assert code(guest.read, "/local/domain/0/missing") == "EACCES"  # no existence leak
    assert guest.read("/shared") == b"s"


def test_missing_node_under_readable_parent_is_enoent(guest: XsClient) -> None:
    assert code(guest.read, "data/missing") == "ENOENT"


def test_guest_creations_are_owned_by_guest(xs: XsSim, guest: XsClient) -> None:
    dom0 = xs.client()
    dom0.write("/pub", "")
    dom0.set_perms("/pub", [Perm("n", 0), Perm("w", 5)])
    guest.write("/pub/mine", "m")
    assert dom0.get_perms("/pub/mine") == [Perm("n", 5), Perm("w", 5)]
    assert guest.read("/pub/mine") == b"m"  # owner: full access despite w-only parent


def test_owner_change_is_eperm(guest: XsClient) -> None:
    assert code(guest.set_perms, "data/x", [Perm("n", 0)]) == "EPERM"
    guest.set_perms("data/x", [Perm("n", 5), Perm("r", 7)])  # keeping the owner is fine
    assert guest.get_perms("data/x") == [Perm("n", 5), Perm("r", 7)]


def test_set_perms_needs_ownership(xs: XsSim, guest: XsClient) -> None:
    dom0 = xs.client()
    dom0.write("/b", "")
    dom0.set_perms("/b", [Perm("n", 0), Perm("b", 5)])
    guest.write("/b", "can write")
    assert code(guest.set_perms, "/b", [Perm("n", 0)]) == "EACCES"


def test_at_most_five_perms(guest: XsClient) -> None:
    six = [Perm("n", 5)] + [Perm("r", i) for i in range(1, 6)]
    assert code(guest.set_perms, "data/x", six) == "ENOSPC"
    guest.set_perms("data/x", six[:5])


def test_privileged_ops_refused(guest: XsClient) -> None:
    for type_, payload in [(T.CONTROL, b"help\0"), (T.INTRODUCE, b"6\x000\x001\0"),
                           (T.RELEASE, b"5\0"), (T.IS_DOMAIN_INTRODUCED, b"5\0"),
                           (T.RESUME, b"5\0"), (T.SET_TARGET, b"5\x000\0")]:
        assert guest.request(type_, payload) == (T.ERROR, b"EACCES\0"), type_
    assert guest.get_domain_path(5) == "/local/domain/5"


def test_relative_watch_and_permission_filtered_events(xs: XsSim, guest: XsClient) -> None:
    dom0 = xs.client()
    dom0.write("/local/domain/5/device", "")
    dom0.set_perms("/local/domain/5/device", [Perm("n", 5)])
    guest.watch("device", "dev")
    guest.watch("/local/domain/0", "spy")
    assert {guest.next_event(1), guest.next_event(1)} == {
        WatchEvent("device", "dev"), WatchEvent("/local/domain/0", "spy")}
    dom0.write("/local/domain/5/device/vsnd/0/x", "1")
    dom0.write("/local/domain/0/secret", "s")  # unreadable to domain 5: no event
    assert guest.next_event(1) == WatchEvent("device/vsnd/0/x", "dev")
    assert guest.next_event(0.3) is None


def test_special_watch_needs_permission(xs: XsSim, guest: XsClient) -> None:
    guest.watch("@releaseDomain", "r")
    assert guest.next_event(1) == WatchEvent("@releaseDomain", "r")  # initial fire
    xs.state.introduce(8)
    xs.state.release(8)
    assert guest.next_event(0.3) is None  # @releaseDomain is n0
    xs.client().set_perms("@releaseDomain", [Perm("n", 0), Perm("r", 5)])
    xs.state.release(8)
    assert guest.next_event(1) == WatchEvent("@releaseDomain", "r")


def test_guest_transaction_commits(xs: XsSim, guest: XsClient) -> None:
    tx = guest.transaction_start()
    guest.write("data/t", "v", tx)
    assert guest.transaction_end(tx) is True
    assert xs.client().read("/local/domain/5/data/t") == b"v"


def test_set_target_grants_the_targets_rights(xs: XsSim) -> None:
    dom0 = xs.client()
    xs.state.introduce(6)
    stub = xs.client(6)
    assert code(stub.read, "/local/domain/5/name") == "EACCES"
    dom0.set_target(6, 5)
    assert stub.read("/local/domain/5/name") == b"guest"


def test_quotas(xs: XsSim, guest: XsClient) -> None:
    xs.state.quotas.update(nodes=6, watches=2, transactions=2)
    guest.write("data/a", "")
    guest.write("data/b", "")
    assert code(guest.write, "data/c/d/e", "") == "ENOSPC"  # owns 4 already + 2 more
    guest.watch("data", "1")
    guest.watch("data", "2")
    assert code(guest.watch, "data", "3") == "E2BIG"
    guest.transaction_start()
    guest.transaction_start()
    assert code(guest.transaction_start) == "ENOSPC"
    assert code(guest.write, "data/x", b"v" * 2048) == "ENOSPC"  # node-size
    xs.client().write("/local/domain/0/big", b"v" * 4000)  # dom0 is not limited


def test_guest_listener_removed(xs: XsSim, guest: XsClient) -> None:
    path = str(xs.dir / "xs5.sock")
    xs.server.remove_listener(path)
    with pytest.raises(XsError):  # XsClosed, promptly
        guest.read("name")
    assert xs.client().read("/local/domain/5/name") == b"guest"
