"""Certification verdicts: of one case (from its pytest outcome) and of one clause (from
the cases citing it), and the run's exit status.

The supervisor's per-case outcomes (:mod:`harness.runner.verdicts`: PASS, FAIL, CRASH,
HANG, ERROR) are one input; this module adds what the suites can say
(:mod:`harness.certify.outcomes`) and the clause levels.

Case verdict, from the first phase (setup, call, teardown) that did not pass, the worst
one winning:

==============================================  ==========================================
what happened                                   verdict
==============================================  ==========================================
``BackendVerdictError`` (the supervisor)        its outcome: CRASH, HANG, FAIL; ERROR is
                                                INCONCLUSIVE. Never lowered by the levels:
                                                a crash, hang, broken connection or leak
                                                breaks G-07/A-16/C-12 whatever the case
                                                cites ("absolute")
``BackendStartError``, the backend exited       CRASH (it died on a device it was given)
(status or signal) before the frontend was
connected
``BackendStartError`` otherwise                 INCONCLUSIVE (could not be started: a
                                                missing binary, no InitWait while alive)
``assert`` / ``pytest.fail`` / a frontend       FAIL if a cited clause is MUST or REF;
error (``FrontendError``) in the test body      NONSTRICT if the strongest is SHOULD/MAY
                                                (FAIL with ``--strict``); INFO if only
                                                AMBIG clauses are cited (never judged)
``inconclusive(...)`` (``Inconclusive``)        INCONCLUSIVE
``not_applicable(...)`` (skip ``"N/A: ..."``)   N/A
any other skip, an xfail marker                 INCONCLUSIVE (a missing prerequisite is
                                                not a verdict on the backend)
any other exception, or a failing fixture       INCONCLUSIVE (the harness failed)
passed, with ``observe(...)`` records, or       INFO
citing only AMBIG clauses
passed                                          PASS
==============================================  ==========================================

Clause verdict: the worst, in :data:`SEVERITY` order, of the verdicts of the cases citing
it, each first adjusted to the level at which the case cites the clause (a case FAIL is
NONSTRICT for a SHOULD/MAY clause unless ``--strict``, INFO for an AMBIG one, unless the
FAIL came from the supervisor); UNTESTED when no case cites it.

Exit status (:func:`exit_status`): 1 when a clause judged on the backend is FAIL, CRASH or
HANG (NONSTRICT never, so SHOULD clauses fail the run only with ``--strict``), or a case is
CRASH/HANG; else 3 when the harness or environment failed (no case ran, every case
INCONCLUSIVE, collection errors, an internal error or an interrupted run); else 0. A usage
error is 2 (the ``certify`` command; plain pytest says 4).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.report.registry import ADVISORY_LEVELS, BINDING_LEVELS, Citation
from harness.runner.verdicts import NA_PREFIX, Outcome


class Verdict(enum.Enum):
    CRASH = "CRASH"
    HANG = "HANG"
    FAIL = "FAIL"
    NONSTRICT = "NONSTRICT"  # a SHOULD/MAY broken: FAIL with --strict
    INCONCLUSIVE = "INCONCLUSIVE"  # the harness or the environment failed
    INFO = "INFO"  # an AMBIG point: observed, not judged
    PASS = "PASS"
    NA = "N/A"  # an optional feature the backend does not offer
    UNTESTED = "UNTESTED"  # no case cites the clause

    @property
    def rank(self) -> int:
        """0 is the worst."""
        return SEVERITY.index(self)


#: Worst first. A crash or hang outranks a wrong answer (the backend is gone); a broken
#: MUST outranks a broken SHOULD; a harness failure outranks the verdicts that claim
#: something (INFO, PASS), since it may hide a failure; N/A and UNTESTED claim nothing.
SEVERITY: tuple[Verdict, ...] = (
    Verdict.CRASH, Verdict.HANG, Verdict.FAIL, Verdict.NONSTRICT, Verdict.INCONCLUSIVE,
    Verdict.INFO, Verdict.PASS, Verdict.NA, Verdict.UNTESTED)

#: Verdicts that fail a run when they land on a clause judged on the backend.
FAILING = frozenset({Verdict.CRASH, Verdict.HANG, Verdict.FAIL})

_BACKEND_OUTCOME = {Outcome.CRASH: Verdict.CRASH, Outcome.HANG: Verdict.HANG,
                    Outcome.FAIL: Verdict.FAIL, Outcome.ERROR: Verdict.INCONCLUSIVE,
                    Outcome.PASS: Verdict.PASS}
# BackendStartError texts of supervisor.py: "...; it exited (exit status 1)",
# "...; backend exited (killed by SIGSEGV)"
_EXITED = re.compile(r"\bexited \((?:exit status -?\d+|killed by [\w ]+)\)")
_EXPECTED_ACTUAL = re.compile(
    r"expected\s*[:=]?\s*(?P<expected>.+?)\s*[,;]\s*(?:but\s+)?(?:got|actual|saw|observed|"
    r"received|is)\s*[:=]?\s*(?P<actual>[^\n]+)", re.IGNORECASE)
_MESSAGE_MAX = 2000


def worst(verdicts: Iterable[Verdict], default: Verdict = Verdict.UNTESTED) -> Verdict:
    return min(verdicts, key=lambda v: v.rank, default=default)


@dataclass
class Judgement:
    """A case's verdict with its evidence."""

    verdict: Verdict
    message: str = ""
    expected: str | None = None
    actual: str | None = None
    absolute: bool = False  # from the supervisor: not lowered by the clause levels
    backend: dict[str, Any] | None = None  # the supervisor's Verdict.as_dict()
    phase: str = "call"


