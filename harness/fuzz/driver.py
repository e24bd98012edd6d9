"""One fuzzed stream of the supervised backend: sends a request (as raw bytes, building the
buffer an OPEN names), checks the answer against the oracles and the stream model, and
checks the invariants between steps. The Hypothesis machine and the reproducers' replay
both drive it, so a replay judges exactly as the run that found the bug.

Each example is one supervisor case (``begin``/``end``): a CRASH or HANG is judged with
its evidence and the backend restarted before the next example.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.frontend import violations as V
from harness.frontend.errors import FrontendError, RequestTimeout
from harness.frontend.hostile import NO_SUCH_DOMID, DirShape, HostileBuffer, build_buffer
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import HW_PARAM_FIELDS, Response
from harness.judge.hw_query import describe, empty_problems, subset_problems
from harness.judge.status import status_problem
from harness.runner.supervisor import CaseRun, Supervisor
from harness.runner.verdicts import Outcome, Verdict
from harness.world.world import BackendStartError
from protocol_models import codec
from protocol_models.constants import Evt, Op, XsField, frame_size
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

from . import fields as F
from .model import Expect, State, StreamModel, disjoint_from_card, invalid_open
from .oracles import ORACLES, FuzzFinding, Problem, finding

#: Request ids of the fuzzer: away from the typed API's per-stream counter (SND-B-11).
ID_BASE = 0xC000
VOLUME_OPS = (Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE)
OPEN_FIELDS = ("pcm_rate", "pcm_format", "pcm_channels", "buffer_sz", "period_sz")
#: written over a GET_VOLUME region first: 1.5 million dB, a value no backend reports
SENTINEL = b"\x5a"
#: a volume read back may be quantised by the sound server (0.001 dB units)
VOLUME_TOLERANCE = 1000
#: the median step above which CUR_POS comes too rarely (the pacing judge's band, E-02),
#: and the steps it needs to be judged
CADENCE_HIGH = 1.5
CADENCE_MIN_STEPS = 2
DRAIN_MAX_S = 2.0
DRAIN_MARGIN_S = 0.5
RECONNECT_S = 5.0


@dataclass(frozen=True)
class BufferPlan:
    """The buffer an OPEN names: ``pages`` pages shared, a directory of ``shape``."""

    size: int
    shape: str  # a DirShape value
    pages: int
    readonly: bool = False
    foreign: bool = False
    keep_gref: bool = False  # the OPEN's own gref_directory is sent, not the directory's


@dataclass(frozen=True)
class Step:
    """One request as sent (id included). ``valid``: an OPEN or HW_PARAM_QUERY the stream
    must accept (the rest of the expectation follows from the bytes and the model)."""

    raw: bytes
    buffer: BufferPlan | None = None
    valid: bool = False
    #: octets written into the shared buffer at the request's offset before sending
    #: (SET_VOLUME values, MUTE flags)
    payload: bytes | None = None
    #: not a request: an action of the frontend or the toolstack (``wait:S``, ``drain``,
    #: ``fe-state:N``, ``remove-device``); ``raw`` is empty then
    action: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"raw": self.raw.hex(), "valid": self.valid,
                             "buffer": asdict(self.buffer) if self.buffer is not None
                             else None}
        if self.payload is not None:
            d["payload"] = self.payload.hex()
        if self.action is not None:
            d["action"] = self.action
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        buf = d.get("buffer")
        payload = d.get("payload")
        return cls(bytes.fromhex(d["raw"]), BufferPlan(**buf) if buf else None,
                   bool(d.get("valid")), bytes.fromhex(payload) if payload else None,
                   d.get("action"))

    def describe(self) -> str:
        if self.action is not None:
            return self.action
        rec = codec.decode_req(self.raw)
        op = Op(rec.operation).name if rec.operation in set(Op) else f"op {rec.operation}"
        extra = f" buffer={self.buffer.shape}" if self.buffer is not None else ""
        return f"{op} {self.raw.hex()}{extra}"


@dataclass
class Found:
    """One oracle's shortest failing sequence seen (Hypothesis shrinks towards it)."""

    problem: Problem
    steps: list[Step]
    nodeid: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return len(self.steps), sum(len(s.raw.rstrip(b"\0")) + len(s.action or "")
                                    for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"oracle": self.problem.oracle, "clauses": list(self.problem.clauses),
                "what": ORACLES[self.problem.oracle].what, "detail": self.problem.detail,
                "case": self.nodeid, "steps": [s.as_dict() for s in self.steps],
                "sequence_hex": [s.raw.hex() for s in self.steps],
                "evidence": {k: v for k, v in self.evidence.items() if v is not None}}


