"""The fuzzer's oracles: what must hold after every request and every step. A broken one is
raised as its own exception class, so that Hypothesis shrinks each oracle's failures
separately (it tells failures apart by exception type and place)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Oracle:
    name: str
    clauses: tuple[str, ...]
    what: str


ORACLES: dict[str, Oracle] = {o.name: o for o in (
    Oracle("crash", ("SND-G-07",), "the backend exited, died or printed a sanitizer report"),
    Oracle("hang", ("SND-G-07", "SND-B-08"),
           "no answer to a request and none to a probe HW_PARAM_QUERY"),
    Oracle("no-response", ("SND-B-08", "SND-G-04"),
           "a request got no response while the backend still answers others"),
    Oracle("echo", ("SND-B-08", "SND-B-09"),
           "a response did not echo id and operation, or a request got more than one"),
    Oracle("status", ("SND-G-01", "SND-G-05"), "a status neither 0 nor -XEN_Exx"),
    Oracle("bounds", ("SND-C-09", "SND-G-07"),
           "a READ/WRITE outside the buffer (or without OPEN) succeeded"),
    Oracle("accepted-invalid", ("SND-G-04", "SND-D-01"),
           "an unknown operation or trigger type succeeded"),
    Oracle("refused-valid", ("SND-C-14", "SND-C-10", "SND-D-02", "SND-F-01", "SND-C-12"),
           "a valid request in a valid state failed"),
    Oracle("grant", ("SND-G-07", "SND-C-12"),
           "the backend maps a frontend page outside the current buffer, or after CLOSE"),
    Oracle("violation", ("SND-B-08", "SND-G-01", "SND-E-06"),
           "the frontend recorded a MUST violation"),
    Oracle("verdict", ("SND-G-07",), "the supervisor's verdict of the example was not PASS"),
    Oracle("invalid-open", ("SND-C-15",),
           "an OPEN outside the stream's space (unknown format, channels, rate, sizes) "
           "succeeded"),
    Oracle("position", ("SND-E-07", "SND-E-01", "SND-E-03"),
           "a CUR_POS past the octets written since OPEN, or one that did not advance"),
    Oracle("cadence", ("SND-E-02",),
           "CUR_POS steps far from period_sz (median over the events of one run)"),
    Oracle("event-state", ("SND-E-06", "SND-E-01"),
           "a CUR_POS while the stream was stopped or paused"),
    Oracle("drain", ("SND-D-06",),
           "the position stopped short of the octets written while running"),
    Oracle("hw-query", ("SND-F-02", "SND-F-05", "SND-F-06"),
           "a HW_PARAM_QUERY answer outside the request, not a fixpoint, or a success for "
           "an empty intersection"),
    Oracle("volume", ("SND-H-03",),
           "GET_VOLUME did not write the values, or not the ones SET_VOLUME gave"),
    Oracle("lifecycle", ("SND-A-16", "SND-A-17", "SND-A-18"),
           "the backend did not return to InitWait when the frontend restarted or closed, "
           "or not to Closed when the toolstack removed the device"),
    Oracle("connect", ("SND-A-09", "SND-A-12"),
           "the device created by the toolstack did not reach InitWait, or the frontend "
           "could not connect (at the start or at a restart)"),
)}


class FuzzFinding(AssertionError):
    """An oracle broke. ``oracle`` names it; ``detail`` says what was seen."""

    oracle = "finding"

    def __init__(self, detail: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(f"[{self.oracle}] {detail}")
        self.detail = detail
        self.evidence = evidence or {}


def _finding_class(name: str) -> type[FuzzFinding]:
    cls_name = "".join(p.capitalize() for p in name.split("-")) + "Finding"
    return type(cls_name, (FuzzFinding,), {"oracle": name, "__module__": __name__})


FINDING_CLASSES: dict[str, type[FuzzFinding]] = {n: _finding_class(n) for n in ORACLES}


def finding(oracle: str, detail: str, **evidence: Any) -> FuzzFinding:
    """The exception of ``oracle`` (to be raised)."""
    return FINDING_CLASSES[oracle](detail, evidence)


@dataclass
class Problem:
    """A broken oracle as data (replays collect these instead of raising)."""

    oracle: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def clauses(self) -> tuple[str, ...]:
        return ORACLES[self.oracle].clauses

    @classmethod
    def of(cls, exc: FuzzFinding) -> Problem:
        return cls(exc.oracle, exc.detail, exc.evidence)
