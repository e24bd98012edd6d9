"""``sndif-harness report html|md RESULTS.json [-o FILE]``: render the certification report
again from a results.json (:mod:`harness.report.html`, :mod:`harness.report.markdown`),
e.g. after the renderer improved or for a run whose report was lost. Default output:
``report.html`` / ``report.md`` next to the results.json; ``-o -`` prints it.

``sndif-harness report compare A.json B.json [...] [-o FILE] [--format html|md]``: the runs
side by side, clause by clause (:mod:`harness.report.compare`). Default output:
``compare.html`` / ``compare.md`` in the current directory; the format follows ``-o``'s
suffix (``.md``) unless ``--format`` says.

``sndif-harness report allure REPORT_DIR [-o DIR]``: the Allure HTML report of a certify run
(:mod:`harness.cli.allure_cmd`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_DEFAULT_NAME = {"html": "report.html", "md": "report.md"}


def _write(out: str, text: str) -> int:
    from harness.cli import UsageError
    from harness.report.results import write_text_atomic

    if out == "-":
        sys.stdout.write(text)
        return 0
    target = Path(out)
    if target.is_dir():
        raise UsageError(f"-o {out}: is a directory (give a file name)")
    if not target.parent.is_dir():
        raise UsageError(f"-o {out}: no such directory {target.parent}")
    write_text_atomic(target, text)
    print(target)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.report.compare import (
        make_runs,
        render_compare_html,
        render_compare_markdown,
    )
    from harness.report.results import ResultsError, read_results

    if len(args.results) < 2:
        raise UsageError("report compare: give at least two results.json files")
    fmt = args.compare_format
    if fmt is None:
        fmt = "md" if args.output and args.output.endswith(".md") else "html"
    docs = []
    for path in args.results:
        try:
            docs.append((path, read_results(path)))
        except ResultsError as exc:
            raise UsageError(str(exc)) from None
    runs = make_runs(docs)
    text = render_compare_html(runs) if fmt == "html" else render_compare_markdown(runs)
    return _write(args.output or f"compare.{fmt}", text)


def _report(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.report.results import ResultsError, read_results

    if args.format == "compare":
        return _compare(args)
    if args.format == "allure":  # REPORT_DIR → the Allure HTML (harness.cli.allure_cmd)
        from harness.cli.allure_cmd import report_allure

        if args.compare_format is not None:
            raise UsageError("--format: only for report compare")
        return report_allure(args)
    if args.compare_format is not None:
        raise UsageError(f"--format: only for report compare (report {args.format} is "
                         f"{args.format} already)")
    if len(args.results) != 1:
        raise UsageError(f"report {args.format}: give one results.json, not "
                         f"{len(args.results)} (report compare takes several)")
    args.results = args.results[0]
    try:
        doc = read_results(args.results)
    except ResultsError as exc:
        raise UsageError(str(exc)) from None
    source_dir = Path(args.results).resolve().parent
    out = args.output or str(source_dir / _DEFAULT_NAME[args.format])
    if args.format == "html":
        from harness.report.html import render_html

        # the evidence paths are relative to the results' directory: keep the links working
        where = Path.cwd() if out == "-" else Path(out).resolve().parent
        prefix = os.path.relpath(source_dir, where).replace(os.sep, "/")
        text = render_html(doc, evidence_prefix="" if prefix == "." else prefix)
    else:
        from harness.report.markdown import render_markdown

        text = render_markdown(doc)
    return _write(out, text)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report", help="render the certification report (HTML or Markdown) from a "
                       "results.json",
        description="Render report.html (self-contained: inline CSS and plots) or "
                    "report.md from the results.json a certify run wrote; or, with "
                    "compare, several runs side by side, clause by clause, differences "
                    "first.")
    p.add_argument("format", choices=[*sorted(_DEFAULT_NAME), "compare", "allure"],
                   help="html or md (one run), compare (several), or allure (the Allure "
                        "HTML of a certify REPORT_DIR, built offline with the npm package "
                        "allure 3; exit 3 with how to get it when absent)")
    p.add_argument("results", metavar="RESULTS.json", nargs="+",
                   help="the run's results.json (compare: two or more; allure: the "
                        "certify report directory)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write it (default: report.html/report.md next to "
                        "RESULTS.json, compare.html/compare.md here; - for standard "
                        "output)")
    p.add_argument("--format", dest="compare_format", choices=sorted(_DEFAULT_NAME),
                   help="compare only: html (default, or md when -o ends in .md)")
    p.set_defaults(handler=_report)
