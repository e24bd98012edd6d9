"""Choosing the platform: the simulated Xen named by the environment, else the host."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.xen.api import EventChannels, Grants, Perm, Store
from harness.xen.connect import connect_domain
from harness.xen.real.domain import NoXenHere
from protocol_models.xenstore import XsError


def test_the_sim_named_by_the_environment(sim) -> None:
    dom = connect_domain(1, sim.env(1))
    try:
        assert dom.domid == 1
        assert isinstance(dom.store, Store) and isinstance(dom.grants, Grants)
        assert isinstance(dom.evtchn, EventChannels)
        dom0 = sim.domain(0).store
        dom0.write("/local/domain/1/name", b"guest")
        dom0.set_perms("/local/domain/1/name", [Perm("n", 1)])
        assert dom.store.read("name") == b"guest"  # relative: its own path, as domain 1
        with pytest.raises(XsError, match="EACCES"):
            dom.store.read("/local/domain/0/name")
    finally:
        dom.close()
    with pytest.raises(ValueError, match="domain 0 asked for, but this process is domain 1"):
        connect_domain(0, sim.env(1))


@pytest.mark.skipif(os.path.exists("/dev/xen/evtchn"), reason="this machine is a Xen domain")
def test_no_xen_here_is_a_clear_error() -> None:
    with pytest.raises(NoXenHere, match="no Xen on this machine"):
        connect_domain(0, {})
    env = {k: v for k, v in os.environ.items() if not k.startswith("XEN")}
    proc = subprocess.run([sys.executable, "-m", "harness.backends.reference"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "no Xen on this machine" in proc.stderr and "Traceback" not in proc.stderr