@dataclass
class Phase:
    """One pytest phase of a case, as the plugin saw it."""

    when: str  # setup, call, teardown
    outcome: str  # passed, failed, skipped
    exc: BaseException | None = None
    text: str = ""  # the report's text when there is no exception object
    wasxfail: bool = False


def _chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and what it was raised from, as Python shows it: a ``raise ... from None``
    hides the context (a case that turned a start failure into its own judgement)."""
    out: list[BaseException] = []
    while exc is not None and len(out) < 10 and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def _find(exc: BaseException | None, names: Sequence[str]) -> BaseException | None:
    """The first exception in the chain that is an instance of a class named in ``names``
    (by name: the supervisor module is not imported for a run with no backend)."""
    for e in _chain(exc):
        if any(k.__name__ in names for k in type(e).__mro__):
            return e
    return None


def _message(text: str) -> tuple[str, str | None, str | None]:
    text = text.strip()
    if len(text) > _MESSAGE_MAX:
        text = text[:_MESSAGE_MAX] + " ..."
    m = _EXPECTED_ACTUAL.search(text)
    return text, (m["expected"] if m else None), (m["actual"] if m else None)


def judge_levels(citations: Sequence[Citation], strict: bool) -> Verdict:
    """What a failed check is worth given the cited clauses (see the module docstring)."""
    levels = {c.level for c in citations}
    if not citations or levels & BINDING_LEVELS:
        return Verdict.FAIL
    if levels & ADVISORY_LEVELS:
        return Verdict.FAIL if strict else Verdict.NONSTRICT
    return Verdict.INFO  # only AMBIG clauses: observed, never judged


def judge_phase(phase: Phase, citations: Sequence[Citation], strict: bool) -> Judgement:
    """The verdict of one phase that did not pass."""
    if phase.wasxfail:
        return Judgement(Verdict.INCONCLUSIVE, "an xfail marker is not a certification "
                         "outcome: " + phase.text, phase=phase.when)
    if phase.outcome == "skipped":
        reason = str(getattr(phase.exc, "msg", "") or phase.text)
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(NA_PREFIX):
            return Judgement(Verdict.NA, reason[len(NA_PREFIX):], phase=phase.when)
        return Judgement(Verdict.INCONCLUSIVE, f"skipped: {reason}", phase=phase.when)
    exc = phase.exc
    found = _find(exc, ("BackendVerdictError",))
    if found is not None:
        bv = found.verdict  # type: ignore[attr-defined]
        verdict = _BACKEND_OUTCOME[bv.outcome]
        text, expected, actual = _message(bv.describe())
        return Judgement(verdict, text, expected, actual, absolute=True,
                         backend=bv.as_dict(), phase=phase.when)
    found = _find(exc, ("BackendStartError",))
    if found is not None:
        text = str(found)
        if _EXITED.search(text):
            return Judgement(Verdict.CRASH, "the backend exited before the frontend could "
                             "connect: " + text, absolute=True, phase=phase.when)
        return Judgement(Verdict.INCONCLUSIVE, "the backend could not be started: " + text,
                         phase=phase.when)
    found = _find(exc, ("Inconclusive",))
    if found is not None:
        return Judgement(Verdict.INCONCLUSIVE, str(found), phase=phase.when)
    text = str(exc) if exc is not None else phase.text
    if phase.when != "call":
        doing = {"setup": "set up", "teardown": "torn down"}.get(phase.when, phase.when)
        return Judgement(Verdict.INCONCLUSIVE, f"the case could not be {doing}: "
                         f"{type(exc).__name__ if exc else 'error'}: {text}", phase=phase.when)
    if exc is None or _find(exc, ("AssertionError", "Failed", "FrontendError")) is not None:
        text, expected, actual = _message(text)
        return Judgement(judge_levels(citations, strict), text, expected, actual)
    return Judgement(Verdict.INCONCLUSIVE, f"harness error: {type(exc).__name__}: {text}")


def judge_case(phases: Sequence[Phase], citations: Sequence[Citation], *, observed: bool,
               strict: bool) -> Judgement:
    """The case's verdict from all its phases (the worst phase wins)."""
    judged = [judge_phase(p, citations, strict) for p in phases
              if p.outcome != "passed" or p.wasxfail]
    if judged:
        return min(judged, key=lambda j: j.verdict.rank)
    if observed or (citations and all(c.level == "AMBIG" for c in citations)):
        return Judgement(Verdict.INFO, "observed, not judged (AMBIG)" if observed
                         else "cites only AMBIG clauses")
    return Judgement(Verdict.PASS)


