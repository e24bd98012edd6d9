"""The fast mode (``sndif-harness fuzz --mode requests``): malformed requests on a stream
that is not open, pipelined a ring's worth at a time, every answer checked, with no
per-example restart. This is the loop the issue's throughput target (≥ 1,000 checked
malformed requests per second) is about.

Requests are drawn with a seeded ``random.Random`` from the same derived tables as the
Hypothesis strategies (:mod:`.fields`): Hypothesis costs ~100 µs a draw, too much here.
Every request is one no backend may accept on a closed stream (READ/WRITE, unknown
operations and trigger types, and defined ones with hostile fields and reserved bytes),
besides CLOSE and HW_PARAM_QUERY (either answer, SND-C-12, F-06). One supervisor case
per ``case_seconds``: the invariants and the supervisor's verdict close each case.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.frontend.errors import FrontendError
from harness.judge.status import status_problem
from protocol_models import codec
from protocol_models.constants import XENSND_RING_SIZE, Op, Trigger

from . import fields as F
from .driver import FuzzDriver, Step
from .model import Expect, StreamModel
from .oracles import FuzzFinding, finding

_OPS = [int(o) for o in Op if o != Op.OPEN]  # an OPEN could open the stream
_EDGE = (0, 1, 2, 63, 64, 4095, 4096, 4097, 65535, 65536, 65537)


def _value(rng: random.Random, maximum: int) -> int:
    r = rng.random()
    if r < 0.5:
        return rng.choice([v for v in (*_EDGE, maximum - 1, maximum) if v <= maximum])
    return rng.randint(0, maximum)


def draw_request(rng: random.Random) -> bytes:
    """A request for a closed stream: an operation (defined but OPEN, or unknown), every
    integer field at its edges or random, reserved bytes set one time in four."""
    op = rng.choice(_OPS) if rng.random() < 0.7 else rng.choice(F.UNKNOWN_OPS)
    values: dict[str, object] = {}
    for f in F.INT_FIELDS.get(op, ()):
        values[f.name] = _value(rng, f.maximum)
    if op == Op.TRIGGER and rng.random() < 0.5:
        values["type"] = rng.choice(F.UNKNOWN_TRIGGERS)
    if rng.random() < 0.25:
        for s in F.RESERVED_FIELDS.get(op, F.reserved_fields(codec.UNKNOWN_REQ)):
            values[s.name] = (rng.randbytes(s.size) if s.code.endswith("s")
                              else rng.getrandbits(8 * s.size))
    return codec.encode_req(op, id=0, **values)


@dataclass
class LoopBudget:
    requests: int = 100_000
    seconds: float = 10.0
    case_seconds: float = 1.0
    seed: int = 0


def run_requests(drv: FuzzDriver, budget: LoopBudget,
                 progress: Callable[[FuzzDriver, float], None] | None = None) -> None:
    """Fuzz until the budget is spent or an oracle breaks (recorded in ``drv.found``)."""
    rng = random.Random(budget.seed)
    t0 = time.monotonic()
    n_case = 0
    while not drv.found and time.monotonic() - t0 < budget.seconds \
            and drv.counters.requests < budget.requests:
        n_case += 1
        drv.begin(f"fuzz::requests-{n_case}")
        case_end = min(time.monotonic() + budget.case_seconds, t0 + budget.seconds)
        try:
            while time.monotonic() < case_end and drv.counters.requests < budget.requests:
                _batch(drv, rng)
                if progress is not None:
                    progress(drv, time.monotonic() - t0)
            drv.check_invariants()
        except FuzzFinding as exc:
            drv.failed = exc
        drv.end()  # records the finding (or the verdict's)


def _batch(drv: FuzzDriver, rng: random.Random) -> None:
    stream = drv.stream
    model = StreamModel(playback=stream.type == "p")  # closed: begin() closed it
    raws = [F.with_id(draw_request(rng), drv.take_id()) for _ in range(XENSND_RING_SIZE)]
    drv.steps = [Step(r) for r in raws]  # the batch: what a crash replays
    try:
        stream.send_many(raws)
    except FrontendError:
        drv.check_alive(True)
        raise
    got = stream.collect(len(raws), drv.config.request_timeout)
    drv.counters.requests += len(got)
    drv.counters.malformed += sum(1 for r in raws[:len(got)]
                                  if F.request_op(r) not in (Op.CLOSE, Op.HW_PARAM_QUERY))
    by_id = {F.request_id(r): r for r in raws}
    seen: set[int] = set()
    for resp in got:
        raw = by_id.get(resp.id)
        if raw is None or resp.id in seen or resp.operation != F.request_op(raw):
            drv.steps = [Step(raw)] if raw is not None else drv.steps
            raise finding("echo", f"response id {resp.id} operation {resp.operation} "
                          "matches no unanswered request of the same operation",
                          response=resp.raw.hex())
        seen.add(resp.id)
        _judge(drv, model, raw, resp.status_code)
    if len(got) < len(raws):
        missing = [rid for rid in by_id if rid not in seen]
        # a crash replays the whole batch: a backend may publish its responses only at
        # the end of a batch, so the unanswered ones do not say where it died
        drv.check_alive(True)
        if not drv.probe_answers():
            raise finding("hang", f"{len(missing)} of {len(raws)} pipelined requests "
                          "unanswered and a probe HW_PARAM_QUERY too; the process is alive")
        drv.steps = [Step(by_id[missing[0]])]
        raise finding("no-response", f"request id {missing[0]} ("
                      f"{codec.decode_req(by_id[missing[0]]).operation}) got no response, "
                      "yet the backend answers a probe")


def _judge(drv: FuzzDriver, model: StreamModel, raw: bytes, status: int) -> None:
    rec = codec.decode_req(raw)
    op = rec.operation
    key = f"{model.state.value}:{Op(op).name if op in set(Op) else 'unknown-op'}"
    drv.counters.coverage[key] = drv.counters.coverage.get(key, 0) + 1
    problem = status_problem(status)
    if problem is not None:
        drv.steps = [Step(raw)]
        raise finding("status", f"{Step(raw).describe()}: {problem}", status=status)
    exp = model.expect(op, offset=getattr(rec, "offset", 0),
                       length=getattr(rec, "length", 0), trigger=getattr(rec, "type", 0))
    if exp.expect is Expect.FAILURE and status == 0:
        drv.steps = [Step(raw)]
        oracle = "bounds" if op in (Op.READ, Op.WRITE) else "accepted-invalid"
        raise finding(oracle, f"{Step(raw).describe()} succeeded on a closed stream: "
                      f"{exp.why} must fail ({exp.clause})")
    if status == 0 and op == Op.TRIGGER and rec.type in set(Trigger):
        model.state = model.state.UNKNOWN  # a closed stream took a trigger (D-07 SHOULD)

