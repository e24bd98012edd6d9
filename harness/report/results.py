"""``results.json``: the machine-readable outcome of a certification run, rewritten
atomically (temporary file + rename) after every case, so an interrupted run leaves a
valid file describing what was done.

Schema ``sndif-harness/results/1`` (one JSON object)::

    schema       "sndif-harness/results/1"
    run          started, finished (ISO 8601 UTC; finished null while running),
                 state ("running" | "finished" | "interrupted"), harness_version,
                 platform ("sim" | "real"), command_line (argv list), python, pytest,
                 strict (bool), profile (path or null; checked by suites/test_profile.py),
                 report_dir, cases_collected, cases_done, complete (false until the run
                 ended normally: a killed or interrupted run leaves false behind)
    backend      spec (the --backend text), kind ("reference" | "exec" | "attach"),
                 defects (list), out_dir (the supervisor's directory: backend.log,
                 verdicts.jsonl, cases/), binary (exec only, else null: path, sha256,
                 version: the version string if one was obtained, else null)
    summary      overall ("PASS" | "FAIL" | "INCONCLUSIVE" | "RUNNING"), exit_status
                 (0 | 1 | 3, null while running), reason (one line), cases ({verdict: n}),
                 clauses ({verdict: n} over the clauses judged on a backend),
                 areas ({"A": {"title", "clauses": {verdict: n}}, ...}),
                 failing_clauses ([id]), not_judged_on_backend (n)
    clauses      one object per registry clause, in clauses.md order: id, area, level,
                 levels, side, requirement, source, judged_on_backend, reason, note,
                 untestable (why no case can judge it), ambiguities, related,
                 verdict (UNTESTED when no case cites it), cases ([nodeid] citing it)
    cases        one object per finished case, in finishing order: nodeid, verdict,
                 clauses (the citations, "SND-E-06" or "SND-E-06:SHOULD"), duration (s),
                 phase (where the verdict came from), message (the assertion or verdict
                 text), expected / actual (parsed from the message when it says
                 "expected X, got Y"; else null), absolute (a supervisor verdict, not
                 lowered by the clause levels), observations ([{what, value}]),
                 backend (the supervisor's verdict object, or null), evidence ({trace,
                 backend_log: paths relative to report_dir when inside it, log_excerpt,
                 and pacing for the pacing cases: the ``sndif-pacing`` property of
                 suites/test_e_positions.py, i.e. the distributions of
                 harness.judge.pacing (events, period_sz, frame_size, rate,
                 ideal_interval_ms, interval_ms, step_octets, events_per_period,
                 throughput_ratio, tolerance), rounds, verdict, and samples {t_ms (since
                 the first event), position (octets), thinned_by} of at most 500 points})

The reports (``report.html``, ``report.md``: :mod:`harness.report.html`,
:mod:`harness.report.markdown`) are rendered from this document alone.

Verdicts are those of :mod:`harness.report.verdicts` ("N/A" is spelled so).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.report.registry import Citation, Registry
from harness.report.verdicts import (
    FAILING,
    SEVERITY,
    RunFacts,
    Verdict,
    clause_verdict,
    exit_status,
    worst,
)

SCHEMA = "sndif-harness/results/1"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class CaseRecord:
    nodeid: str
    verdict: Verdict
    citations: list[Citation]
    duration: float = 0.0
    phase: str = "call"
    message: str = ""
    expected: str | None = None
    actual: str | None = None
    absolute: bool = False
    observations: list[Any] = field(default_factory=list)
    backend: dict[str, Any] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "verdict": self.verdict.value,
                "clauses": [c.ref for c in self.citations],
                "duration": round(self.duration, 3), "phase": self.phase,
                "message": self.message, "expected": self.expected, "actual": self.actual,
                "absolute": self.absolute, "observations": self.observations,
                "backend": self.backend, "evidence": self.evidence}


def _counts(verdicts: list[Verdict]) -> dict[str, int]:
    c = Counter(verdicts)
    return {v.value: c[v] for v in SEVERITY if c[v]}


class Results:
    """The run's verdicts so far; :meth:`document` is the results.json object."""

    def __init__(self, registry: Registry, *, run: dict[str, Any], backend: dict[str, Any],
                 strict: bool = False) -> None:
        self.registry = registry
        self.run = dict(run)
        self.backend = dict(backend)
        self.strict = strict
        self.cases: dict[str, CaseRecord] = {}
        self.facts = RunFacts()
        self.run.setdefault("started", now_iso())
        self.run.setdefault("finished", None)
        self.run["state"] = "running"
        # false on disk until finish(): a run killed mid-way (SIGKILL, power loss) cannot
        # say so itself, so the file says "not complete" from the first write on
        self.run["complete"] = False

    def add(self, record: CaseRecord) -> None:
        self.cases[record.nodeid] = record

    def clause_results(self) -> dict[str, tuple[Verdict, list[str]]]:
        """Every registry clause → (verdict, the nodeids citing it)."""
        cited: dict[str, list[tuple[str, Verdict]]] = {c.id: [] for c in self.registry}
        for rec in self.cases.values():
            for cit in rec.citations:
                v = clause_verdict(rec.verdict, cit.level, absolute=rec.absolute,
                                   strict=self.strict)
                cited[cit.clause.id].append((rec.nodeid, v))
        return {cid: (worst(v for _, v in hits), list(dict.fromkeys(n for n, _ in hits)))
                for cid, hits in cited.items()}

    def failing_clauses(self) -> list[str]:
        return [cid for cid, (v, _) in self.clause_results().items()
                if v in FAILING and self.registry[cid].judged_on_backend]

    def exit_status(self) -> tuple[int, str]:
        return exit_status([r.verdict for r in self.cases.values()], self.failing_clauses(),
                           self.facts)

    def area_counts(self) -> dict[str, dict[str, int]]:
        results = self.clause_results()
        return {a: _counts([results[c.id][0] for c in self.registry.in_area(a)
                            if c.judged_on_backend]) for a in self.registry.areas}

    def document(self, *, final: bool = False) -> dict[str, Any]:
        results = self.clause_results()
        judged = [results[c.id][0] for c in self.registry if c.judged_on_backend]
        status, reason = self.exit_status()
        areas = self.area_counts()
        summary = {
            "overall": reason.split(":", 1)[0] if final else "RUNNING",
            "exit_status": status if final else None, "reason": reason,
            "cases": _counts([r.verdict for r in self.cases.values()]),
            "clauses": _counts(judged),
            "areas": {a: {"title": t, "clauses": areas[a]}
                      for a, t in self.registry.areas.items()},
            "failing_clauses": self.failing_clauses(),
            "not_judged_on_backend": sum(not c.judged_on_backend for c in self.registry),
        }
        run = dict(self.run, cases_done=len(self.cases))
        clauses = [dict(c.as_dict(), verdict=results[c.id][0].value, cases=results[c.id][1])
                   for c in self.registry]
        return {"schema": SCHEMA, "run": run, "backend": self.backend, "summary": summary,
                "clauses": clauses, "cases": [r.as_dict() for r in self.cases.values()]}

    def finish(self, state: str = "finished") -> None:
        self.run["finished"] = now_iso()
        self.run["state"] = state
        self.run["complete"] = state == "finished"


