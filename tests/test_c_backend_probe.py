"""An unmodified C backend (tests/c/backend_probe.c, linked against Debian's libxenstore,
libxenevtchn, libxengnttab and libxenctrl) runs as domain 0 of the sim through
``run_as_domain``, against a frontend played in Python as domain 1: it finds the device by
a XenStore watch, maps the ring and a 4-page buffer, exchanges notifications both ways from
two threads, checks the frontend's data and writes its own, then unmaps and unbinds; the
sim's accounting shows every mapping made and none left."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from requires import need_xen_c_toolchain

from harness.xen.api import Perm, Store
from harness.xen.sim import simexec
from harness.xen.sim.hvproto import PortState
from harness.xen.sim.runner import Sim
from protocol_models.xenstore import XsError

C_DIR = Path(__file__).parent / "c"
FRONT_DIR = "/local/domain/1/device/probe/0"
BACK_ROOT = "/local/domain/0/backend/probe"
BACK_DIR = f"{BACK_ROOT}/1/0"
NPAGES = 4
ROUNDS = 200
PAGE = 4096


def pattern(start: int, stop: int, mul: int, add: int) -> bytes:
    return bytes((i * mul + add) & 0xFF for i in range(start, stop))


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_xen_c_toolchain()
    out = tmp_path_factory.mktemp("c") / "backend_probe"
    proc = subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(out),
         str(C_DIR / "backend_probe.c"),
         "-lxenstore", "-lxenevtchn", "-lxengnttab", "-lxenctrl", "-lpthread"],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def wait_for_value(store: Store, path: str, value: bytes, timeout: float = 15.0) -> None:
    token = f"wait-{path}"
    store.watch(path, token)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if store.read(path) == value:
                    return
            except XsError:  # not there yet
                pass
            left = deadline - time.monotonic()
            if left <= 0 or store.next_event(left) is None:
                raise TimeoutError(f"{path} never became {value!r}")
    finally:
        store.unwatch(path, token)


@pytest.mark.parametrize("bind_now", [False, True], ids=["lazy", "LD_BIND_NOW"])
def test_c_backend_against_python_frontend(sim: Sim, probe: Path, bind_now: bool) -> None:
    front = sim.domain(1)
    tool = sim.domain(0)
    g, ev, st = front.grants, front.evtchn, front.store

    # the frontend's side: pages, grants, ports, XenStore nodes
    ring = g.alloc_pages(1)
    buf = g.alloc_pages(NPAGES)
    ring.view[:PAGE // 2] = pattern(0, PAGE // 2, 7, 1)
    buf.view[:NPAGES * PAGE // 2] = pattern(0, NPAGES * PAGE // 2, 31, 7)
    ring_ref = g.grant(ring, 0, 0)
    buf_refs = [g.grant(buf, i, 0) for i in range(NPAGES)]
    port_req, port_evt = ev.alloc_unbound(0), ev.alloc_unbound(0)
    tool.store.mkdir(FRONT_DIR)
    tool.store.set_perms(FRONT_DIR, [Perm("n", 1), Perm("r", 0)])
    nodes = {"ring-ref": ring_ref, "num-buf-pages": NPAGES, "event-channel-req": port_req,
             "event-channel-evt": port_evt}
    nodes.update({f"buf-ref-{i}": r for i, r in enumerate(buf_refs)})
    for k, v in nodes.items():
        st.write(f"{FRONT_DIR}/{k}", str(v))

    # the backend: started before its device exists, finds it through its watch
    out: list[str] = []
    result: dict[str, int] = {}
    env = {"LD_BIND_NOW": "1"} if bind_now else {}

    def run() -> None:
        result["status"] = simexec.run_as_domain(
            [str(probe), BACK_ROOT, str(ROUNDS)], runner=sim, domid=0, env=env,
            timeout=60, output=lambda stream, line: out.append(line))

    backend = threading.Thread(target=run)
    backend.start()
    try:
        deadline = time.monotonic() + 15
        while not any("watching" in line for line in out):
            assert time.monotonic() < deadline and backend.is_alive(), out
            time.sleep(0.01)
        tool.store.write(f"{BACK_DIR}/frontend-id", "1")
        tool.store.write(f"{BACK_DIR}/frontend", FRONT_DIR)
        st.write(f"{FRONT_DIR}/state", "3")
        wait_for_value(tool.store, f"{BACK_DIR}/state", b"4")

        # both channels at once: we ping on req (the backend echoes), the backend pings on
        # evt (we echo); each side waits for the answer before the next ping
        nreq = nevt = 0
        ev.notify(port_req)
        while nreq < ROUNDS or nevt < ROUNDS:
            fired = ev.wait(10.0)
            assert fired, f"stalled at req {nreq}, evt {nevt}: {out}"
            for port in fired:
                if port == port_evt:
                    nevt += 1
                    ev.notify(port_evt)
                elif port == port_req:
                    nreq += 1
                    if nreq < ROUNDS:
                        ev.notify(port_req)
    finally:
        backend.join(60)
    assert result.get("status") == 0, "\n".join(out)
    assert "[dom0] probe: ok" in out
    assert "[dom0] probe: frontend data checked (ring + 4 pages)" in out

    # what the backend wrote
    assert bytes(ring.view[PAGE // 2:]) == pattern(PAGE // 2, PAGE, 5, 3)
    assert bytes(buf.view[NPAGES * PAGE // 2:]) == pattern(NPAGES * PAGE // 2,
                                                           NPAGES * PAGE, 11, 2)
    assert tool.store.read(f"{BACK_DIR}/state") == b"6"

    # the sim's accounting: nothing mapped any more; the ring and buffer were mapped once,
    # the ring 40 more times by the two threads through the shared gnttab handle
    assert sim.mappings(granter=1) == []
    history = sim.mappings(granter=1, mapper=0, history=True)
    assert sorted(m.ref for m in history if m.ref in buf_refs) == sorted(buf_refs)
    assert len([m for m in history if m.ref == ring_ref]) == 1 + 2 * 20
    assert all(m.until is not None for m in history)
    # the backend's ports are gone: ours are unbound again
    states = {p.port: p.state for p in sim.ports(1)}
    assert states[port_req] == PortState.UNBOUND and states[port_evt] == PortState.UNBOUND
    assert [p for p in sim.ports(0)] == []


def test_c_evtchn_pinger_round_trips(sim: Sim, probe: Path) -> None:
    with simexec.c_evtchn_pinger(sim) as step:
        for _ in range(200):  # each step is one notify echoed by the C program
            step()
    deadline = time.monotonic() + 5  # the echo was killed: the sim notices soon after
    while sim.ports(1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.ports(1) == []