def keep_shortest(found: dict[str, Found], new: Found) -> None:
    old = found.get(new.problem.oracle)
    if old is None or new.size < old.size:
        found[new.problem.oracle] = new


@dataclass
class DriverConfig:
    stream: str = "0/0"
    request_timeout: float = 1.0  # a request unanswered this long is probed
    probe_timeout: float = 1.0
    leak_grace: float = 0.5  # unmaps may lag the response a little
    keep_passing_traces: bool = False


@dataclass
class Counters:
    requests: int = 0
    malformed: int = 0
    examples: int = 0
    #: requests executed per "<stream state>:<operation>" (the model's state before)
    coverage: dict[str, int] = field(default_factory=dict)


@dataclass
class FuzzDriver:
    sup: Supervisor
    config: DriverConfig = field(default_factory=DriverConfig)
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.case: CaseRun | None = None
        self.model = StreamModel(playback=True)
        self.steps: list[Step] = []
        self.buffer: HostileBuffer | None = None
        self.failed: FuzzFinding | None = None
        self._next_id = ID_BASE
        self._violations_seen = 0
        #: (sent, answered) of OPENs sent to a stream that was not closed (CLOCK_MONOTONIC)
        self._open_windows: list[tuple[int, int]] = []
        self._should_seen = 0
        self._reset_open()
        #: a valid HW_PARAM_QUERY of the stream's whole space, as the typed API builds it
        #: (kept from the first probe)
        self.query_template: bytes | None = None
        #: per oracle, the shortest failing sequence seen (Hypothesis shrinks towards it)
        self.found: dict[str, Found] = {}
        #: per oracle, when (time.monotonic()) it first broke: the catalogue's catch time
        self.first_at: dict[str, float] = {}
        #: per oracle, the first failing sequence (before any shrinking): what a seed
        #: reproduces
        self.first_steps: dict[str, list[Step]] = {}
        #: per oracle, the example (1, 2, ...) that first broke it
        self.first_example: dict[str, int] = {}
        self.failures = 0  # examples that broke an oracle
        #: edges of an instrumented backend (harness.fuzz.coverage), and whether they
        #: steer the search (Hypothesis target())
        self.edge_coverage: Any = None
        self.feedback = False
        self.last_oracle: str | None = None
        self.last_verdict: Verdict | None = None

    # -- the example's life ------------------------------------------------------------

    @property
    def stream(self) -> FrontendStream:
        return self.sup.dev.stream(self.config.stream)

    def begin(self, nodeid: str) -> None:
        try:
            self.case = self.sup.begin_case(nodeid)
        except BackendStartError as exc:
            # a restart that fails: the backend no longer connects (its own finding; the
            # campaign stops, nothing else can run)
            self.record_start_failure(exc, nodeid)
            raise
        self.counters.examples += 1
        stream = self.stream
        self.model = StreamModel(playback=stream.type == "p")
        self.steps, self.failed, self._next_id = [], None, ID_BASE
        self._violations_seen = 0
        self._open_windows = []
        self.lifecycle_actions = 0
        self._should_seen = len(self.stream.violations)
        self._reset_open()
        self.last_answer: dict[str, int] | None = None
        stream.collect(64, 0)  # strays of an earlier example are not this one's
        self._quiet(codec.encode_req(Op.CLOSE, id=ID_BASE - 1))  # a known start: closed

    def end(self) -> FuzzFinding | None:
        """CLOSE (unjudged), the buffer freed, the case judged by the supervisor; the
        example's finding recorded. Returns the supervisor's verdict as a finding when no
        oracle broke during the example but the verdict is not PASS."""
        assert self.case is not None
        try:
            if self.sup.world.exit_status() is None and self.failed is None:
                self._quiet(codec.encode_req(Op.CLOSE, id=self.take_id()))
        finally:
            self._free_buffer()
        verdict = self.sup.end_case(self.case)
        if self.failed is not None and self.failed.oracle == "hang" \
                and verdict.outcome not in (Outcome.HANG, Outcome.CRASH):
            self.sup.restart("fuzz: the backend stopped answering")  # a fresh one next
        if verdict.outcome is Outcome.PASS and self.failed is None \
                and not self.config.keep_passing_traces:
            with contextlib.suppress(OSError):
                self.sup.case_trace_path(self.case.nodeid).unlink()
        self.last_verdict = verdict
        late = None
        if self.failed is None:
            late = self.failed = self.verdict_finding(verdict)
        if self.failed is not None:
            evidence = {"verdict": verdict.outcome.value, "verdict_detail": verdict.detail,
                        "trace": str(self.sup.case_trace_path(self.case.nodeid)),
                        **self.failed.evidence}
            if self.failed.oracle in ("crash", "hang"):  # what the backend said last
                evidence["log"] = self.sup.world.tail(
                    self.sup.log_text(self.case.log_offset)) or evidence.get("log")
            self.failures += 1
            self.last_oracle = self.failed.oracle
            self.first_at.setdefault(self.failed.oracle, time.monotonic())
            self.first_steps.setdefault(self.failed.oracle, list(self.steps))
            self.first_example.setdefault(self.failed.oracle, self.counters.examples)
            keep_shortest(self.found, Found(Problem.of(self.failed), list(self.steps),
                                            self.case.nodeid, evidence))
        return late

    def record_start_failure(self, exc: BaseException, nodeid: str) -> None:
        self.first_at.setdefault("connect", time.monotonic())
        keep_shortest(self.found, Found(
            Problem("connect", str(exc).splitlines()[0]), list(self.steps), nodeid,
            {"log": self.sup.world.tail(self.sup.log_text())}))

    def violations(self) -> list[V.Violation]:
        """The MUST/REF violations the frontend recorded in this example, as the
        supervisor judges them, less the ones a race of ours explains (:meth:`_excused`)."""
        dev = self.sup.world.dev
        if dev is None or self.case is None:
            return []
        return [v for v in dev.violations if v.t_ns >= self.case.started_ns
                and v.kind.level in ("MUST", "REF")
                and v.kind is not V.LATE_RESPONSE and not self._excused(v)]

    def _excused(self, v: V.Violation) -> bool:
        """A CUR_POS of the stream's previous run that arrived while an OPEN we sent to a
        stream that may be playing was in flight: the frontend counts it as "before
        START" of the new OPEN, yet the backend sent it before it saw the OPEN."""
        if v.kind is not V.EVENT_BEFORE_START:
            return False
        return any(t0 <= v.t_ns <= t1 for t0, t1 in self._open_windows)

    def verdict_finding(self, verdict: Verdict) -> FuzzFinding | None:
        """The supervisor's verdict as a finding, when no oracle caught it first."""
        if verdict.outcome is Outcome.PASS:
            return None
        if verdict.outcome is Outcome.FAIL and verdict.findings \
                and all(f.kind == "protocol-violation" for f in verdict.findings) \
                and not self.violations():
            return None  # only the violations excused above
        oracle = {Outcome.CRASH: "crash", Outcome.HANG: "hang"}.get(verdict.outcome,
                                                                       "verdict")
        return finding(oracle, f"{verdict.outcome.value}: {verdict.detail}",
                       signal=verdict.signal, log=verdict.log_excerpt)

    # -- requests ------------------------------------------------------------------------

    def request(self, raw: bytes, *, buffer: BufferPlan | None = None, valid: bool = False,
                malformed: bool = False) -> Response | None:
        """Give ``raw`` the next id and execute it."""
        if malformed:
            self.counters.malformed += 1
        return self.execute(Step(F.with_id(raw, self.take_id()), buffer, valid))

    def execute_request(self, raw: bytes, *, payload: bytes) -> Response | None:
        """A request whose region of the buffer is written with ``payload`` first."""
        return self.execute(Step(F.with_id(raw, self.take_id()), payload=payload))

    def execute(self, step: Step) -> Response | None:
        """Send one step and check its answer; an oracle broken is raised."""
        self.steps.append(step)
        try:
            return self._execute(step)
        except FuzzFinding as exc:
            self.failed = exc
            raise

    def _execute(self, step: Step) -> Response | None:
        if step.action is not None:
            self._action(step.action)
            return None
        raw = step.raw
        rec = codec.decode_req(raw)
        op = rec.operation
        buf_sz = 0
        if step.payload is not None and self.buffer is not None and not self.buffer.freed:
            self._poke(getattr(rec, "offset", 0), step.payload)
        if op == Op.GET_VOLUME:
            self._poke(getattr(rec, "offset", 0), SENTINEL * (4 * self.channels))
        if op == Op.OPEN:
            buf_sz = rec.buffer_sz
            self._free_buffer()  # Linux frees the old buffer before a new OPEN (C-13)
            if step.buffer is not None:
                self.buffer = self._build(step.buffer)
                if not step.buffer.keep_gref:
                    raw = F.with_gref_directory(raw, self.buffer.gref_directory)
        m = self.model
        key = f"{m.state.value}:{Op(op).name if op in set(Op) else 'unknown-op'}"
        self.counters.coverage[key] = self.counters.coverage.get(key, 0) + 1
        exp = m.expect(op, valid_open=step.valid, valid_query=step.valid,
                       offset=getattr(rec, "offset", 0), length=getattr(rec, "length", 0),
                       trigger=getattr(rec, "type", 0))
        t_sent = time.monotonic_ns()
        resp = self._exchange(raw, rec.id, op)
        if op == Op.OPEN and m.state is not State.CLOSED:
            self._open_windows.append((t_sent, time.monotonic_ns()))
        ok = resp.status_code == 0
        if exp.expect is Expect.SUCCESS and not ok:
            raise finding("refused-valid", f"{step.describe()} answered {resp.status} "
                          f"while {m.state.value}: {exp.why} must succeed ({exp.clause})",
                          status=resp.status_code)
        if exp.expect is Expect.FAILURE and ok:
            oracle = "bounds" if op in (Op.READ, Op.WRITE, *VOLUME_OPS) \
                else "accepted-invalid"
            raise finding(oracle, f"{step.describe()} succeeded while {m.state.value}: "
                          f"{exp.why} must fail ({exp.clause})")
        if op == Op.OPEN and ok and not step.valid:
            why = invalid_open(rec, self.stream.config.hw)
            if why is not None:
                raise finding("invalid-open", f"{step.describe()} succeeded: {why} "
                              "(SHOULD be rejected, SND-C-15)")
        known = m.state is not State.UNKNOWN
        m.after(op, ok, buffer_sz=buf_sz, valid_open=step.valid,
                trigger=getattr(rec, "type", 0))
        self._after(step, rec, resp, known)
        if (op == Op.OPEN and not ok) or op == Op.CLOSE:
            self._free_buffer()  # revoked after the response, whatever the status (C-12)
        return resp

    # -- what one answered request tells ------------------------------------------------

    def _reset_open(self) -> None:
        """Nothing known of an OPEN in force."""
        self.open_fields: dict[str, int] | None = None  # a valid OPEN's, answered 0
        self.written = 0  # octets WRITE delivered since that OPEN (E-07)
        self.evt_mark = len(self.stream.events) if self.case is not None else 0
        self.volume_set: list[int] | None = None

    @property
    def channels(self) -> int:
        return self.open_fields["pcm_channels"] if self.open_fields else 1

    def _after(self, step: Step, rec: Any, resp: Response, known: bool) -> None:
        op, ok = rec.operation, resp.status_code == 0
        if op == Op.OPEN:
            self._reset_open()
            if ok and step.valid:
                self.open_fields = {k: getattr(rec, k) for k in OPEN_FIELDS}
        elif op == Op.CLOSE:
            self._reset_open()
        elif op == Op.WRITE and ok and self.open_fields is not None:
            self.written += rec.length
        elif op == Op.HW_PARAM_QUERY:
            self._judge_query(rec, resp)
        elif op in (Op.SET_VOLUME, Op.GET_VOLUME) and ok and known \
                and self.open_fields is not None and self.model.is_open:
            self._judge_volume(step, rec)

    def _judge_query(self, rec: Any, resp: Response) -> None:
        asked = {k: getattr(rec, k) for k in HW_PARAM_FIELDS}
        hw = self.stream.config.hw
        previous, self.last_answer = self.last_answer, None
        if resp.status_code != 0:
            return
        answer = resp.hw_param or {}
        empty = empty_problems(answer)
        if empty:
            raise finding("hw-query", f"HW_PARAM_QUERY answered 0 with an empty space "
                          f"({'; '.join(empty)}) (SND-F-02, F-06)", answer=answer)
        disjoint = disjoint_from_card(asked, hw)
        if disjoint is not None:
            raise finding("hw-query", f"HW_PARAM_QUERY of an empty intersection ({disjoint}) "
                          "answered 0 (SHOULD fail, SND-F-06)", answer=answer)
        outside = subset_problems(answer, asked, hw.formats_mask)
        if outside:
            raise finding("hw-query", "HW_PARAM_QUERY answer not inside the request: "
                          + "; ".join(outside) + " (SND-F-02)", answer=answer, asked=asked)
        if previous is not None and asked == previous and answer != previous:
            raise finding("hw-query", "re-querying with the previous answer changed it: "
                          f"{describe(previous)} -> {describe(answer)} (not a fixpoint, "
                          "SND-F-05)", answer=answer, asked=asked)
        self.last_answer = dict(answer)

    def _judge_volume(self, step: Step, rec: Any) -> None:
        n = self.channels
        if rec.length < 4 * n:
            return  # H-02: a shorter region is the backend's to refuse or not
        got = self._peek(rec.offset, 4 * n)
        if got is None:
            return
        if rec.operation == Op.SET_VOLUME:
            self.volume_set = list(struct.unpack(f"<{n}i", got))
            return
        if got == SENTINEL * (4 * n):
            raise finding("volume", f"GET_VOLUME [{rec.offset}, +{rec.length}) answered 0 "
                          "but wrote no values (SND-H-03)")
        values = list(struct.unpack(f"<{n}i", got))
        if self.volume_set is not None and any(
                abs(a - b) > VOLUME_TOLERANCE
                for a, b in zip(values, self.volume_set, strict=False)):
            raise finding("volume", f"GET_VOLUME gave {values} after SET_VOLUME "
                          f"{self.volume_set} (SND-H-03: SET_VOLUME reads the values)")

    def _poke(self, offset: int, data: bytes) -> None:
        buf = self.buffer
        if buf is None or buf.freed or buf.buf_pages is None:
            return
        size = len(buf.buf_pages.view)
        if 0 <= offset < size:
            with self.sup.dev.hv_lock:
                buf.write(offset, data[:size - offset])

    def _peek(self, offset: int, length: int) -> bytes | None:
        buf = self.buffer
        if buf is None or buf.freed or buf.buf_pages is None \
                or offset + length > len(buf.buf_pages.view):
            return None
        with self.sup.dev.hv_lock:
            return buf.read(offset, length)

    # -- actions (steps that are not requests) -------------------------------------------

    def _action(self, action: str) -> None:
        name, _, arg = action.partition(":")
        if name == "wait":
            time.sleep(min(float(arg), 1.0))
        elif name == "drain":
            self._drain()
        elif name == "fe-state":
            self._fe_state(int(arg))
        elif name == "remove-device":
            self._remove_device()
        else:
            raise ValueError(f"unknown fuzz action {action!r}")

    def byte_rate(self) -> float:
        f = self.open_fields
        if f is None:
            return 0.0
        try:
            return frame_size(f["pcm_format"], f["pcm_channels"]) * f["pcm_rate"]
        except ValueError:
            return 0.0

    def _drain(self) -> None:
        """While RUNNING (the model sure of it): the position must reach the octets
        written (D-06), within their playing time and a margin."""
        if self.model.state is not State.RUNNING or self.open_fields is None \
                or not self.model.playback or not self.written \
                or not self.open_fields["period_sz"]:
            return
        rate = self.byte_rate()
        if not rate:
            return
        stream = self.stream
        pos0 = stream.position or 0
        f = self.open_fields
        frame = frame_size(f["pcm_format"], f["pcm_channels"])
        target = self.written - self.written % frame  # positions are whole frames (E-03)
        budget = min(DRAIN_MAX_S, max(0, target - pos0) / rate + DRAIN_MARGIN_S)
        stream.wait_for(lambda: (stream.position or 0) >= target, budget)
        pos = stream.position or 0
        if pos < target:
            raise finding("drain", f"{target} octets written and the stream running, the "
                          f"position stayed at {pos} for {budget:.2f} s (SND-D-06: CUR_POS "
                          "must advance until everything written has played)",
                          position=pos, written=target)

    def _fe_state(self, state: int) -> None:
        """The frontend going Initialising (restart), Closing or Closed behind the
        driver's back: the backend must go back to InitWait so that it reconnects
        (A-16, A-17)."""
        dev = self.sup.dev
        gen = dev.generation
        self._free_buffer()
        dev.store.write(f"{dev.fe_path}/{XsField.STATE}", str(state))
        deadline = time.monotonic() + RECONNECT_S
        while time.monotonic() < deadline:
            if dev.generation > gen and dev.state == XenbusState.Connected \
                    and all(s.connected for s in dev.streams):
                break
            time.sleep(0.02)
        else:
            dev.close()  # the supervisor restarts everything before the next example
            raise finding("lifecycle", f"FE state {state} written while connected: no "
                          f"reconnection within {RECONNECT_S:g} s (the backend must go "
                          "back to InitWait, SND-A-16/A-17)", be_state=self._be_state())
        self.model = StreamModel(playback=self.stream.type == "p")  # a new connection
        self._reset_open()
        self.last_answer = None

    def _remove_device(self) -> None:
        """Toolstack removal (online 0, state 5): BE Closed within 10 s (A-18); then the
        world is brought up again."""
        from harness.toolstack.apply import remove_device
        from harness.toolstack.plan import plan_removal

        w = self.sup.config.world
        self._free_buffer()
        self.sup.dev.close()
        tool = self.sup.world.platform.domain(0)
        try:
            removed = remove_device(tool.store, plan_removal(w.frontend_domid,
                                                             w.backend_domid, w.devid))
        finally:
            tool.close()
        if not removed.reached_closed:
            raise finding("lifecycle", "toolstack removal: BE state not Closed within "
                          f"10 s (last {removed.last_state!r}, SND-A-18)")
        self.sup.restart("fuzz: the device was removed")
        self.model = StreamModel(playback=self.stream.type == "p")
        self._reset_open()
        self.last_answer = None

    def _be_state(self) -> str | None:
        dev = self.sup.dev
        try:
            return dev.store.read(f"{dev.be_path}/{XsField.STATE}").decode(errors="replace")
        except XsError:
            return None

    def _exchange(self, raw: bytes, rid: int, op: int) -> Response:
        stream = self.stream
        self.counters.requests += 1
        t0 = time.monotonic()
        stream.send_raw(raw)
        got = stream.collect(1, self.config.request_timeout)
        if not got:
            self.check_alive(time.monotonic() - t0 < self.config.request_timeout)
            if not self.probe_answers():
                self.check_alive(True)
                raise finding("hang", f"no response to {_name(op)} id {rid} within "
                              f"{self.config.request_timeout:g} s and none to a probe "
                              "HW_PARAM_QUERY; the process is alive")
            raise finding("no-response", f"no response to {_name(op)} id {rid} within "
                          f"{self.config.request_timeout:g} s, yet the backend answers "
                          "a probe")
        resp = got[0]
        if resp.id != rid or resp.operation != op:
            raise finding("echo", f"{_name(op)} id {rid} answered with id {resp.id}, "
                          f"operation {resp.operation}", response=resp.raw.hex())
        problem = status_problem(resp.status_code)
        if problem is not None:
            raise finding("status", f"{_name(op)} id {rid}: {problem}",
                          status=resp.status_code)
        return resp

    # -- invariants ----------------------------------------------------------------------

    def check_invariants(self) -> None:
        try:
            self._invariants()
        except FuzzFinding as exc:
            self.failed = exc
            raise

    def _invariants(self) -> None:
        self.check_alive(False)
        if not self.probe_answers():
            self.check_alive(True)
            raise finding("hang", "a probe HW_PARAM_QUERY got no answer within "
                          f"{self.config.probe_timeout:g} s; the process is alive")
        strays = self.stream.collect(64, 0)
        if strays:
            raise finding("echo", f"{len(strays)} response(s) nobody asked for: ids "
                          f"{[r.id for r in strays]}")
        assert self.case is not None
        found = self.violations()
        if len(found) > self._violations_seen:
            new = found[self._violations_seen]
            self._violations_seen = len(found)
            raise finding("violation", f"{len(found)} protocol violation(s) recorded by the "
                          f"frontend, first: {new.kind.name} ({', '.join(new.clauses)}): "
                          f"{new.message}", kind=new.kind.name)
        self._check_events()
        self._check_grants()

    def _check_events(self) -> None:
        """CUR_POS since the OPEN in force: inside the data written (E-07), advancing
        (E-01), about one period apart (E-02); none while stopped or paused (E-06)."""
        stream = self.stream
        should = stream.violations[self._should_seen:]
        self._should_seen = len(stream.violations)
        for v in should:
            if v.kind in (V.EVENT_WHILE_STOPPED,):
                raise finding("event-state", f"{v.message} (SND-E-06: none while stopped "
                              "or paused)", kind=v.kind.name)
        f = self.open_fields
        if f is None or self.model.state is State.UNKNOWN:
            return
        pos = [e.position for e in stream.events[self.evt_mark:]
               if e.type == Evt.CUR_POS and e.position is not None]
        if not pos:
            return
        if self.model.playback and max(pos) > self.written:
            raise finding("position", f"CUR_POS {max(pos)} past the {self.written} octets "
                          "written since OPEN (SND-E-07)", positions=pos[-8:])
        steps = [b - a for a, b in itertools.pairwise(pos)]
        if 0 in steps:
            raise finding("position", f"CUR_POS repeated position {pos[steps.index(0)]} "
                          "(SND-E-01: sent when the position has advanced)",
                          positions=pos[-8:])
        period = f["period_sz"]
        # the last step may be a drain's partial period
        inner = steps[:-1] if pos[-1] == self.written else steps
        if period and len(inner) >= CADENCE_MIN_STEPS:
            med = statistics.median(inner)
            # the high side only: a run of data ended off a period boundary (and written
            # again) makes short steps the spec allows
            if med > CADENCE_HIGH * period:
                raise finding("cadence", f"median CUR_POS step {med:g} octets over "
                              f"{len(inner)} steps for period_sz {period} (SND-E-02: about "
                              "one event per period)", steps=inner[-16:])

    def check_alive(self, wait: bool) -> None:
        """A CRASH finding when the process is gone (``wait``: give a death that released
        a request a moment to be reaped)."""
        deadline = time.monotonic() + (0.5 if wait else 0)
        while True:
            status = self.sup.world.exit_status()
            if status is not None:
                from harness.world.backend_proc import status_text

                raise finding("crash", f"the backend {status_text(status)}", status=status)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    def probe_answers(self) -> bool:
        stream = self.stream
        try:
            resp = stream.hw_param_query(timeout_ms=max(1, int(self.config.probe_timeout
                                                               * 1000)))
        except RequestTimeout:
            return False
        except FrontendError:
            self.check_alive(True)
            raise
        problem = status_problem(resp.status_code)
        if problem is not None:
            raise finding("status", f"probe HW_PARAM_QUERY: {problem}",
                          status=resp.status_code)
        if self.query_template is None and resp.request is not None and resp.ok:
            self.query_template = resp.request.raw
        return True

    def allowed_refs(self) -> set[int]:
        """What the backend may map: every connected stream's ring and event page, the
        typed API's buffers, and this stream's buffer while it may be open."""
        dev = self.sup.world.dev
        refs: set[int] = set()
        for s in dev.streams if dev is not None else ():
            if s.connected:
                refs |= {s.ring_ref, s.evt_ring_ref}
            if s.shbuf is not None and not s.shbuf.freed:
                refs |= set(s.shbuf.buf_grefs) | set(s.shbuf.dir_grefs)
        if self.buffer is not None and not self.buffer.freed:
            refs |= set(self.buffer.buf_grefs) | set(self.buffer.dir_grefs)
        return refs

    def _check_grants(self) -> None:
        acc = self.sup.world.accounting
        # UNKNOWN: the spec does not say whether the last request released the old buffer
        # (C-13: a failed OPEN on an open stream): nothing is expected until OPEN or CLOSE
        # settle it; a mapping kept for good is still caught then, or by the case's leak
        # check
        if acc is None or self.model.state is State.UNKNOWN:
            return
        w = self.sup.config.world
        deadline = time.monotonic() + self.config.leak_grace
        while True:
            allowed = self.allowed_refs()
            extra = sorted({m.ref for m in acc.mappings(granter=w.frontend_domid,
                                                        mapper=w.backend_domid)
                            if m.ref not in allowed})
            if not extra:
                return
            if time.monotonic() >= deadline:
                raise finding("grant", f"the backend maps frontend grefs {extra} outside "
                              f"the current buffer (stream {self.model.state.value})",
                              refs=extra)
            time.sleep(0.05)

    # -- internals -----------------------------------------------------------------------

    def take_id(self) -> int:
        rid, self._next_id = self._next_id, (self._next_id + 1) & F.ID_MAX
        return rid

    def _quiet(self, raw: bytes) -> None:
        """A housekeeping request: answered or not, it is not judged here (the invariants
        and the supervisor judge the backend afterwards)."""
        with contextlib.suppress(FrontendError):
            stream = self.stream
            stream.send_raw(raw)
            stream.collect(1, self.config.request_timeout)

    def _build(self, plan: BufferPlan) -> HostileBuffer:
        dev = self.sup.dev
        grantee = NO_SUCH_DOMID if plan.foreign else None
        return build_buffer(dev.domain.grants, dev.backend_id, max(1, plan.size),
                            DirShape(plan.shape), grantee=grantee, readonly=plan.readonly,
                            npages=plan.pages, lock=dev.hv_lock)

    def _free_buffer(self) -> None:
        buf, self.buffer = self.buffer, None
        if buf is not None:
            buf.free()  # under the device's hv_lock (given at build)


def _name(op: int) -> str:
    return Op(op).name if op in set(Op) else f"operation {op}"
