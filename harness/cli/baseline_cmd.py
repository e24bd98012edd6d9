"""``sndif-harness baseline create RESULTS.json [-o FILE]`` records the verdict of every case
of a run as the expected one; ``sndif-harness gate --baseline FILE RESULTS.json`` compares
a run with it (:mod:`harness.report.baseline`) and prints what changed.

Gate exit status: 0 nothing changed, 1 something did, 2 usage error (an unreadable
baseline or results.json).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.report.baseline import Baseline

_DEFAULT = "baseline.toml"


def _results(path: str) -> dict[str, Any]:
    from harness.cli import UsageError
    from harness.report.results import ResultsError, read_results

    try:
        return read_results(path)
    except ResultsError as exc:
        raise UsageError(str(exc)) from None


def load_baseline(path: str) -> Baseline:
    """The baseline at ``path``, or a :class:`UsageError` naming what is wrong."""
    from harness.cli import UsageError
    from harness.report.baseline import BaselineError, read_baseline

    try:
        return read_baseline(path)
    except BaselineError as exc:
        raise UsageError(str(exc)) from None


def _create(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.report.baseline import (
        BaselineError,
        Expected,
        baseline_from_results,
        read_baseline,
        render_baseline,
    )
    from harness.report.results import write_text_atomic

    doc = _results(args.results)
    base = baseline_from_results(doc, source=args.results)
    out = args.output
    if out != "-":
        target = Path(out)
        if target.is_dir():
            raise UsageError(f"-o {out}: is a directory (give a file name)")
        if not target.parent.is_dir():
            raise UsageError(f"-o {out}: no such directory {target.parent}")
        if target.exists():
            # tightening an existing baseline keeps the reasons people wrote for failures
            # that are still there
            try:
                old = read_baseline(target)
            except BaselineError as exc:
                raise UsageError(f"-o {out}: exists and is not a baseline ({exc}); "
                                 "remove it first") from None
            for nodeid, exp in base.cases.items():
                prev = old.cases.get(nodeid)
                if prev is not None and prev.verdict == exp.verdict and prev.reason:
                    base.cases[nodeid] = Expected(exp.verdict, prev.reason)
    text = render_baseline(base)
    if out == "-":
        sys.stdout.write(text)
        return 0
    write_text_atomic(out, text)
    accepted = sum(e.verdict not in ("PASS", "INFO", "N/A") for e in base.cases.values())
    print(f"{out}: {len(base.cases)} cases ({accepted} not passing: give each a reason)")
    return 0


def run_gate(baseline: str, results: str, *, allow_gone: bool = False) -> int:
    """Print the gate's report; 0 no change, 1 a change."""
    from harness.report.baseline import failing, gate, render_changes

    base = load_baseline(baseline)
    doc = _results(results)
    changes = gate(base, doc, allow_gone=allow_gone)
    hint = shlex.join(["sndif-harness", "baseline", "create", results, "-o", baseline])
    sys.stdout.write(render_changes(changes, baseline=baseline, results=results,
                                    create_hint=hint))
    return 1 if failing(changes) else 0


def _gate(args: argparse.Namespace) -> int:
    return run_gate(args.baseline, args.results, allow_gone=args.allow_gone)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "baseline", help="record a run's verdicts as the expected ones (for `gate`)",
        description="Write baseline.toml: every case's verdict in RESULTS.json as the "
                    "expected one, and every clause's verdict (its coverage). A case that "
                    "does not pass gets a `reason` to fill in. Rewriting an existing "
                    "baseline keeps the reasons of failures that are still there.")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    c = sub.add_parser("create", help="a baseline from a results.json")
    c.add_argument("results", metavar="RESULTS.json", help="the run's results.json")
    c.add_argument("-o", "--output", default=_DEFAULT, metavar="FILE",
                   help=f"where to write it (default: {_DEFAULT}; - for standard output)")
    c.set_defaults(handler=_create)

    g = commands.add_parser(
        "gate", help="compare a run with a baseline: exit 1 on any change",
        description="Compare RESULTS.json with a baseline and print the differences: cases "
                    "that now FAIL, CRASH or HANG, new failing cases, accepted failures "
                    "that now pass (tighten the baseline), other verdict changes, clauses "
                    "that lost their coverage, cases that did not run, an incomplete run. "
                    "Exit 0: no change; 1: a change; 2: usage error.")
    g.add_argument("--baseline", required=True, metavar="FILE", help="the baseline.toml")
    g.add_argument("results", metavar="RESULTS.json", help="the run's results.json")
    g.add_argument("--allow-gone", action="store_true",
                   help="cases of the baseline that did not run are not a change (a run "
                        "of a subset, e.g. certify -k)")
    g.set_defaults(handler=_gate)
