"""One fuzzed stream of the supervised backend: sends a request (as raw bytes, building the
buffer an OPEN names), checks the answer against the oracles and the stream model, and
checks the invariants between steps. The Hypothesis machine and the reproducers' replay
both drive it, so a replay judges exactly as the run that found the bug.

Each example is one supervisor case (``begin``/``end``): a CRASH or HANG is judged with
its evidence and the backend restarted before the next example.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.frontend.errors import FrontendError, RequestTimeout
from harness.frontend.hostile import NO_SUCH_DOMID, DirShape, HostileBuffer, build_buffer
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import Response
from harness.judge.status import status_problem
from harness.runner import judge
from harness.runner.supervisor import CaseRun, Supervisor
from harness.runner.verdicts import Outcome, Verdict
from protocol_models import codec
from protocol_models.constants import Op

from . import fields as F
from .model import Expect, StreamModel
from .oracles import ORACLES, FuzzFinding, Problem, finding

#: Request ids of the fuzzer: away from the typed API's per-stream counter (SND-B-11).
ID_BASE = 0xC000


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

    def as_dict(self) -> dict[str, Any]:
        return {"raw": self.raw.hex(), "valid": self.valid,
                "buffer": asdict(self.buffer) if self.buffer is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        buf = d.get("buffer")
        return cls(bytes.fromhex(d["raw"]), BufferPlan(**buf) if buf else None,
                   bool(d.get("valid")))

    def describe(self) -> str:
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
        return len(self.steps), sum(len(s.raw.rstrip(b"\0")) for s in self.steps)

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
        #: a valid HW_PARAM_QUERY of the stream's whole space, as the typed API builds it
        #: (kept from the first probe)
        self.query_template: bytes | None = None
        #: per oracle, the shortest failing sequence seen (Hypothesis shrinks towards it)
        self.found: dict[str, Found] = {}
        self.last_verdict: Verdict | None = None

    # -- the example's life ------------------------------------------------------------

    @property
    def stream(self) -> FrontendStream:
        return self.sup.dev.stream(self.config.stream)

    def begin(self, nodeid: str) -> None:
        self.case = self.sup.begin_case(nodeid)
        self.counters.examples += 1
        stream = self.stream
        self.model = StreamModel(playback=stream.type == "p")
        self.steps, self.failed, self._next_id = [], None, ID_BASE
        self._violations_seen = 0
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
            keep_shortest(self.found, Found(Problem.of(self.failed), list(self.steps),
                                            self.case.nodeid, evidence))
        return late

    def verdict_finding(self, verdict: Verdict) -> FuzzFinding | None:
        """The supervisor's verdict as a finding, when no oracle caught it first."""
        if verdict.outcome is Outcome.PASS:
            return None
        oracle = {Outcome.CRASH: "crash", Outcome.HANG: "hang"}.get(verdict.outcome,
                                                                       "verdict")
        return finding(oracle, f"{verdict.outcome.value}: {verdict.detail}",
                       signal=verdict.signal, log=verdict.log_excerpt)

    # -- requests ------------------------------------------------------------------------

    def request(self, raw: bytes, *, buffer: BufferPlan | None = None, valid: bool = False,
                malformed: bool = False) -> Response:
        """Give ``raw`` the next id and execute it."""
        if malformed:
            self.counters.malformed += 1
        return self.execute(Step(F.with_id(raw, self.take_id()), buffer, valid))

    def execute(self, step: Step) -> Response:
        """Send one step and check its answer; an oracle broken is raised."""
        self.steps.append(step)
        try:
            return self._execute(step)
        except FuzzFinding as exc:
            self.failed = exc
            raise

    def _execute(self, step: Step) -> Response:
        raw = step.raw
        rec = codec.decode_req(raw)
        op = rec.operation
        buf_sz = 0
        if op == Op.OPEN:
            buf_sz = rec.buffer_sz
            self._free_buffer()  # Linux frees the old buffer before a new OPEN (C-13)
            if step.buffer is not None:
                self.buffer = self._build(step.buffer)
                if not step.buffer.keep_gref:
                    raw = F.with_gref_directory(raw, self.buffer.gref_directory)
        m = self.model
        exp = m.expect(op, valid_open=step.valid, valid_query=step.valid,
                       offset=getattr(rec, "offset", 0), length=getattr(rec, "length", 0),
                       trigger=getattr(rec, "type", 0))
        resp = self._exchange(raw, rec.id, op)
        ok = resp.status_code == 0
        if exp.expect is Expect.SUCCESS and not ok:
            raise finding("refused-valid", f"{step.describe()} answered {resp.status} "
                          f"while {m.state.value}: {exp.why} must succeed ({exp.clause})",
                          status=resp.status_code)
        if exp.expect is Expect.FAILURE and ok:
            oracle = "bounds" if op in (Op.READ, Op.WRITE) else "accepted-invalid"
            raise finding(oracle, f"{step.describe()} succeeded while {m.state.value}: "
                          f"{exp.why} must fail ({exp.clause})")
        m.after(op, ok, buffer_sz=buf_sz, valid_open=step.valid,
                trigger=getattr(rec, "type", 0))
        if (op == Op.OPEN and not ok) or op == Op.CLOSE:
            self._free_buffer()  # revoked after the response, whatever the status (C-12)
        return resp

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
        found = judge.violations(self.sup.world.dev, self.case.started_ns)
        if len(found) > self._violations_seen:
            new = found[self._violations_seen]
            self._violations_seen = len(found)
            raise finding("violation", new.detail, kind=new.kind)
        self._check_grants()

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
        if acc is None:
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
