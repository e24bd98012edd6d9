"""``sndif-harness bundle REPORT_DIR [-o cert.tar.gz]`` packs a certify report directory
into one archive with a README.txt and a SHA-256 manifest; ``sndif-harness bundle verify
cert.tar.gz`` checks it (:mod:`harness.report.bundle`).

Exit status: 0 written / verified, 1 the bundle does not verify (each problem on a line),
2 usage error (no such directory or file, not a report directory, not an archive).
"""

from __future__ import annotations

import argparse
from pathlib import Path

_DEFAULT = "cert.tar.gz"


def _bundle(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.report.bundle import BundleError, create_bundle, verify_bundle

    what = list(args.what)
    if what[0] == "verify" and len(what) == 2:
        if args.output is not None:
            raise UsageError("bundle verify: -o is for making a bundle, not verifying one")
        try:
            problems = verify_bundle(what[1])
        except BundleError as exc:
            raise UsageError(str(exc)) from None
        for p in problems:
            print(f"{what[1]}: {p}")
        print(f"{what[1]}: " + (f"does NOT verify ({len(problems)} problem(s))" if problems
                                else "verified: every hash matches, no file missing or "
                                     "extra, the certification is complete"))
        return 1 if problems else 0
    if len(what) != 1:
        raise UsageError("bundle: give one report directory (or: bundle verify FILE)")
    report_dir = Path(what[0])
    if what == ["verify"] and not report_dir.is_dir():
        raise UsageError("bundle verify: give the bundle to verify (bundle verify FILE)")
    if not report_dir.is_dir():
        raise UsageError(f"{report_dir}: no such directory")
    out = Path(args.output or _DEFAULT)
    if out.is_dir():
        raise UsageError(f"-o {out}: is a directory (give a file name)")
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: no such directory {out.parent}")
    try:
        names = create_bundle(report_dir, out)
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    print(f"{out}: {len(names)} files")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "bundle", help="pack a report directory into a certification bundle, or verify one",
        usage="sndif-harness bundle REPORT_DIR [-o FILE]\n"
              "       sndif-harness bundle verify FILE",
        description="bundle REPORT_DIR: write a .tar.gz of the report directory "
                    "(results.json, junit.xml, the reports, the backend's log and traces, "
                    "the profile) with a README.txt on how to reproduce the run and a "
                    "SHA-256 manifest. bundle verify FILE: check every hash, that no file "
                    "is missing or extra, no member is unsafe, and that the certification "
                    "is complete (every MUST clause judged or untestable, no skip without "
                    "a reason, the run not incomplete); exit 1 with what is wrong.")
    p.add_argument("what", nargs="+", metavar="REPORT_DIR | verify FILE")
    p.add_argument("-o", "--output", metavar="FILE",
                   help=f"the bundle to write (default: {_DEFAULT})")
    p.set_defaults(handler=_bundle)
