"""The judge's findings as a ``results.json`` of the certification format (schema of
:mod:`harness.report.results`), so the reports, ``report compare``, ``gate`` and
``bundle`` read it as they read a certify run.

What was judged is the frontend: ``run.judged`` is ``"frontend"``, ``frontend`` its
identity, ``backend`` carries it too (spec ``frontend:<name>``, so ``report compare``
labels the column with it). One case ``frontend::<clause>`` per frontend-side clause the
run exercised, phase ``FRONTEND``. The registry is the shipped one seen from the
frontend's side: its clauses are the judged ones, and a backend-side clause is N/A here
(with why), so that completeness checks do not count it as missing.
"""

from __future__ import annotations

import dataclasses
import platform as platform_mod
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import harness
from harness.report.registry import Registry, load_registry
from harness.report.results import CaseRecord, Results, now_iso
from harness.report.verdicts import Verdict, judge_levels

from .clauses import FE_CLAUSES, INVISIBLE, NOT_EXERCISED
from .ledger import Ledger

SOURCE = "FRONTEND"
BACKEND_SIDE = "a backend-side clause: not judged when the frontend is under test"


def frontend_registry(ledger: Ledger) -> Registry:
    """The shipped registry with the frontend's clauses as the judged ones; an unexercised
    one says why in ``untestable``."""
    base = load_registry()
    clauses = []
    for c in base:
        if c.id in FE_CLAUSES:
            why = "" if c.id in ledger.by_clause else (
                INVISIBLE.get(c.id) or NOT_EXERCISED.get(c.id, "not exercised by the run"))
            clauses.append(dataclasses.replace(c, judged_on_backend=True, untestable=why,
                                               reason=""))
        else:
            clauses.append(dataclasses.replace(c, judged_on_backend=False,
                                               reason=BACKEND_SIDE))
    return Registry(clauses, base.areas)


def findings_document(ledger: Ledger, identity: Mapping[str, Any], *,
                      platform: str, started: str, final: bool = True) -> dict[str, Any]:
    registry = frontend_registry(ledger)
    run = {"started": started, "harness_version": harness.__version__,
           "platform": platform, "command_line": list(sys.argv),
           "python": platform_mod.python_version(), "pytest": None, "strict": False,
           "profile": None, "report_dir": identity.get("report_dir"),
           "cases_collected": len(ledger.by_clause), "source": SOURCE,
           "judged": "frontend"}
    name = str(identity.get("name") or "frontend")
    frontend = {"name": name, "domid": identity.get("domid"),
                "defects": list(identity.get("defects") or []),
                "judge": "reference backend (--judge-frontend)"}
    backend = {"spec": f"frontend:{name}", "kind": "frontend",
               "defects": frontend["defects"], "out_dir": identity.get("report_dir"),
               "binary": None, "command": None}
    results = Results(registry, run=run, backend=backend)
    for cid in FE_CLAUSES:
        f = ledger.by_clause.get(cid)
        if f is None:
            continue
        clause = registry[cid]
        if f.fails:
            level = f.fails[0][0] or clause.level
            cites = [registry.cite(cid if level == clause.level else f"{cid}:{level}")]
            verdict = judge_levels(cites, False)
            message = f.fails[0][1] + (f" (+{len(f.fails) - 1 + f.dropped} more)"
                                       if len(f.fails) > 1 else "")
        elif f.infos:
            cites, verdict, message = [registry.cite(cid)], Verdict.INFO, f.infos[0]
        else:
            cites, verdict = [registry.cite(cid)], Verdict.PASS
            message = f"{f.passes} observation(s): " + "; ".join(f.pass_notes[:4])
        results.add(CaseRecord(
            f"frontend::{cid}", verdict, cites, phase=SOURCE, message=message,
            observations=[{"what": "passed", "value": f.passes}],
            evidence={"source": SOURCE, "failures": [m for _, m in f.fails],
                      "notes": f.infos, "passes": f.pass_notes}))
    if final:
        results.finish()
    doc = results.document(final=final)
    doc["frontend"] = frontend
    for c in doc["clauses"]:
        if c["reason"] == BACKEND_SIDE:
            c["verdict"] = "N/A"
    return doc


def write_findings(path: Path, doc: dict[str, Any]) -> None:
    from harness.report.results import write_atomic

    write_atomic(path, doc)


__all__ = ["SOURCE", "findings_document", "frontend_registry", "now_iso", "write_findings"]
