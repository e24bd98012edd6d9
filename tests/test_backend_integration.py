"""The reference backend as a process on the simulated Xen, the frontend played by hand
as domain 1: handshake (A-09..A-12), OPEN/WRITE/TRIGGER with responses and CUR_POS events
(B-*, C-*, E-*), FE teardown (A-16), toolstack removal (A-18), SIGTERM, and the sim's
accounting showing nothing left mapped or bound."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.rings import EventConsumer, FrontRing
from harness.toolstack.apply import create_device, remove_device
from harness.toolstack.plan import plan_device, plan_removal
from harness.toolstack.vsnd_config import parse_xl_items
from harness.xen.api import in_transaction
from harness.xen.sim.runner import Sim
from protocol_models import codec
from protocol_models.constants import Op, PcmFormat, Trigger
from protocol_models.xenstore import XsError

FE, BE, DEV = 1, 0, 0
CARD = parse_xl_items([["card, sample-rates=48000, sample-formats=s16_le, channels-min=2",
                        "pcm, name=dev0", "stream, unique-id=pb0, type=p"]])[0]
BUFFER_SZ = 4 * 4096
PERIOD_SZ = 1920  # 10 ms of 48 kHz stereo S16


def wait_until(pred, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def read(store, path: str) -> bytes | None:
    try:
        return store.read(path)
    except XsError:
        return None


class HandFrontend:
    """Just enough frontend for one stream, over the seam as domain 1."""

    def __init__(self, sim: Sim, fe_path: str) -> None:
        self.dom = sim.domain(FE)
        self.fe_path = fe_path
        g = self.dom.grants
        self.ring_pages, self.evt_pages = g.alloc_pages(1), g.alloc_pages(1)
        self.ring_ref = g.grant(self.ring_pages, 0, BE)
        self.evt_ref = g.grant(self.evt_pages, 0, BE)
        self.front = FrontRing(self.ring_pages.page(0))
        self.front.init_shared()  # SND-B-01
        self.events = EventConsumer(self.evt_pages.page(0))
        self.events.init_shared()
        self.req_port = self.dom.evtchn.alloc_unbound(BE)
        self.evt_port = self.dom.evtchn.alloc_unbound(BE)
        self.next_id = 0

    def publish(self) -> None:
        nodes = {"ring-ref": self.ring_ref, "event-channel": self.req_port,
                 "evt-ring-ref": self.evt_ref, "evt-event-channel": self.evt_port}

        def body(tx: int) -> None:
            for k, v in nodes.items():
                self.dom.store.write(f"{self.fe_path}/0/0/{k}", str(v), tx)

        in_transaction(self.dom.store, body)  # one transaction
        self.set_state(3)

    def set_state(self, state: int) -> None:
        self.dom.store.write(f"{self.fe_path}/state", str(state))

    def call(self, op: int, **fields) -> object:
        rid = self.next_id
        self.next_id += 1
        self.front.put_request(codec.encode_req(op, id=rid, **fields))
        if self.front.push_requests():  # B-02
            self.dom.evtchn.notify(self.req_port)
        deadline = time.monotonic() + 3.0  # VSND_WAIT_BACK_MS
        while not self.front.unconsumed_responses():
            assert time.monotonic() < deadline, f"no response to {Op(op).name}"
            self.dom.evtchn.wait(0.05)
        resp = codec.decode_resp(self.front.get_response())
        self.front.final_check_for_responses()
        assert (resp.id, resp.operation) == (rid, op)  # B-08
        return resp

    def share_buffer(self, size: int) -> tuple[int, memoryview]:
        g = self.dom.grants
        npages = -(-size // 4096)
        self.buf_pages = g.alloc_pages(1 + npages)
        refs = [g.grant(self.buf_pages, i, BE) for i in range(1 + npages)]
        self.buf_refs = refs
        self.buf_pages.page(0)[:] = codec.encode_page_directory(0, refs[1:])
        return refs[0], self.buf_pages.view[4096:4096 + size]


@pytest.fixture
def backend(sim: Sim, tmp_path: Path):
    out, trace = tmp_path / "out", tmp_path / "trace.jsonl"
    log = open(tmp_path / "backend.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.backends.reference", "--domid", "0", "--out",
         str(out), "--trace", str(trace), "--log-level", "DEBUG"],
        env=sim.env(BE), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield proc, out, trace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.seek(0)
        sys.stderr.write(log.read())
        log.close()


def test_backend_process_end_to_end(sim: Sim, backend) -> None:
    proc, out, trace_path = backend
    ts = sim.domain(0)
    plan = plan_device(CARD, FE, BE, DEV)
    create_device(ts.store, plan, wait_initwait=10.0)  # BE reaches InitWait
    assert read(ts.store, f"{plan.be_path}/versions") == b"2"

    fe = HandFrontend(sim, plan.fe_path)
    fe.publish()
    wait_until(lambda: read(ts.store, plan.be_state_path) == b"4", what="BE Connected")
    assert len(sim.mappings(granter=FE, mapper=BE)) == 2  # ring + event page

    q = fe.call(Op.HW_PARAM_QUERY, formats=(1 << 64) - 1, rates_max=10**6, channels_max=8,
                buffer_max=10**6, period_max=10**6)
    assert q.status == 0 and q.formats == PcmFormat.S16_LE.mask and q.rates_min == 48000

    gref_dir, buf = fe.share_buffer(BUFFER_SZ)
    pattern = bytes(i * 7 % 251 for i in range(BUFFER_SZ))
    buf[:] = pattern
    r = fe.call(Op.OPEN, pcm_rate=48000, pcm_format=PcmFormat.S16_LE, pcm_channels=2,
                buffer_sz=BUFFER_SZ, gref_directory=gref_dir, period_sz=PERIOD_SZ)
    assert r.status == 0
    assert len(sim.mappings(granter=FE, mapper=BE)) == 2 + 4  # the 4 buffer pages
    assert fe.call(Op.WRITE, offset=0, length=BUFFER_SZ).status == 0
    assert fe.call(Op.TRIGGER, type=Trigger.START).status == 0

    got: list[tuple[int, int]] = []

    def three_events() -> bool:
        got.extend((e.id, e.position) for e in map(codec.decode_evt, fe.events.take_all()))
        return len(got) >= 3

    wait_until(three_events, timeout=3.0, what="CUR_POS events")
    assert got[:3] == [(0, PERIOD_SZ), (1, 2 * PERIOD_SZ), (2, 3 * PERIOD_SZ)]  # E-02..E-04
    assert fe.call(Op.TRIGGER, type=Trigger.STOP).status == 0
    assert fe.call(Op.WRITE, offset=BUFFER_SZ, length=1).status < 0  # C-09
    assert fe.call(Op.CLOSE).status == 0
    assert len(sim.mappings(granter=FE, mapper=BE)) == 2  # buffer unmapped at CLOSE (C-12)
    for r in fe.buf_refs:
        assert fe.dom.grants.revoke(r)  # not busy: nothing maps it any more

    fe.set_state(5)  # FE Closing -> BE back to InitWait, everything released
    wait_until(lambda: read(ts.store, plan.be_state_path) == b"2", what="BE InitWait")
    assert sim.mappings(granter=FE, mapper=BE) == []
    assert [p for p in sim.ports(BE) if p.remote_domid == FE
            and p.state.name == "INTERDOMAIN"] == []

    result = remove_device(ts.store, plan_removal(FE, BE, DEV, timeout=10.0))
    assert result.reached_closed

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0

    wav = out / "vsnd1-0-0-0-open1.wav"
    assert wav.read_bytes()[44:] == pattern  # the exact octets WRITE delivered
    assert json.loads(Path(str(wav) + ".json").read_text())["rate"] == 48000
    kinds = [json.loads(line)["kind"] for line in trace_path.read_text().splitlines()]
    assert {"req", "resp", "evt", "map", "unmap", "state", "notify"} <= set(kinds)
    assert sim.mappings(granter=FE, mapper=BE, history=False) == []


def connect_hand_frontend(sim: Sim):
    """Toolstack device, the hand frontend publishes, the backend reaches Connected."""
    ts = sim.domain(0)
    plan = plan_device(CARD, FE, BE, DEV)
    create_device(ts.store, plan, wait_initwait=10.0)
    fe = HandFrontend(sim, plan.fe_path)
    fe.publish()
    wait_until(lambda: read(ts.store, plan.be_state_path) == b"4", what="BE Connected")
    return ts, plan, fe


def test_sigterm_while_connected_unmaps_and_exits_0(sim: Sim, backend) -> None:
    proc, _, _ = backend
    ts, plan, fe = connect_hand_frontend(sim)
    gref_dir, _ = fe.share_buffer(4096)
    assert fe.call(Op.OPEN, pcm_rate=48000, pcm_format=PcmFormat.S16_LE, pcm_channels=2,
                   buffer_sz=4096, gref_directory=gref_dir, period_sz=0).status == 0
    assert len(sim.mappings(granter=FE, mapper=BE)) == 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert sim.mappings(granter=FE, mapper=BE) == []
    assert read(ts.store, plan.be_state_path) == b"6"  # tells the FE it is gone


def test_ring_overflow_tears_down_and_reconnects_on_republish(sim: Sim, backend) -> None:
    proc, _, _ = backend
    ts, plan, fe = connect_hand_frontend(sim)
    fe.set_state(4)
    fe.front.set_req_prod(1000)  # G-06: req_prod far beyond a ring
    fe.dom.evtchn.notify(fe.req_port)
    wait_until(lambda: read(ts.store, plan.be_state_path) == b"2", what="BE InitWait")
    assert sim.mappings(granter=FE, mapper=BE) == []
    assert proc.poll() is None  # still alive
    fe2 = HandFrontend(sim, plan.fe_path)  # the FE starts over (A-14: InitWait -> publish)
    fe2.set_state(1)
    fe2.publish()
    wait_until(lambda: read(ts.store, plan.be_state_path) == b"4", what="reconnect")
    assert fe2.call(Op.CLOSE).status == 0