def clause_verdict(case: Verdict, level: str, *, absolute: bool, strict: bool) -> Verdict:
    """A case's verdict as it counts for one clause it cites at ``level``."""
    if case is not Verdict.FAIL or absolute:
        return case
    if level in ADVISORY_LEVELS and not strict:
        return Verdict.NONSTRICT
    if level == "AMBIG":
        return Verdict.INFO
    return case


@dataclass
class RunFacts:
    """What the exit status depends on besides the verdicts."""

    harness_failed: bool = False  # collection errors, internal error, interrupted
    reasons: list[str] = field(default_factory=list)


def exit_status(case_verdicts: Sequence[Verdict], failing_clauses: Sequence[str],
                facts: RunFacts) -> tuple[int, str]:
    """The run's exit status and a one-line reason (see the module docstring)."""
    crashed = [v for v in case_verdicts if v in (Verdict.CRASH, Verdict.HANG)]
    if failing_clauses or crashed:
        what = []
        if failing_clauses:
            what.append(f"{len(failing_clauses)} clause(s) failed: "
                        + ", ".join(failing_clauses[:8])
                        + (" ..." if len(failing_clauses) > 8 else ""))
        if crashed:
            what.append(f"{len(crashed)} case(s) crashed or hung the backend")
        return 1, "FAIL: " + "; ".join(what)
    if facts.harness_failed:
        return 3, "INCONCLUSIVE: " + "; ".join(facts.reasons or ["the harness failed"])
    if not case_verdicts:
        return 3, "INCONCLUSIVE: no case ran"
    if all(v is Verdict.INCONCLUSIVE for v in case_verdicts):
        return 3, "INCONCLUSIVE: every case was inconclusive"
    return 0, "PASS: no MUST/REF clause failed"


__all__ = ["FAILING", "SEVERITY", "Judgement", "Phase", "RunFacts", "Verdict",
           "clause_verdict", "exit_status", "judge_case", "judge_levels", "judge_phase",
           "worst"]
