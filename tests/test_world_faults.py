"""Platform fault injection through the seam, judged on the reference backend: a grant map
that fails for the backend domain makes its OPEN fail with a negative Xen errno (and the
next OPEN, with the platform healthy again, succeeds); a XenStore write that fails for
the backend while it connects leaves the device unconnected, and the supervisor says so."""

from __future__ import annotations

from pathlib import Path

from harness.runner.supervisor import SupervisorConfig, running_supervisor
from harness.runner.verdicts import Outcome
from harness.world.world import reference_world
from harness.xen.api import FaultInjection
from protocol_models.constants import PcmFormat

RATE, FMT, CH, BUFFER, PERIOD = 48000, PcmFormat.S16_LE, 2, 65536, 4096


def test_a_failed_grant_map_fails_the_open_and_only_that_one(tmp_path: Path) -> None:
    with reference_world(tmp_path) as world:
        faults = world.faults
        assert isinstance(faults, FaultInjection)
        assert world.dev is not None
        stream = world.dev.stream("0/0")
        fid = faults.inject_fault(0, "grant.map", mode="once")
        resp = stream.open(RATE, FMT, CH, BUFFER, PERIOD)
        assert not resp.ok and resp.status_code < 0, resp
        (rec,) = [f for f in faults.faults() if f.fault_id == fid]
        assert rec.fired == 1 and rec.domid == 0 and rec.op == "grant.map"
        again = stream.open(RATE, FMT, CH, BUFFER, PERIOD)
        assert again.ok, again  # the platform is healthy again: the backend recovered
        close = stream.close()
        assert close is not None and close.ok


def test_frontend_faults_are_not_the_backends(tmp_path: Path) -> None:
    """A fault armed for another domain changes nothing for the backend's map."""
    with reference_world(tmp_path) as world:
        assert world.faults is not None and world.dev is not None
        world.faults.inject_fault(1, "grant.map", mode="always")
        stream = world.dev.stream("0/0")
        assert stream.open(RATE, FMT, CH, BUFFER, PERIOD).ok


def test_supervisor_judges_a_backend_that_cannot_write_its_state(tmp_path: Path) -> None:
    """XenStore writes of the backend domain fail from now on: after the frontend
    reconnects, the backend cannot switch to Connected, and the case is not a PASS."""
    with running_supervisor(tmp_path, SupervisorConfig()) as sup:
        faults = sup.world.faults
        assert faults is not None
        with sup.case("healthy") as case:
            assert case.dev.stream(0).hw_param_query().ok
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
        with sup.case("xs-write-fails") as case:
            faults.inject_fault(0, "xs.write", mode="always")
            sup.world.close_frontend()
            try:
                sup.world.connect_frontend()
            finally:
                faults.clear_faults(0)
        v = case.verdict
        assert v is not None and v.outcome is not Outcome.PASS, v.describe()