def write_atomic(path: str | os.PathLike[str], document: dict[str, Any]) -> None:
    """Write ``document`` as JSON to ``path`` so that a reader only ever sees a complete
    file: a temporary file in the same directory, fsync'ed, then renamed over it."""
    write_text_atomic(path, json.dumps(document, indent=1, default=str) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` as :func:`write_atomic` does (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        # mkstemp makes it 0600; a report is for sharing: the process umask decides
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # keep nothing half-written behind
        raise


class ResultsError(ValueError):
    """A file that is not a readable results.json (the message is one line)."""


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A results.json document, checked enough to render: its schema and the keys the
    reports read. Raises :class:`ResultsError` naming what is wrong."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ResultsError(f"{path}: is a directory, not a results.json") from None
    except OSError as exc:
        raise ResultsError(f"{path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ResultsError(f"{path}: not a results.json of schema {SCHEMA} (got {got!r})")
    shapes = {"run": dict, "backend": dict, "summary": dict, "clauses": list, "cases": list}
    for key, kind in shapes.items():
        if not isinstance(doc.get(key), kind):
            raise ResultsError(f"{path}: '{key}' missing or not a JSON "
                               f"{'object' if kind is dict else 'array'}")
    return doc


def verdict_rank(verdict: str) -> int:
    """Where a verdict's text sorts, worst first (:data:`SEVERITY`); unknown text last."""
    names = [v.value for v in SEVERITY]
    return names.index(verdict) if verdict in names else len(names)


__all__ = ["SCHEMA", "CaseRecord", "Results", "ResultsError", "now_iso", "read_results",
           "verdict_rank", "write_atomic", "write_text_atomic"]
