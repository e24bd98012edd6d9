"""``sndif-harness certify``: run the conformance suites against a backend and write the
certification report. A thin layer over

    pytest suites/ -p harness.certify.plugin --report-dir DIR --junitxml DIR/junit.xml ...

run in this process; the options are passed through (see :mod:`harness.certify.plugin`).
Exit status: 0 no MUST/REF clause failed, 1 one did (or the backend crashed or hung),
2 usage error, 3 the harness or the environment failed.
With ``--baseline FILE`` the run is then gated on that baseline (``sndif-harness gate``):
0 no change, 1 a change; 2 and 3 keep their meaning.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from harness.cli import positive_float
from harness.cli.world_opts import PLATFORMS, add_world_options, world_from_args
from harness.world.options import option_args

# pytest's exit codes → ours: a usage error is 2; anything the plugin did not decide
# (interrupted before the plugin ran, no tests collected, ...) is a harness failure
_USAGE = 4
_OURS = (0, 1, 3)


def _suites_dir() -> Path:
    import harness

    return Path(harness.__file__).resolve().parents[1] / "suites"


def pytest_args(args: argparse.Namespace, report_dir: Path, suites: Path) -> list[str]:
    """The pytest command line of a certify invocation."""
    # (no hypothesis plugin: the suites do not use it, and loading it costs seconds
    # under emulation, for each run on real Xen under QEMU)
    out = [str(suites), "-p", "harness.certify.plugin", "-p", "no:hypothesispytest",
           "--report-dir", str(report_dir),
           f"--junitxml={report_dir / 'junit.xml'}",
           f"--alluredir={report_dir / 'allure-results'}"]
    out += option_args(lambda name: getattr(args, name))
    for opt in ("profile", "case_timeout"):
        value = getattr(args, opt)
        if value is not None:
            out += ["--" + opt.replace("_", "-"), str(value)]
    if args.strict:
        out.append("--certify-strict")
    if args.platform != "sim":
        out += ["--platform", args.platform]
    if args.frontend_domid is not None:
        out += ["--frontend-domid", str(args.frontend_domid)]
    if args.k:
        out += ["-k", args.k]
    if args.n:
        out += ["-n", str(args.n)]
    return out


def _certify(args: argparse.Namespace) -> int:
    import pytest

    from harness.cli import UsageError

    # a bad world option is a usage error before anything starts
    world_from_args(args, platform="real" if args.platform != "sim" else "sim")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report_dir = Path(args.report_dir or Path("reports") / f"certify-{stamp}").absolute()
    from harness.xenqemu.dom0_harness import BATCH

    if report_dir.exists() and (not report_dir.is_dir() or any(report_dir.iterdir())) \
            and not BATCH.finishing:  # (a batch's run, planned into it, finished now)
        raise UsageError(f"--report-dir {report_dir}: exists and is not an empty directory")
    if args.profile is not None and not Path(args.profile).is_file():
        raise UsageError(f"--profile {args.profile}: no such file")
    if args.n and importlib.util.find_spec("xdist") is None:
        raise UsageError(f"-n {args.n}: parallel runs need pytest-xdist, which is not "
                         "installed in this environment")
    if args.baseline is not None:
        from harness.cli.baseline_cmd import load_baseline

        load_baseline(args.baseline)  # a bad baseline is a usage error before the run
    suites = _suites_dir()
    if not suites.is_dir():
        raise UsageError(f"no suites directory at {suites} (run from a source checkout)")
    if args.platform == "xen-qemu":
        from harness.xenqemu.certify import certify_on_qemu

        rc = certify_on_qemu(args, report_dir, suites)
    else:
        rc = int(pytest.main(pytest_args(args, report_dir, suites)))
    if rc == _USAGE:
        return 2
    rc = rc if rc in _OURS else 3
    if args.baseline is None or rc == 3:
        return rc  # a harness failure stays one, whatever the baseline says
    from harness.cli.baseline_cmd import run_gate

    # the run's own 0/1 gives way to the gate's: with a baseline, only a change fails;
    # with -k the cases left out are not a change
    return run_gate(args.baseline, str(report_dir / "results.json"), allow_gone=bool(args.k))


def _domid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a domain id: {text!r}") from None
    if not 0 <= value < 0x7FF0:  # DOMID_FIRST_RESERVED
        raise argparse.ArgumentTypeError(f"{value} is not a domain id (0 .. 32751)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "certify", help="run the conformance suites against a backend and write a report",
        description="Run every suite under suites/ against the backend, judge each clause of "
                    "the sndif specification (PASS, FAIL, NONSTRICT, INFO, N/A, "
                    "INCONCLUSIVE, CRASH, HANG, UNTESTED), and write results.json and "
                    "junit.xml. Exit 0: no MUST clause failed; 1: one did; 2: usage error; "
                    "3: the harness or environment failed.")
    add_world_options(p)
    p.add_argument("--profile", metavar="FILE",
                   help="the backend's profile (recorded in the report)")
    p.add_argument("--strict", action="store_true",
                   help="a broken SHOULD clause fails the run (default: NONSTRICT)")
    p.add_argument("-k", metavar="EXPR", help="only the cases matching EXPR (pytest -k)")
    p.add_argument("--report-dir", metavar="DIR",
                   help="where the report goes (default: reports/certify-<UTC time>/)")
    p.add_argument("-n", type=_count, metavar="N",
                   help="run the cases in N processes (needs pytest-xdist)")
    p.add_argument("--case-timeout", type=positive_float, metavar="S",
                   help="request timeout after which the backend is called hung")
    p.add_argument("--platform", choices=PLATFORMS, default="sim",
                   help="sim: the simulated Xen (default); real: the Xen host this runs on, "
                        "in dom0 (the backend is started in dom0, the frontend is dom0 "
                        "too unless --frontend-domid names a guest); xen-qemu: real Xen "
                        "4.17 booted under QEMU for the run (see sndif-harness xen-qemu), "
                        "the report brought back")
    p.add_argument("--frontend-domid", type=_domid, metavar="N", default=None,
                   help="the frontend's domain (default 1 on the sim, 0 on real Xen)")
    p.add_argument("--baseline", metavar="FILE",
                   help="then gate the run on this baseline (sndif-harness gate): exit 0 "
                        "no change, 1 a change, 3 still a harness failure")
    p.set_defaults(handler=_certify)
