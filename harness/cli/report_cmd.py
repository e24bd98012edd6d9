"""``sndif-harness report html|md RESULTS.json [-o FILE]``: render the certification report
again from a results.json (:mod:`harness.report.html`, :mod:`harness.report.markdown`),
e.g. after the renderer improved or for a run whose report was lost. Default output:
``report.html`` / ``report.md`` next to the results.json; ``-o -`` prints it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_DEFAULT_NAME = {"html": "report.html", "md": "report.md"}


def _report(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.report.results import ResultsError, read_results, write_text_atomic

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


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report", help="render the certification report (HTML or Markdown) from a "
                       "results.json",
        description="Render report.html (self-contained: inline CSS and plots) or "
                    "report.md from the results.json a certify run wrote.")
    p.add_argument("format", choices=sorted(_DEFAULT_NAME), help="html or md")
    p.add_argument("results", metavar="RESULTS.json", help="the run's results.json")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write it (default: report.html/report.md next to "
                        "RESULTS.json; - for standard output)")
    p.set_defaults(handler=_report)
