"""``sndif-harness certify-frontend``: judge a frontend's side of the protocol. On the
simulated Xen the reference backend runs as the judge (``--judge-frontend``: it watches,
it answers as always) while the harness's reference frontend, with any ``--fe-defect``,
goes through the scenario of :mod:`harness.frontend.scenario` and tears down. The judge's
results.json is then completed with the run's identity and rendered.

Exit status: 0 no MUST/REF frontend clause failed, 1 one did, 2 usage error, 3 the
harness failed (no results, or the frontend could not run and nothing explains it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

#: The frontend under test: the harness's own on the simulated Xen, or Linux's
#: xen-snd-front in a guest on real Xen 4.17 under QEMU (the xen-qemu tier).
FRONTENDS = ("reference", "linux")
CONNECT_TIMEOUT_S = 5.0
#: Lets the judging backend see the frontend's Closed before it is stopped.
SETTLE_S = 0.4


def _name(frontend: str, defects: list[str]) -> str:
    return frontend + (" +fe-defect " + ",".join(defects) if defects else "")


def run(frontend: str, defects: list[str], report_dir: Path,
        echo: Any = print) -> tuple[int, dict[str, Any] | None]:
    """The run: (exit status, the results document or None)."""
    from harness.frontend.defects import injected
    from harness.frontend.scenario import Log, run_scenario
    from harness.report.results import read_results, write_atomic
    from harness.world.backend_spec import BackendSpec
    from harness.world.spec import WorldSpec
    from harness.world.world import BackendStartError, running_world

    results = report_dir / "results.json"
    name = _name(frontend, defects)
    spec = WorldSpec(backend=BackendSpec("reference"), connect_timeout=CONNECT_TIMEOUT_S,
                     backend_env={"SNDIF_JUDGE_FRONTEND": str(results),
                                  "SNDIF_JUDGE_FRONTEND_NAME": name})
    log = Log()
    echo(f"judging frontend {name} (domain {spec.frontend_domid}) from the reference "
         f"backend (domain {spec.backend_domid}) on the simulated Xen")
    try:
        with injected(defects), running_world(spec, report_dir / "world") as world:
            assert world.dev is not None
            log = run_scenario(world.dev)
            world.close_frontend()  # teardown: Closing, (BE InitWait), Closed
            time.sleep(SETTLE_S)
            world.stop_backend("end of certify-frontend")
    except BackendStartError as exc:
        log.stopped = f"the frontend did not connect: {str(exc).splitlines()[0]}"
    if log.stopped:
        echo(f"scenario cut short: {log.stopped}")
    if not results.is_file():
        print(f"sndif-harness certify-frontend: the judging backend wrote no {results}",
              file=sys.stderr)
        return 3, None
    doc = read_results(results)
    doc["frontend"]["defects"] = list(defects)
    doc["backend"]["defects"] = list(defects)
    doc["run"]["command_line"] = list(sys.argv)
    doc["run"]["report_dir"] = str(report_dir)
    doc["run"]["scenario"] = {"steps": log.steps, "errors": log.errors,
                              "stopped": log.stopped}
    status = int(doc["summary"]["exit_status"])
    if status == 0 and log.stopped:
        status = 3  # the frontend could not run, and no clause says why
        doc["summary"]["exit_status"] = 3
        doc["summary"]["reason"] = f"INCONCLUSIVE: {log.stopped}"
        doc["summary"]["overall"] = "INCONCLUSIVE"
    write_atomic(results, doc)
    return status, doc


def run_linux(report_dir: Path, echo: Any = print) -> tuple[int, dict[str, Any] | None]:
    """Linux's frontend, judged by the reference backend in dom0 of real Xen under QEMU
    while the guest plays twice (each aplay a new OPEN) and records once."""
    from harness.report.results import read_results, write_atomic
    from harness.xenqemu import XenQemuError, said
    from harness.xenqemu.prepare import prepare
    from harness.xenqemu.run import run as run_qemu

    results = report_dir / "results.json"
    try:
        p = prepare(say=echo)
        name = f"linux xen-snd-front {p.kver}"
        echo(f"judging frontend {name} (a PV guest) from the reference backend (dom0) on "
             "Xen 4.17 under QEMU")
        result = run_qemu(p, report_dir, backend="reference", seconds=1.0, plays=2,
                          capture=True, judge_frontend=(results, name), say=echo)
    except XenQemuError as exc:
        return said("sndif-harness certify-frontend", exc), None
    if result.failed_stage is not None:
        print(f"sndif-harness certify-frontend: real Xen under QEMU: stage "
              f"{result.failed_stage}: {result.failure}", file=sys.stderr)
        return 3, None
    if not results.is_file():
        print(f"sndif-harness certify-frontend: the judging backend wrote no {results}",
              file=sys.stderr)
        return 3, None
    doc = read_results(results)
    doc["run"]["command_line"] = list(sys.argv)
    doc["run"]["report_dir"] = str(report_dir)
    doc["run"]["scenario"] = {
        "steps": ["aplay (OPEN, WRITE, START, STOP, CLOSE)"] * 2 + ["arecord"],
        "errors": [] if result.ok else [result.mismatch or result.capture_mismatch
                                        or f"aplay rc={result.aplay_rc}, arecord rc="
                                           f"{result.arecord_rc}"],
        "stopped": None}
    write_atomic(results, doc)
    return int(doc["summary"]["exit_status"]), doc


def _table(doc: dict[str, Any]) -> list[str]:
    from harness.fejudge.clauses import FE_CLAUSES

    by_id = {c["id"]: c for c in doc["clauses"]}
    cases = {c["nodeid"]: c for c in doc["cases"]}
    lines = [f"{'CLAUSE':9}  {'LEVEL':6}  {'VERDICT':10}  EVIDENCE"]
    for cid in FE_CLAUSES:
        c = by_id[cid]
        case = cases.get(f"frontend::{cid}")
        why = case["message"] if case else (c.get("untestable") or "")
        lines.append(f"{cid:9}  {c['level']:6}  {c['verdict']:10}  {why[:110]}")
    return lines


def _certify_frontend(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.frontend.defects import UnknownDefect, lookup
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown
    from harness.report.results import write_text_atomic

    try:
        defects = [lookup(n).name for n in args.fe_defect]
    except UnknownDefect as exc:
        raise UsageError(f"--fe-defect: {exc}") from None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report_dir = Path(args.report_dir or Path("reports") / f"certify-frontend-{stamp}")
    report_dir = report_dir.absolute()
    if report_dir.exists() and (not report_dir.is_dir() or any(report_dir.iterdir())):
        raise UsageError(f"--report-dir {report_dir}: exists and is not an empty directory")
    report_dir.mkdir(parents=True, exist_ok=True)
    if args.frontend == "linux" and defects:
        raise UsageError("--fe-defect: only the reference frontend has injectable defects")
    if args.frontend == "linux":
        status, doc = run_linux(report_dir)
    else:
        status, doc = run(args.frontend, defects, report_dir)
    if doc is None:
        return status
    write_text_atomic(report_dir / "report.html", render_html(doc))
    write_text_atomic(report_dir / "report.md", render_markdown(doc))
    print("\n".join(_table(doc)))
    print(f"overall: {doc['summary']['reason']}")
    print(f"report: {report_dir / 'report.html'} (results.json, report.md beside it)")
    return status


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "certify-frontend", help="judge a frontend's side of the protocol",
        description="Run the reference backend as a judge of the frontend (every "
                    "frontend-side clause) while the frontend plays, pauses, captures, "
                    "sets the volume, reopens and tears down, on the simulated Xen. "
                    "Exit 0 no MUST clause failed, 1 one did, 2 usage error, 3 harness "
                    "failure.")
    p.add_argument("--frontend", choices=FRONTENDS, default="reference",
                   help="the frontend under test: reference (the harness's, on the "
                        "simulated Xen; default) or linux (xen-snd-front in a PV guest "
                        "playing twice with aplay and recording with arecord, on real Xen "
                        "4.17 under QEMU: see sndif-harness xen-qemu)")
    p.add_argument("--fe-defect", action="append", default=[], metavar="NAME",
                   help="inject this bug into the reference frontend (repeatable; "
                        "'sndif-harness defects --frontend' lists them)")
    p.add_argument("--report-dir", help="where results.json, report.html and report.md "
                                        "go (default reports/certify-frontend-<time>)")
    p.set_defaults(handler=_certify_frontend)
