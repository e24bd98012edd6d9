"""A fuzz campaign's findings in the certification format (``results.json``, schema of
:mod:`harness.report.results`), so ``report.html``/``report.md`` and ``sndif-harness
report`` show them beside suite runs.

Each finding is one case ``fuzz::<oracle>`` whose ``phase`` is ``FUZZ`` (where the verdict
came from), citing the oracle's clauses: CRASH and HANG as such, the rest FAIL (lowered
to NONSTRICT for a SHOULD clause, as a suite case would be). Its evidence holds the
request sequence, the reproducer and the case trace. ``run.source`` is ``FUZZ`` and
``run.fuzz`` the campaign's counters. Only findings are cases: a campaign that finds
nothing has proven no clause, so it claims no PASS.
"""

from __future__ import annotations

import platform as platform_mod
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import harness
from harness.report.registry import load_registry
from harness.report.results import CaseRecord, Results, now_iso, write_atomic, write_text_atomic
from harness.report.verdicts import Verdict

from .driver import Found

SOURCE = "FUZZ"
_ABSOLUTE = {"crash": Verdict.CRASH, "hang": Verdict.HANG}


def _backend(world: Sequence[str], out: Path) -> dict[str, Any]:
    args = list(world)
    spec = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--backend"),
                "reference")
    defects = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--defect"]
    kind = spec.split(":", 1)[0] if ":" in spec else spec
    return {"spec": spec, "kind": kind, "defects": defects,
            "out_dir": str(out / "backend"), "binary": None}


def write_results(out: Path, found: Mapping[str, Found], world: Sequence[str],
                  stats: Mapping[str, Any], *, started: str | None = None,
                  reproducers: Mapping[str, str] | None = None,
                  render: bool = True) -> Path:
    """``out/results.json`` (and, with ``render``, ``report.html`` and ``report.md``)."""
    registry = load_registry()
    platform = next((world[i + 1] for i, a in enumerate(world[:-1]) if a == "--platform"),
                    "sim")
    run = {"started": started or now_iso(), "harness_version": harness.__version__,
           "platform": platform, "command_line": list(sys.argv),
           "python": platform_mod.python_version(), "pytest": None, "strict": False,
           "profile": None, "report_dir": str(out), "cases_collected": len(found),
           "source": SOURCE, "fuzz": dict(stats)}
    results = Results(registry, run=run, backend=_backend(world, out))
    for name, f in sorted(found.items()):
        clauses = [c for c in f.problem.clauses if c in registry]
        trace = f.evidence.get("trace")
        evidence: dict[str, Any] = {
            "source": SOURCE, "sequence_hex": [s.raw.hex() or s.action for s in f.steps],
            "steps": [s.describe() for s in f.steps],
            "reproducer": (reproducers or {}).get(name),
            "trace": _relative(trace, out), "backend_log": "backend/backend.log",
            "log_excerpt": f.evidence.get("log")}
        results.add(CaseRecord(
            f"fuzz::{name}", _ABSOLUTE.get(name, Verdict.FAIL),
            [registry.cite(c) for c in clauses], phase=SOURCE, message=f.problem.detail,
            absolute=name in _ABSOLUTE,
            backend={"verdict": f.evidence.get("verdict"),
                     "detail": f.evidence.get("verdict_detail")},
            evidence=evidence))
    results.finish()
    doc = results.document(final=True)
    path = out / "results.json"
    write_atomic(path, doc)
    if render:
        try:
            from harness.report.html import render_html
            from harness.report.markdown import render_markdown

            write_text_atomic(out / "report.html", render_html(doc))
            write_text_atomic(out / "report.md", render_markdown(doc))
        except Exception as exc:  # a rendering bug must not cost the findings
            print(f"sndif-harness fuzz: report not rendered: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
    return path


def _relative(path: Any, out: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)
