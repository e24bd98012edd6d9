"""The world of a harness that runs in a guest (``toolstack=False``: a real host's guest,
as on the xen-qemu tier): the device is the host toolstack's, the backend runs in its own
domain already (``--backend attach``). Shown on the simulated Xen: the world adopts the
device the toolstack made, connects to the backend, never writes the backend's nodes, and
leaves the device in place; without a device it says who must make it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.toolstack.apply import create_device
from harness.toolstack.plan import plan_device
from harness.world.spec import DEFAULT_CARD, WorldSpecError, world_spec
from harness.world.world import BackendStartError, running_world
from harness.xen.platforms import open_platform

ROOT = Path(__file__).resolve().parents[1]


def test_a_guest_harness_needs_an_attached_backend() -> None:
    with pytest.raises(WorldSpecError, match="--backend attach"):
        world_spec(backend="reference", toolstack=False)


def test_no_device_is_an_error_naming_the_toolstack(tmp_path: Path) -> None:
    spec = world_spec(backend="attach", toolstack=False, init_timeout=1.0)
    with pytest.raises(BackendStartError, match="the host's toolstack creates it"):
        with running_world(spec, tmp_path):
            pass


def test_the_toolstacks_device_is_adopted_and_left_in_place(tmp_path: Path) -> None:
    spec = world_spec(backend="attach", toolstack=False, connect_timeout=20.0)
    with open_platform("sim") as sim:
        env = {**sim.process_env(0), "PYTHONPATH": str(ROOT)}
        be = subprocess.Popen([sys.executable, "-m", "harness.backends.reference",
                               "--out", str(tmp_path / "wav")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            tool = sim.domain(0)
            try:
                sim.ensure_domain(spec.frontend_domid, "guest")  # xl: the domain first
                plan = plan_device(DEFAULT_CARD, spec.frontend_domid, 0, 0)
                create_device(tool.store, plan)  # the host's toolstack: xl create
                # a node of the toolstack's own: a world that made the device again (its
                # transaction clears the backend directory first) would lose it
                tool.store.write(f"{plan.be_path}/made-by", "xl")
                with running_world(spec, tmp_path / "run", platform=sim) as world:
                    assert world.dev is not None
                    rep = world.dev.stream(0).hw_param_query()
                    assert rep.status_code == 0  # the backend in dom0 answers
                # the device stays the toolstack's: its backend directory is still there
                assert tool.store.read(f"{plan.be_path}/frontend-id") == b"1"
                assert tool.store.read(f"{plan.be_path}/made-by") == b"xl"
            finally:
                tool.close()
        finally:
            be.terminate()
            be.wait(10)
