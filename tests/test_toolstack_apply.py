"""apply.py against the simulated xenstored, in-process on a tmp socket (SND-A-02, A-03,
A-09, A-18). A thread plays a minimal backend: InitWait on start, Closed on Closing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.toolstack.apply import DeviceTimeout, create_device, remove_device
from harness.toolstack.plan import plan_device, plan_removal
from harness.toolstack.vsnd_config import parse_xl_items
from harness.xen.api import Perm
from harness.xen.sim.xenstored import XenstoreState
from harness.xen.sim.xs_server import XenstoreServer
from harness.xen.xsclient import XsClient
from protocol_models.xenstore import XsError

FE, BE = 1, 0
CARD = parse_xl_items([["card, sample-rates=48000", "pcm, name=dev0",
                        "stream, unique-id=0, type=p"]])[0]


@pytest.fixture
def socks(tmp_path: Path) -> Iterator[dict[int, str]]:
    state = XenstoreState()
    server = XenstoreServer(state)
    paths = {0: str(tmp_path / "xs0.sock"), 1: str(tmp_path / "xs1.sock")}
    server.add_listener(paths[0], 0)
    server.start()
    server.add_listener(paths[1], 1)
    state.introduce(1)
    try:
        yield paths
    finally:
        server.stop()


def _backend(sock: str, state_path: str, stop: threading.Event,
             on_closing: str | None = "6") -> threading.Thread:
    """Watch our own state: 1 -> 2 (SND-A-09); 5 -> ``on_closing`` (SND-A-18)."""

    def run() -> None:
        with XsClient(sock, 0) as xs:
            xs.watch(state_path, "be")
            while not stop.is_set():
                if xs.next_event(0.05) is None:
                    continue
                try:
                    value = xs.read(state_path)
                except XsError:
                    continue
                if value == b"1":
                    xs.write(state_path, "2")
                elif value == b"5" and on_closing:
                    xs.write(state_path, on_closing)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_create_then_remove(socks: dict[int, str]) -> None:
    plan = plan_device(CARD, FE, BE, 0)
    stop = threading.Event()
    be = _backend(socks[0], plan.be_state_path, stop)
    try:
        with XsClient(socks[0], 0) as ts:
            create_device(ts, plan, wait_initwait=5.0)
            for w in plan:
                if w.path != plan.be_state_path:
                    assert ts.read(w.path).decode() == (w.value or ""), w.path
                assert tuple(ts.get_perms(w.path)) == w.perms, w.path
            assert ts.read(plan.be_state_path) == b"2"
            # the guest reads its config but cannot rewrite it (libxl ro_fents)
            with XsClient(socks[1], 1) as guest:
                assert guest.read(f"{plan.fe_path}/0/0/type") == b"p"
                guest.write(f"{plan.fe_path}/0/0/ring-ref", "8")  # its own dir: allowed
                with pytest.raises(XsError):
                    guest.write(f"{plan.fe_path}/0/0/type", "c")

            result = remove_device(ts, plan_removal(FE, BE, 0), timeout=5.0)
            assert result.reached_closed is True and result.last_state == "6"
            for path in (plan.fe_path, plan.be_path, plan.libxl_path):
                with pytest.raises(XsError):
                    ts.read(path)
            # empty parents pruned (libxl__xs_path_cleanup), domain dirs kept
            with pytest.raises(XsError):
                ts.read("/local/domain/0/backend")
    finally:
        stop.set()
        be.join(2)


def test_create_times_out_naming_path_and_state(socks: dict[int, str]) -> None:
    plan = plan_device(CARD, FE, BE, 0)
    with XsClient(socks[0], 0) as ts, pytest.raises(DeviceTimeout) as info:
        create_device(ts, plan, wait_initwait=0.3)
    err = info.value
    assert err.path == plan.be_state_path and err.last == "1"
    assert plan.be_state_path in str(err) and "'1' (Initialising)" in str(err)


def test_remove_times_out_but_still_destroys(socks: dict[int, str]) -> None:
    plan = plan_device(CARD, FE, BE, 0)
    stop = threading.Event()
    be = _backend(socks[0], plan.be_state_path, stop, on_closing=None)  # never closes
    try:
        with XsClient(socks[0], 0) as ts:
            create_device(ts, plan, wait_initwait=5.0)
            result = remove_device(ts, plan_removal(FE, BE, 0), timeout=0.3)
            assert result.reached_closed is False and result.last_state == "5"
            with pytest.raises(XsError):
                ts.read(plan.fe_path)
    finally:
        stop.set()
        be.join(2)


def test_remove_leaves_closed_state_alone(socks: dict[int, str]) -> None:
    plan = plan_device(CARD, FE, BE, 0)
    with XsClient(socks[0], 0) as ts:
        ts.write(f"{plan.be_path}/state", "6")
        ts.set_perms(plan.be_path, [Perm("n", 0)])
        result = remove_device(ts, plan_removal(FE, BE, 0), timeout=1.0)
        assert result.reached_closed is True and result.last_state == "6"
