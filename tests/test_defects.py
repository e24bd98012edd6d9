"""The defect catalogue of the reference backend: its shape, one sans-IO scenario per defect
showing that the bug changes what crosses the wire (responses, events, ring indices,
XenBus states, mappings), the CLI listing, and a few defects in a real backend process
under the reference frontend (a timeout, a SIGABRT crash, a hang)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from test_backend_stream import SPACE, FakeAudio, FakeMemory, open_

from harness.backends.reference import stream as stream_mod
from harness.backends.reference.channel import StreamChannel
from harness.backends.reference.defects import (
    AREAS,
    BY_NAME,
    CATALOGUE,
    CLAUSE_ID,
    NO_DEFECTS,
    Defects,
    UnknownDefect,
    lookup,
)
from harness.backends.reference.hw_space import HwParams
from harness.backends.reference.stream import StreamCore, StreamInfo
from harness.backends.reference.xenbus_be import BackendFsm, SetState
from harness.cli import main as cli_main
from harness.frontend.errors import RequestTimeout
from harness.rings import BackRing, EventConsumer, EventProducer, FrontRing, RingError
from harness.world.world import reference_world
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, Op, PcmFormat, Trigger
from protocol_models.xenbus import XenbusState as S

MS = 1_000_000
START, PAUSE, STOP = Trigger.START, Trigger.PAUSE, Trigger.STOP


# --- the catalogue -----------------------------------------------------------------------

def test_catalogue_is_large_and_covers_every_area():
    assert len(CATALOGUE) >= 25
    assert len(BY_NAME) == len(CATALOGUE)  # names unique
    for area in AREAS:
        assert sum(d.area == area for d in CATALOGUE) >= 2, area


def test_the_supervisor_relies_on_these_names():
    assert lookup("abort-on-trigger-before-open").area == "G"
    assert lookup("hang-on-hw-query").area == "G"


@pytest.mark.parametrize("defect", CATALOGUE, ids=lambda d: d.name)
def test_each_defect_is_well_formed(defect):
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", defect.name)
    assert defect.area in AREAS
    assert defect.clauses and all(CLAUSE_ID.fullmatch(c) for c in defect.clauses)
    # the first clause is of the defect's own area, except where a G defect breaks an
    # OPEN clause (C-15) first
    assert defect.clauses[0][4] == defect.area or defect.area == "G"
    assert defect.description and "\n" not in defect.description


def test_unknown_defects_are_named_with_close_matches():
    with pytest.raises(UnknownDefect, match=r"'hang-on-hw-qery'.*hang-on-hw-query"):
        Defects.of(["positive-status", "hang-on-hw-qery"])
    with pytest.raises(KeyError):  # a misspelt hook must not silently never fire
        NO_DEFECTS.has("no-such-hook")
    assert Defects.of(["positive-status"]).has("positive-status")
    assert not NO_DEFECTS and not NO_DEFECTS.has("positive-status")


# --- a world without I/O: one stream core on a real ring page and event page ---------------

class World:
    def __init__(self, defects: Defects, kind: str = "p") -> None:
        self.mem, self.audio = FakeMemory(), FakeAudio()
        self.core = StreamCore(StreamInfo("s", kind, SPACE), self.mem, self.audio,
                               defects=defects)
        ring_page = memoryview(bytearray(XEN_PAGE_SIZE))
        evt_page = memoryview(bytearray(XEN_PAGE_SIZE))
        self.front = FrontRing(ring_page)
        self.front.init_shared()
        self.consumer = EventConsumer(evt_page)
        back, events = BackRing(ring_page), EventProducer(evt_page)
        back.attach()
        events.attach()
        self.ch = StreamChannel(self.core, back, events)
        self.next_id = 0

    def send(self, *reqs: tuple[int, dict], now: int = 0) -> list[tuple[int, int, int]]:
        """Put the requests on the ring at once, let the backend serve, return the
        responses as (id, operation, status)."""
        for op, fields in reqs:
            fields.setdefault("id", self.next_id)
            self.next_id += 1
            self.front.put_request(codec.encode_req(op, **fields))
        self.front.push_requests()
        self.ch.service(now)
        out = []
        while self.front.unconsumed_responses():
            r = codec.decode_resp(self.front.get_response())
            out.append((r.id, r.operation, r.status))
        return out

    def call(self, op: int, now: int = 0, **fields) -> int | None:
        """One request; its status (None: no response at all)."""
        resps = self.send((op, fields), now=now)
        return resps[0][2] if resps else None

    def trigger(self, kind: int, now: int = 0) -> int | None:
        return self.call(Op.TRIGGER, now, type=kind)

    def open(self, **kw) -> int:
        return open_(self.core, self.mem, **kw)

    def events(self, now: int) -> list[tuple[int, int]]:
        self.ch.flush_events(now)
        return [(e.id, e.position) for e in map(codec.decode_evt, self.consumer.take_all())]


def fsm_actions(fsm: BackendFsm, actions) -> list[str]:
    """What crosses XenStore: state writes (and the connect/teardown they imply)."""
    return [f"state={a.state.name}" if isinstance(a, SetState) else type(a).__name__
            for a in actions if type(a).__name__ != "Log"]


def connected_fsm(d: Defects) -> BackendFsm:
    fsm = BackendFsm(d)
    fsm.start(True)
    fsm.frontend_state(S.Initialised, b"2")
    fsm.connect_result(True)
    assert fsm.state == S.Connected
    return fsm


Scenario = Callable[[Defects], object]
SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str) -> Callable[[Scenario], Scenario]:
    assert name in BY_NAME, name

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = fn
        return fn
    return register


# (A) XenBus ------------------------------------------------------------------------------

@scenario("skip-initwait")
def _(d):
    fsm = BackendFsm(d)
    return fsm_actions(fsm, fsm.start(True) + fsm.frontend_state(S.Initialised))


@scenario("no-initwait-after-fe-close")
def _(d):
    fsm = connected_fsm(d)
    return fsm_actions(fsm, fsm.frontend_state(S.Closing))


@scenario("ignore-fe-restart")
def _(d):
    fsm = connected_fsm(d)
    return fsm_actions(fsm, fsm.frontend_state(S.Initialising))


@scenario("no-closed-on-removal")
def _(d):
    fsm = connected_fsm(d)
    return fsm_actions(fsm, fsm.backend_nodes(False, S.Closing))


@scenario("require-version-node")
def _(d):
    fsm = BackendFsm(d)
    fsm.start(True)
    return fsm_actions(fsm, fsm.frontend_state(S.Initialised))  # Linux: no version node


# (B) rings -------------------------------------------------------------------------------

@scenario("no-req-event-rearm")
def _(d):
    w = World(d)
    kicks = []
    for i in range(3):  # one at a time, as Linux does
        w.front.put_request(codec.encode_req(Op.CLOSE, id=i))
        kicks.append(w.front.push_requests())  # True: the FE notifies the BE
        if kicks[-1]:
            w.ch.service(0)
    return kicks


@scenario("wrong-response-id")
def _(d):
    return World(d).send((Op.CLOSE, {"id": 41}))


@scenario("operation-not-echoed")
def _(d):
    return World(d).send((Op.CLOSE, {"id": 41}))


@scenario("duplicate-response")
def _(d):
    return World(d).send((Op.CLOSE, {"id": 5}), (Op.CLOSE, {"id": 6}))


@scenario("responses-out-of-order")
def _(d):
    return World(d).send(*[(Op.CLOSE, {}) for _ in range(3)])


@scenario("lose-request-under-load")
def _(d):
    return World(d).send(*[(Op.CLOSE, {}) for _ in range(8)])


@scenario("no-notify-after-response")
def _(d):
    w = World(d)
    w.front.put_request(codec.encode_req(Op.CLOSE))
    w.front.push_requests()
    return w.ch.service(0).notify


@scenario("reject-nonzero-reserved")
def _(d):
    w = World(d)
    raw = bytearray(codec.encode_req(Op.CLOSE))
    raw[4:8] = (-22 & 0xFFFFFFFF).to_bytes(4, "little")  # an old status left by Linux
    w.front.put_request(bytes(raw))
    w.front.push_requests()
    w.ch.service(0)
    return codec.decode_resp(w.front.get_response()).status


@scenario("event-overwrites-unconsumed")
def _(d):
    w = World(d, "c")
    assert w.open(period_sz=4) == 0  # one event per frame
    assert w.trigger(START) == 0
    w.ch.flush_events(MS)
    w.ch.flush_events(2 * MS)  # the FE has not consumed anything
    try:
        return len(w.consumer.take_all())
    except RingError as exc:
        return f"overwritten: {exc}"


# (C) buffers -----------------------------------------------------------------------------

@scenario("ignore-later-directory-pages")
def _(d):
    w = World(d)
    return w.open(buffer_sz=1025 * XEN_PAGE_SIZE, period_sz=0)  # 2 directory pages


@scenario("trust-offset-length")
def _(d):
    w = World(d)
    assert w.open(buffer_sz=8192) == 0
    return [w.call(Op.WRITE, offset=8000, length=400), w.call(Op.WRITE, offset=9000,
                                                              length=4)]


@scenario("keep-mapped-after-close")
def _(d):
    w = World(d)
    assert w.open() == 0
    assert w.call(Op.CLOSE) == 0
    mapped_after_close = len(w.mem.live)
    w.core.close()  # teardown releases everything, defect or not
    return mapped_after_close, len(w.mem.live)


@scenario("follow-cyclic-directory")
def _(d):
    w = World(d)
    ref = w.mem.next_ref
    data = w.mem.add()
    assert w.mem.add(codec.encode_page_directory(ref + 1, [data])) == ref + 1  # -> itself
    status = w.open(buffer_sz=4096, gref_directory=ref + 1)
    return status, len(w.mem.dir_reads)  # directory pages mapped (trace: map/unmap)


@scenario("reject-close-when-not-open")
def _(d):
    return World(d).call(Op.CLOSE)


@scenario("open-while-open-rejected")
def _(d):
    w = World(d)
    return [w.open(), w.open(), len(w.mem.live)]


# (D) triggers ----------------------------------------------------------------------------

def _triggers(d: Defects, *kinds: int) -> list[int | None]:
    w = World(d)
    assert w.open() == 0
    return [w.trigger(k) for k in kinds]


@scenario("start-after-stop-fails")
def _(d):
    return _triggers(d, START, STOP, START)


@scenario("start-while-paused-fails")
def _(d):
    return _triggers(d, START, PAUSE, START)


@scenario("stop-while-paused-fails")
def _(d):
    return _triggers(d, START, PAUSE, STOP)


@scenario("close-while-running-fails")
def _(d):
    w = World(d)
    assert w.open() == 0 and w.trigger(START) == 0
    return w.call(Op.CLOSE), w.core.state.name, len(w.mem.live)


@scenario("unknown-trigger-accepted")
def _(d):
    return _triggers(d, 7)


@scenario("no-drain-event")
def _(d):
    w = World(d, "p")
    assert w.open(period_sz=192) == 0 and w.trigger(START) == 0
    assert w.call(Op.WRITE, offset=0, length=400) == 0
    return w.events(10 * MS)  # 400 is off a period boundary


# (E) events ------------------------------------------------------------------------------

def _capture(d: Defects, **kw) -> World:
    w = World(d, "c")
    assert w.open(**kw) == 0 and w.trigger(START) == 0
    return w


@scenario("positions-modulo-buffer")
def _(d):
    return _capture(d, buffer_sz=768, period_sz=192).events(6 * MS)


@scenario("position-goes-back")
def _(d):
    return _capture(d, period_sz=192).events(4 * MS)


@scenario("events-while-paused")
def _(d):
    w = _capture(d, period_sz=192)
    assert w.trigger(PAUSE, MS // 2) == 0
    return w.events(10 * MS)


@scenario("events-while-stopped")
def _(d):
    w = _capture(d, period_sz=192)
    assert w.trigger(STOP, MS // 2) == 0
    return w.events(10 * MS)


@scenario("events-with-period-zero")
def _(d):
    return _capture(d, period_sz=0).events(100 * MS)


@scenario("event-id-gaps")
def _(d):
    w = _capture(d, period_sz=192)
    return w.events(MS) + w.events(2 * MS)


@scenario("event-ids-reset-on-open")
def _(d):
    w = _capture(d, period_sz=192)
    first = w.events(2 * MS)
    assert w.call(Op.CLOSE) == 0
    assert w.open(period_sz=192) == 0 and w.trigger(START, 10 * MS) == 0
    return first + w.events(12 * MS)


@scenario("wrong-cadence")
def _(d):
    return _capture(d, period_sz=192).events(4 * MS)


@scenario("flood-event-ring")
def _(d):
    return _capture(d, period_sz=192).events(MS)


@scenario("position-beyond-written")
def _(d):
    w = World(d, "p")
    assert w.open(period_sz=192) == 0 and w.trigger(START) == 0
    assert w.call(Op.WRITE, offset=0, length=384) == 0
    return w.events(4 * MS)


# (F) negotiation -------------------------------------------------------------------------

def _query(w: World, q: HwParams) -> tuple[int, HwParams]:
    w.front.put_request(codec.encode_req(Op.HW_PARAM_QUERY, **q._asdict()))
    w.front.push_requests()
    w.ch.service(0)
    r = codec.HW_PARAM_RESP.decode(w.front.get_response())
    return r.status, HwParams(*(getattr(r, f) for f in HwParams._fields))


FULL = SPACE.full_query()


@scenario("hw-query-wider-than-asked")
def _(d):
    return _query(World(d), FULL._replace(rates_min=44100, rates_max=44100))


@scenario("hw-query-not-idempotent")
def _(d):
    w = World(d)
    _, first = _query(w, FULL)
    _, again = _query(w, first)
    return first == again


@scenario("hw-query-success-on-empty")
def _(d):
    return _query(World(d), FULL._replace(formats=PcmFormat.S32_LE.mask))[0]


@scenario("hw-query-changes-state")
def _(d):
    w = World(d)
    assert w.open() == 0
    _query(w, FULL)
    return w.core.state.name, w.call(Op.WRITE, offset=0, length=4)


# (G) errors ------------------------------------------------------------------------------

@scenario("success-for-invalid-open")
def _(d):
    w = World(d)
    return w.open(rate=1), w.core.state.name


@scenario("positive-status")
def _(d):
    return World(d).trigger(START)  # not open


@scenario("non-errno-status")
def _(d):
    return World(d).trigger(START)


@scenario("unknown-op-no-response")
def _(d):
    w = World(d)
    w.front.put_request(codec.UNKNOWN_REQ.encode(operation=200, id=3))
    w.front.push_requests()
    w.ch.service(0)
    return w.front.unconsumed_responses()


class Aborted(BaseException):
    """Stands in for os.abort() in-process (a BaseException: the core turns Exceptions
    into -EIO)."""


@scenario("abort-on-trigger-before-open")
def _(d):
    with mock.patch.object(stream_mod.os, "abort", side_effect=Aborted):
        try:
            return World(d).trigger(START)
        except Aborted:
            return "abort()"


@scenario("hang-on-hw-query")
def _(d):
    w = World(d)
    answered = [len(w.send((Op.HW_PARAM_QUERY, FULL._asdict())))]
    answered.append(len(w.send((Op.CLOSE, {}))))
    return answered, w.ch.ring.req_cons  # the CLOSE is not even consumed


# (H) volume ------------------------------------------------------------------------------

def _volume_roundtrip(d: Defects) -> list[int]:
    w = World(d)
    assert w.open() == 0
    buf = w.mem.live[0].data
    buf[0:8] = (-1000).to_bytes(4, "little", signed=True) + \
        (-2000).to_bytes(4, "little", signed=True)
    buf[64:72] = b"\xee" * 8  # what the FE had there
    assert w.call(Op.SET_VOLUME, offset=0, length=8) == 0
    assert w.call(Op.GET_VOLUME, offset=64, length=8) == 0
    return [int.from_bytes(buf[64 + 4 * i:68 + 4 * i], "little", signed=True)
            for i in range(2)]


@scenario("get-volume-not-written")
def _(d):
    return _volume_roundtrip(d)


@scenario("set-volume-ignored")
def _(d):
    return _volume_roundtrip(d)


@scenario("volume-without-open-succeeds")
def _(d):
    return World(d).call(Op.GET_VOLUME, offset=0, length=8)


@scenario("volume-no-bounds-check")
def _(d):
    w = World(d)
    assert w.open(buffer_sz=8192) == 0
    return w.call(Op.SET_VOLUME, offset=8190, length=8)


def test_every_defect_has_a_scenario():
    assert sorted(SCENARIOS) == sorted(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_defect_changes_what_crosses_the_wire(name):
    correct = SCENARIOS[name](NO_DEFECTS)
    broken = SCENARIOS[name](Defects.of([name]))
    assert broken != correct, f"{name}: same observation with and without: {correct!r}"


#: What some defects do, spelled out (the scenario comparison above only shows a change).
@pytest.mark.parametrize("name, correct, broken", [
    ("skip-initwait", ["state=InitWait", "Connect"], []),
    ("no-initwait-after-fe-close", ["Disconnect", "state=InitWait"],
     ["Disconnect", "state=Closed"]),
    ("no-req-event-rearm", [True, True, True], [True, False, False]),
    ("wrong-response-id", [(41, Op.CLOSE, 0)], [(42, Op.CLOSE, 0)]),
    ("responses-out-of-order", [(0, 1, 0), (1, 1, 0), (2, 1, 0)],
     [(2, 1, 0), (1, 1, 0), (0, 1, 0)]),
    ("positions-modulo-buffer", [(i, 192 * (i + 1)) for i in range(6)],
     [(i, 192 * (i + 1) % 768) for i in range(6)]),
    ("event-id-gaps", [(0, 192), (1, 384)], [(0, 192), (2, 384)]),
    ("no-drain-event", [(0, 192), (1, 384), (2, 400)], [(0, 192), (1, 384)]),
    ("position-beyond-written", [(0, 192), (1, 384)], [(i, 192 * (i + 1)) for i in range(4)]),
    ("positive-status", -9, 9),
    ("non-errno-status", -9, -524),
    ("abort-on-trigger-before-open", -9, "abort()"),
    ("hang-on-hw-query", ([1, 1], 2), ([0, 0], 1)),
    ("follow-cyclic-directory", (-22, 1), (-22, 20_000)),
])
def test_defect_observations(name, correct, broken):
    assert SCENARIOS[name](NO_DEFECTS) == correct
    assert SCENARIOS[name](Defects.of([name])) == broken


# --- CLI ----------------------------------------------------------------------------------

def test_cli_lists_the_catalogue(capsys):
    assert cli_main(["defects"]) == 0
    out = capsys.readouterr().out
    for d in CATALOGUE:
        line = next(x for x in out.splitlines() if x.startswith(d.name + " "))
        assert f" {d.area} " in line and " ".join(d.clauses) in line
        assert line.endswith(d.description)
    assert cli_main(["defects", "--json", "--area", "g"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [x["name"] for x in data] == [d.name for d in CATALOGUE if d.area == "G"]
    assert data[0] == BY_NAME[data[0]["name"]].as_dict()


def test_cli_unknown_defect_is_a_one_line_error(capsys):
    assert cli_main(["defects", "hang-on-hw-qery"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean hang-on-hw-query" in err
    assert cli_main(["defects", "--area", "Z"]) == 2


def test_backend_process_rejects_an_unknown_defect():
    proc = subprocess.run([sys.executable, "-m", "harness.backends.reference",
                           "--defect", "positive-status", "--defect", "no-such-bug"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "'no-such-bug'" in proc.stderr


# --- in a real backend process, under the reference frontend -----------------------------

def test_no_req_event_rearm_makes_the_second_request_time_out(tmp_path: Path):
    with reference_world(tmp_path, defects=["no-req-event-rearm"]) as session:
        assert session.dev is not None
        stream = session.dev.stream("0/0")
        assert stream.hw_param_query().ok  # the first one is noticed
        with pytest.raises(RequestTimeout):
            stream.hw_param_query(timeout_ms=500)  # B-03: never noticed
        assert session.exit_status() is None


def test_abort_on_trigger_before_open_kills_the_backend_with_sigabrt(tmp_path: Path):
    with reference_world(tmp_path, defects=["abort-on-trigger-before-open"]) as session:
        assert session.dev is not None
        stream = session.dev.stream("0/0")
        assert stream.hw_param_query().ok  # alive and serving until then
        with pytest.raises(RequestTimeout):
            stream.trigger("START", timeout_ms=1000)
        assert session.backend.wait(10) == -signal.SIGABRT


def test_hang_on_hw_query_stops_answering_while_the_process_lives(tmp_path: Path):
    with reference_world(tmp_path, defects=["hang-on-hw-query"]) as session:
        assert session.dev is not None
        stream = session.dev.stream("0/0")
        with pytest.raises(RequestTimeout):
            stream.hw_param_query(timeout_ms=500)
        with pytest.raises(RequestTimeout):
            stream.trigger("STOP", timeout_ms=500)
        time.sleep(0.2)
        assert session.exit_status() is None  # a hang, not a crash
        # other streams are still served (until they send a query themselves)
        assert session.dev.stream("0/1").trigger("STOP").status == "-EBADF"  # not open
        stopped = session.stop_backend("test")
        # and it still exits cleanly on SIGTERM
        assert stopped is not None and stopped.status == 0 and not stopped.killed


def test_correct_session_has_no_defects(tmp_path: Path):
    with reference_world(tmp_path) as session:
        assert session.spec.backend.defects == ()
        assert session.dev is not None
        stream = session.dev.stream("0/0")
        assert stream.hw_param_query().ok and stream.hw_param_query().ok
