"""The reference frontend's driver on the simulated Xen, against a small scripted backend
thread (domain 0) whose misbehaviour each test chooses: handshake (SND-A-10..A-15), typed
and raw requests, timeouts (G-02), violations seen through the driver, teardown and
reconnection (A-14, A-17), and the sim's accounting of pages and ports."""

from __future__ import annotations

import contextlib
import select
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import NotConnected, RequestTimeout, RingFull
from harness.frontend.stream_core import Response
from harness.rings import RSP_EVENT, BackRing, EventProducer
from harness.toolstack.apply import write_plan
from harness.toolstack.plan import plan_device
from harness.toolstack.vsnd_config import parse_xl_items
from harness.trace import Trace
from harness.xen.sim.runner import Sim
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, Op, Trigger, XenErrno, XsField
from protocol_models.xenstore import XsError

FE, BE = 1, 0
CARD = parse_xl_items([["card, sample-rates=48000, sample-formats=s16_le",
                        "pcm, name=dev0", "stream, unique-id=pb, type=p",
                        "stream, unique-id=cap, type=c"]])[0]


class MiniBackend:
    """Just enough of a backend, in a thread acting as domain 0. ``behave`` tweaks it:
    ``id_offset`` (answer with id+offset), ``silent`` (ops left unanswered), ``op_xor``,
    ``event_ids`` (callable n -> id), ``events_before_start`` (bool)."""

    def __init__(self, sim: Sim, **behave: Any) -> None:
        self.dom = sim.domain(BE)
        self.xs = self.dom.store
        self.be = f"/local/domain/{BE}/backend/vsnd/{FE}/0"
        self.fe = f"/local/domain/{FE}/device/vsnd/0"
        self.behave = behave
        self.streams: dict[int, dict[str, Any]] = {}  # port -> stream
        self.requests: list[Any] = []
        self.written = bytearray()
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.ring_state_at_connect: list[tuple[int, ...]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MiniBackend:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def _state(self, value: int) -> None:
        self.xs.write(f"{self.be}/state", str(value))

    def _run(self) -> None:
        self._state(2)
        self.xs.watch(f"{self.fe}/state", "fe")
        while not self.stop.is_set():
            ev = self.xs.next_event(0)
            if ev is not None:
                self._fe_changed()
            if select.select([self.dom.evtchn.fileno()], [], [], 0.002)[0]:
                for port in self.dom.evtchn.wait(0):
                    s = self.streams.get(port)
                    if s is not None:
                        self._serve(s)
            for s in list(self.streams.values()):
                self._pace(s)

    def _fe_changed(self) -> None:
        try:
            fe_state = int(self.xs.read(f"{self.fe}/state"))
        except (XsError, ValueError):
            return
        if fe_state == 3 and not self.streams:
            try:
                self._connect()
            except OSError:  # transport revoked under us (FE reconnecting again): retry
                self.teardown()  # at its next Initialised
        elif fe_state in (1, 5, 6) and self.streams:
            self.teardown()
            self._state(2)

    def _connect(self) -> None:
        for path in ("0/0", "0/1"):
            base = f"{self.fe}/{path}"
            rd = {k: int(self.xs.read(f"{base}/{k}")) for k in (
                XsField.RING_REF, XsField.EVT_CHNL, XsField.EVT_RING_REF, XsField.EVT_EVT_CHNL)}
            ring = self.dom.grants.map(FE, [rd[XsField.RING_REF]])
            try:
                evt = self.dom.grants.map(FE, [rd[XsField.EVT_RING_REF]])
            except OSError:
                ring.unmap()
                raise
            self.ring_state_at_connect.append(
                (*struct.unpack_from("<IIII", ring.view), sum(evt.view)))
            req_port = self.dom.evtchn.bind_interdomain(FE, rd[XsField.EVT_CHNL])
            evt_port = self.dom.evtchn.bind_interdomain(FE, rd[XsField.EVT_EVT_CHNL])
            back = BackRing(ring.view)
            back.attach()
            prod = EventProducer(evt.view)
            prod.attach()
            self.streams[req_port] = dict(path=path, ring=ring, evt=evt, back=back, prod=prod,
                                          req_port=req_port, evt_port=evt_port, buf=None,
                                          running=False, pos=0, next_evt=0, open=None)
        self._state(4)
        self.connected.set()

    def teardown(self) -> None:
        for s in self.streams.values():
            self._unmap_buffer(s)
            s["ring"].unmap()
            s["evt"].unmap()
            for port in (s["req_port"], s["evt_port"]):
                with contextlib.suppress(OSError):
                    self.dom.evtchn.unbind(port)
        self.streams.clear()
        self.connected.clear()

    def _unmap_buffer(self, s: dict[str, Any]) -> None:
        if s["buf"] is not None:
            s["buf"].unmap()
            s["buf"] = None

    def _serve(self, s: dict[str, Any]) -> None:
        back: BackRing = s["back"]
        while True:
            while back.unconsumed_requests():
                raw = back.copy_request()
                req = codec.decode_req(raw)
                self.requests.append(req)
                if req.operation in self.behave.get("silent", ()):
                    continue
                status, extra = self._handle(s, req)
                rid = (req.id + self.behave.get("id_offset", 0)) & 0xFFFF
                op = req.operation ^ self.behave.get("op_xor", 0)
                back.put_response(codec.encode_resp(id=rid, operation=op, status=status,
                                                    **extra))
            if back.push_responses():
                self.dom.evtchn.notify(s["req_port"])
            if not back.final_check_for_requests():
                return

    def _handle(self, s: dict[str, Any], req: Any) -> tuple[int, dict[str, int]]:
        op = req.operation
        if op == Op.HW_PARAM_QUERY:
            return 0, {k: getattr(req, k) for k in (
                "formats", "rates_min", "rates_max", "channels_min", "channels_max",
                "buffer_min", "buffer_max", "period_min", "period_max")}
        if op == Op.OPEN:
            self._unmap_buffer(s)
            npages = -(-req.buffer_sz // XEN_PAGE_SIZE)
            try:
                d = self.dom.grants.map(FE, [req.gref_directory])
                _, refs = codec.decode_page_directory(d.view, count=npages)
                d.unmap()
                s["buf"] = self.dom.grants.map(FE, refs)
            except OSError:
                return -int(XenErrno.EINVAL), {}
            s.update(open=req, pos=0, running=False)
            if self.behave.get("events_before_start"):
                self._event(s, 0)
            return 0, {}
        if s["buf"] is None and op != Op.CLOSE:
            return -int(XenErrno.EINVAL), {}
        if op == Op.CLOSE:
            s["running"] = False
            if not self.behave.get("keep_mapped_after_close"):
                self._unmap_buffer(s)
            return 0, {}
        view = s["buf"].view
        if op == Op.WRITE:
            self.written += view[req.offset:req.offset + req.length]
        elif op == Op.READ:
            view[req.offset:req.offset + req.length] = bytes(
                (req.offset + i) & 0xFF for i in range(req.length))
        elif op == Op.GET_VOLUME:
            struct.pack_into("<2i", view, req.offset, -1000, -2000)
        elif op == Op.TRIGGER:
            if req.type in (Trigger.START, Trigger.RESUME):
                s.update(running=True, t0=time.monotonic(), base=s["pos"])
            else:
                s["running"] = False
        return 0, {}

    def _pace(self, s: dict[str, Any]) -> None:
        """One CUR_POS per period of real time while running (48 kHz S16 stereo)."""
        o = s["open"]
        if not s["running"] or o is None or not o.period_sz:
            return
        pos = s["base"] + int((time.monotonic() - s["t0"]) * o.pcm_rate * 4)
        pos -= pos % o.period_sz
        if pos > s["pos"]:
            self._event(s, pos)

    def _event(self, s: dict[str, Any], pos: int) -> None:
        n = s["next_evt"]
        ids = self.behave.get("event_ids")
        s["prod"].put(codec.CUR_POS_EVT.encode(id=ids(n) if ids else n & 0xFFFF,
                                               position=pos))
        s["next_evt"] = n + 1
        s["pos"] = pos
        self.dom.evtchn.notify(s["evt_port"])


@pytest.fixture
def card(sim: Sim) -> Sim:
    write_plan(sim.domain(0).store, plan_device(CARD, FE, BE, 0))
    return sim


@pytest.fixture
def rig(card: Sim) -> Iterator[Callable[..., tuple[FrontendDevice, MiniBackend]]]:
    made: list[Any] = []

    def make(timeout_ms: int = 3000, **behave: Any) -> tuple[FrontendDevice, MiniBackend]:
        be = MiniBackend(card, **behave).start()
        dev = FrontendDevice(card.domain(FE), 0, trace=Trace(), timeout_ms=timeout_ms)
        made.extend([dev, be])
        dev.wait_connected(10)
        return dev, be

    yield make
    for obj in made:
        obj.close()


def fe_states(dev: FrontendDevice) -> list[int]:
    return [r.fields["state"] for r in dev.trace.select("state")
            if r.fields["who"] == "frontend"]


def test_connects_like_linux(rig: Any, card: Sim) -> None:
    dev, be = rig()
    assert fe_states(dev) == [3, 4]  # Initialised only after publishing (SND-A-10)
    assert [s.path for s in dev.streams] == ["0/0", "0/1"]
    assert [s.type for s in dev.streams] == ["p", "c"]
    # SHARED_RING_INIT (B-01) and a zeroed event page (B-17) as the backend found them
    assert be.ring_state_at_connect == [(0, 1, 0, 1, 0), (0, 1, 0, 1, 0)]
    xs = card.domain(0).store
    for s in dev.streams:
        base = f"{dev.fe_path}/{s.path}"
        assert int(xs.read(f"{base}/ring-ref")) == s.ring_ref
        assert int(xs.read(f"{base}/evt-event-channel")) == s.evt_port
    assert dev.stream("0/1") is dev.streams[1] is dev.stream(1)


def test_typed_playback_sequence(rig: Any) -> None:
    dev, be = rig()
    pb = dev.stream("0/0")
    q = pb.hw_param_query()
    assert q.ok and q.hw_param is not None and q.hw_param["rates_min"] == 48000
    assert pb.open(48000, "S16_LE", 2, 16384, 4096).status == "OK"
    assert pb.write(0, b"\x01\x02" * 4096).ok
    assert pb.trigger(Trigger.START).ok
    assert pb.wait_for(lambda: (pb.position or 0) >= 8192, 2.0)
    assert pb.trigger("STOP").ok
    assert pb.close().ok
    ids = [(r.operation, r.id) for r in be.requests]
    # ids reset at OPEN (hw_params) as Linux does (SND-B-11)
    assert ids == [(Op.HW_PARAM_QUERY, 0), (Op.OPEN, 0), (Op.WRITE, 1), (Op.TRIGGER, 2),
                   (Op.TRIGGER, 3), (Op.CLOSE, 4)]
    assert bytes(be.written) == b"\x01\x02" * 4096
    assert pb.shbuf is None and not pb.violations
    ev_ids = [e.id for e in pb.events]
    assert ev_ids == list(range(len(ev_ids))) and ev_ids
    assert all(r.fields.get("raw") for r in dev.trace.select("req", "resp", "evt"))
    assert dev.trace.select("notify")


def test_read_volume_and_mute(rig: Any) -> None:
    dev, be = rig()
    cap = dev.stream("0/1")
    cap.open(48000, "S16_LE", 2, 8192, 1024)
    r = cap.read(100, 50)
    assert r.ok and r.data == bytes((100 + i) & 0xFF for i in range(50))
    g = cap.get_volume(offset=4096)
    assert g.ok and g.values == (-1000, -2000)
    assert cap.set_volume([0, -500], offset=4096).ok and cap.mute([1, 0], offset=4096).ok
    assert be.requests[-1].operation == Op.MUTE and be.requests[-1].length == 2
    cap.close()


def test_timeout_then_late_traffic_is_judged(rig: Any) -> None:
    dev, _be = rig(timeout_ms=200, silent=(Op.TRIGGER,))
    pb = dev.stream(0)
    pb.open(48000, "S16_LE", 2, 8192, 1024)
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout):
        pb.trigger(Trigger.START)
    assert 0.19 <= time.monotonic() - t0 < 2.0  # waited its timeout, and not forever
    assert pb.close().ok  # the next request still works (Linux does not tear down)


def test_id_not_echoed_through_driver(rig: Any) -> None:
    dev, _be = rig(timeout_ms=300, id_offset=5)
    pb = dev.stream(0)
    with pytest.raises(RequestTimeout):
        pb.hw_param_query()
    kinds = [v.kind.name for v in pb.violations]
    assert kinds == ["id_not_echoed"] and pb.violations[0].raw is not None
    assert dev.trace.select("violation")[0].fields["clauses"] == ["SND-B-08", "SND-B-09"]


def test_operation_not_echoed_through_driver(rig: Any) -> None:
    dev, _be = rig(op_xor=1)
    r = dev.stream(0).close()
    assert r is not None and r.operation == Op.OPEN
    assert [v.kind.name for v in r.violations] == ["operation_not_echoed"]


def test_event_violations_through_driver(rig: Any) -> None:
    dev, _be = rig(events_before_start=True, event_ids=lambda n: 0 if n < 2 else n)
    pb = dev.stream(0)
    pb.open(48000, "S16_LE", 2, 16384, 2048)
    pb.trigger(Trigger.START)
    pb.wait_for(lambda: len(pb.events) >= 4, 2.0)
    pb.trigger(Trigger.STOP)
    pb.close()
    kinds = [v.kind.name for v in pb.violations]
    assert kinds[0] == "event_before_start"
    assert kinds.count("event_id_gap") == 2  # 0,0 then 0->2
    assert pb.core.linux_skipped == 1  # ids 0,0,2,3...: only the second 0 mismatches


def test_raw_pipelining_and_ring_full(rig: Any) -> None:
    dev, _be = rig()
    pb = dev.stream(0)
    pend = pb.send_many([codec.encode_req(Op.HW_PARAM_QUERY, id=100 + i) for i in range(8)])
    got: list[Response] = pb.collect(8, timeout=3)
    assert sorted(r.id for r in got) == [p.id for p in pend]
    assert all(r.request is not None for r in got) and not pb.violations
    with pytest.raises(RingFull):
        pb.send_many([codec.encode_req(Op.CLOSE, id=i) for i in range(33)])
    from protocol_models.sndif import XenSndReq

    pkt = XenSndReq(bytes(codec.encode_req(Op.CLOSE, id=7)))
    pb.send_raw(pkt)
    (r,) = pb.collect(1, timeout=3)
    assert r.id == 7 and r.operation == Op.CLOSE


def test_set_req_prod_and_publish_transport(rig: Any, card: Sim) -> None:
    dev, _be = rig()
    pb = dev.stream(0)
    ring = pb.channel.ring  # type: ignore[union-attr]
    pb.set_req_prod(ring.req_prod_pvt + 1)  # one garbage slot published
    got = pb.collect(1, timeout=2)
    assert len(got) == 1 and got[0].request is None  # an answer to a request we never made
    dev.publish_transport(pb, ring_ref=12345, event_channel="junk")
    xs = card.domain(0).store
    assert xs.read(f"{dev.fe_path}/0/0/ring-ref") == b"12345"
    assert xs.read(f"{dev.fe_path}/0/0/event-channel") == b"junk"


def test_rsp_event_rearmed_after_each_response(rig: Any) -> None:
    dev, _be = rig()
    pb = dev.stream(0)
    for _ in range(3):
        pb.hw_param_query()
    page = pb.channel.ring_page  # type: ignore[union-attr]
    assert struct.unpack_from("<I", page, RSP_EVENT)[0] == pb.channel.ring.rsp_cons + 1  # type: ignore[union-attr]


def test_teardown_leaves_nothing(rig: Any, card: Sim) -> None:
    dev, be = rig()
    pb = dev.stream(0)
    pb.open(48000, "S16_LE", 2, 65536, 4096)
    dev.close()
    assert fe_states(dev)[-2:] == [5, 6]  # Closing, then Closed (SND-A-15)
    assert not be.streams  # the backend saw Closing and went back to InitWait
    assert card.mappings(granter=FE) == []
    assert [p for p in card.ports(FE) if p.state.name != "FREE"] == []
    assert card.grants(FE) == []
    with pytest.raises(NotConnected):
        pb.hw_param_query()


def test_reconnects_after_backend_restart(rig: Any, card: Sim) -> None:
    dev, be = rig()
    stream = dev.streams[0]
    old_core = stream.core
    be.close()
    be.teardown()  # the backend process went away and its successor starts over
    xs = card.domain(0).store
    xs.write(f"{be.be}/state", "1")
    be2 = MiniBackend(card).start()
    try:
        dev.wait_connected(10, generation=2)
        assert dev.streams[0] is stream  # callers' references survive
        assert stream.connected and stream.req_port and stream.ring_ref
        assert stream.core is not old_core  # a new connection: event ids restart (E-04)
        assert stream.hw_param_query().ok
        assert fe_states(dev)[-3:] == [1, 3, 4]  # disconnect -> Initialising, republish
    finally:
        dev.close()
        be2.close()
