"""The XenStore nodes Xen's toolstack writes for each domain (xen-init-dom0 for dom0, libxl
for guests), with Xen's permissions, read as the domain itself and as dom0; renamed by
``sim exec --name``, removed on destroy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from requires import need_xen_c_toolchain

from harness.xen.api import Perm
from harness.xen.sim import domain_nodes
from harness.xen.sim.runner import Sim
from protocol_models.xenstore import XsError


def test_dom0_has_domid_and_name(sim: Sim) -> None:
    store = sim.domain(0).store
    assert store.read("/local/domain/0/domid") == b"0"
    assert store.read("/local/domain/0/name") == b"Domain-0"
    assert store.read("domid") == b"0"  # relative to the domain's own path
    assert store.get_perms("/local/domain/0/domid") == [Perm("n", 0)]


def test_guest_reads_its_own_nodes(sim: Sim) -> None:
    guest = sim.domain(1).store
    assert guest.read("domid") == b"1"
    assert guest.read("/local/domain/1/name") == b"guest"
    vm = guest.read("vm").decode()
    assert vm == f"/vm/{domain_nodes.vm_uuid(1)}"
    assert guest.read(f"{vm}/name") == b"guest"
    assert guest.read(f"{vm}/uuid") == vm.removeprefix("/vm/").encode()
    assert guest.read("memory/target") == str(domain_nodes.MEMORY_KB).encode()
    assert guest.read("control/platform-feature-xs_reset_watches") == b"1"
    # dompath and what libxl writes under it: dom0's, the guest may read
    ro = [Perm("n", 0), Perm("r", 1)]
    for path in ("/local/domain/1", "/local/domain/1/domid", "/local/domain/1/name",
                 "/local/domain/1/device", "/local/domain/1/control", vm):
        assert guest.get_perms(path) == ro, path
    # the guest-writable directories are the guest's own
    for sub in ("control/shutdown", "data", "device/suspend/event-channel", "error"):
        assert guest.get_perms(sub) == [Perm("n", 1)], sub
    guest.write("data/mine", "x")
    guest.write("control/shutdown", "poweroff")
    with pytest.raises(XsError) as exc:
        guest.write("domid", "5")  # read-only for the guest
    assert exc.value.name == "EACCES"
    with pytest.raises(XsError) as exc:
        guest.write("name", "evil")
    assert exc.value.name == "EACCES"


def test_dom0_reads_the_guests_nodes_and_guests_do_not_see_each_other(sim: Sim) -> None:
    sim.create_domain(2, "two")
    dom0 = sim.domain(0).store
    assert dom0.read("/local/domain/2/domid") == b"2"
    assert dom0.read("/local/domain/2/name") == b"two"
    with pytest.raises(XsError) as exc:
        sim.domain(1).store.read("/local/domain/2/name")
    assert exc.value.name == "EACCES"


def test_destroy_removes_the_domains_nodes(sim: Sim) -> None:
    sim.create_domain(3, "three")
    dom0 = sim.domain(0).store
    vm = dom0.read("/local/domain/3/vm").decode()
    sim.destroy_domain(3)
    for path in ("/local/domain/3", vm):
        with pytest.raises(XsError) as exc:
            dom0.read(path)
        assert exc.value.name == "ENOENT"
    sim.create_domain(3, "again")  # and a new domain 3 gets a fresh tree
    assert dom0.read("/local/domain/3/name") == b"again"


def test_rename_updates_the_name_nodes(sim: Sim) -> None:
    sim.rename_domain(1, "renamed")
    dom0 = sim.domain(0).store
    assert dom0.read("/local/domain/1/name") == b"renamed"
    assert dom0.read(f"/vm/{domain_nodes.vm_uuid(1)}/name") == b"renamed"
    assert [d.name for d in sim.control.list_domains() if d.domid == 1] == ["renamed"]


def test_sim_exec_domid_and_name(sim: Sim) -> None:
    """A program run by ``sim exec --domid 4 --name NAME`` reads its domid and name as
    libxenbe does (``Can't read from: domid`` was the trial's failure)."""
    need_xen_c_toolchain()
    code = ("from harness.xen.sim.client import SimDomain\n"
            "d = SimDomain.from_env()\n"
            "print(d.store.read('domid').decode(), d.store.read('name').decode())\n"
            "d.close()\n")
    out = subprocess.run([sys.executable, "-m", "harness", "sim", "exec", "--dir", sim.dir,
                          "--domid", "4", "--name", "fe4", "--", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[fe4] 4 fe4"
    # an existing domain gets the name given
    out = subprocess.run([sys.executable, "-m", "harness", "sim", "exec", "--dir", sim.dir,
                          "--domid", "4", "--name", "other", "--", sys.executable, "-c",
                          code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[other] 4 other", out.stderr
