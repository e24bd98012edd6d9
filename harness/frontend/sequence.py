"""The requests a frontend sent, stream by stream, from a trace, in a form in which two
frontends can be compared: what was asked, not how the ring carried it.

A step is one operation with the fields that say what the frontend asked for (OPEN's
configuration, a HW_PARAM_QUERY's ranges, a TRIGGER's type); ids, grant references and
buffer offsets are left out (they are the frontend's to choose). Consecutive READs or
WRITEs are one step with their count and the octets they moved: how a frontend cuts its
copies is its own business, how much it moved is not.

A trace of either end serves: the reference frontend's own (``req`` records of its domain),
or the reference backend's (``--trace``), which is how the requests of a frontend we cannot
instrument, Linux's ``xen-snd-front`` in a real guest, are recorded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.trace import TraceRecord
from protocol_models import codec
from protocol_models.constants import Op, Trigger

#: per operation, the request fields that say what was asked (the rest is transport)
ASKED: dict[Op, tuple[str, ...]] = {
    Op.OPEN: ("pcm_format", "pcm_rate", "pcm_channels", "buffer_sz", "period_sz"),
    Op.HW_PARAM_QUERY: ("formats", "rates_min", "rates_max", "channels_min", "channels_max",
                        "buffer_min", "buffer_max", "period_min", "period_max"),
}
_MOVES = (Op.READ, Op.WRITE)


@dataclass(frozen=True)
class Step:
    op: str  # "OPEN", "WRITE", "TRIGGER START", ...
    asked: tuple[tuple[str, int], ...] = ()  # ASKED's fields and their values
    count: int = 1  # folded READs/WRITEs
    nbytes: int = 0  # READ/WRITE: the octets of the folded requests

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.asked:
            out["asked"] = dict(self.asked)
        if self.op in (Op.READ.name, Op.WRITE.name):
            out["count"], out["nbytes"] = self.count, self.nbytes
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        return cls(d["op"], tuple((k, int(v)) for k, v in d.get("asked", {}).items()),
                   int(d.get("count", 1)), int(d.get("nbytes", 0)))

    def __str__(self) -> str:
        if self.op in (Op.READ.name, Op.WRITE.name):
            return f"{self.op} x{self.count} ({self.nbytes} octets)"
        return self.op + (" " + " ".join(f"{k}={v}" for k, v in self.asked)
                          if self.asked else "")


def stream_key(name: str) -> str:
    """``pcm/stream`` for a stream named by the frontend (``0/1``) or by the reference
    backend (``<device>-0-1``)."""
    if "/" in name:
        return name
    _dev, pcm, stream = name.rsplit("-", 2)
    return f"{pcm}/{stream}"


def _step(raw: bytes) -> Step:
    req = codec.decode_req(raw)
    try:
        op = Op(req.operation)
    except ValueError:
        return Step(f"OP{req.operation}")
    if op is Op.TRIGGER:
        try:
            return Step(f"TRIGGER {Trigger(req.type).name}")
        except ValueError:
            return Step(f"TRIGGER {req.type}")
    if op in _MOVES:
        return Step(op.name, nbytes=req.length)
    return Step(op.name, tuple((f, int(getattr(req, f))) for f in ASKED.get(op, ())))


def sequences(records: Iterable[TraceRecord]) -> dict[str, list[Step]]:
    """Every stream's steps, in the order the requests were traced."""
    out: dict[str, list[Step]] = {}
    for rec in records:
        if rec.kind != "req" or "raw" not in rec.fields:
            continue
        raw = rec.fields["raw"]
        step = _step(bytes.fromhex(raw) if isinstance(raw, str) else bytes(raw))
        steps = out.setdefault(stream_key(str(rec.fields.get("stream", "?"))), [])
        if steps and step.op in (Op.READ.name, Op.WRITE.name) and steps[-1].op == step.op:
            last = steps[-1]
            steps[-1] = Step(last.op, (), last.count + 1, last.nbytes + step.nbytes)
        else:
            steps.append(step)
    return out


@dataclass
class Recording:
    """A scenario's recorded sequences with where they come from (regression data)."""

    scenario: str
    source: str
    streams: dict[str, list[Step]] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({
            "scenario": self.scenario, "source": self.source,
            "streams": {k: [s.to_json() for s in v] for k, v in self.streams.items()},
        }, indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> Recording:
        d = json.loads(path.read_text())
        return cls(d["scenario"], d["source"],
                   {k: [Step.from_json(s) for s in v] for k, v in d["streams"].items()})
