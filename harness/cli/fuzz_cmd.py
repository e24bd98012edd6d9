"""``sndif-harness fuzz``: fuzz one stream of the backend under test with the state machine
of :mod:`harness.fuzz` within a budget; a live count, the findings at the end, a
reproducer per finding and ``findings.json`` under ``--out``.
Exit status: 0 no finding, 1 findings, 2 usage error, 3 the harness failed."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from harness.cli import positive_float
from harness.cli.world_opts import (
    REAL_DOM0,
    add_platform_option,
    add_world_options,
    platform_more,
    world_from_args,
)
from harness.world.options import option_args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


#: a request unanswered this long is probed; under QEMU's emulation, Python in dom0 is
#: ~20x slower than on the host
REQUEST_TIMEOUT = 1.0

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """argparse type of a budget: ``90s``, ``10m``, ``1h``, ``1.5m`` or plain seconds."""
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:], None)
    number = t[:-1] if unit is not None else t
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (say 90s, 10m or 1h)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _catalogue(args: argparse.Namespace) -> int:
    from harness.fuzz.catalogue import CATCH_TARGET, run_catalogue, table

    out = Path(args.out or f"reports/fuzz-catalogue-{time.strftime('%Y%m%d-%H%M%S')}")
    names = args.defect or None
    if names:
        from harness.backends.reference.defects import UnknownDefect, lookup

        try:
            for name in names:
                lookup(name)
        except UnknownDefect as exc:
            from harness.cli import UsageError

            raise UsageError(str(exc)) from None
    print(f"fuzzing {len(names) if names else 'every'} catalogued defect(s), "
          f"{args.seconds_per_defect:g} s each, {args.workers} at a time; out {out}",
          flush=True)

    def row_done(r: Any) -> None:
        what = r.error or (f"caught by {r.caught_by} in {r.seconds:.1f} s"
                           if r.caught_by else "not caught")
        print(f"  {r.defect}: {what}", flush=True)

    try:
        result = run_catalogue(out, args.seconds_per_defect, workers=args.workers,
                               names=names, seed=args.seed, on_row=row_done)
    except Exception as exc:  # the harness or the environment, not a backend
        print(f"sndif-harness fuzz: harness failure: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 3
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalogue.json").write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    print(table(result))
    print(f"table: {out / 'catalogue.json'}")
    if any(r.error for r in result.rows):
        return 3
    return 0 if result.rate >= CATCH_TARGET and not result.false_alarms else 1


def _fuzz(args: argparse.Namespace) -> int:
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: the workers are stopped and every
    # backend with them, nothing is left running
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _fuzz_run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _fuzz_run(args: argparse.Namespace) -> int:
    if args.catalogue and args.platform != "sim":
        from harness.cli import UsageError

        raise UsageError("--catalogue: the defect catalogue is fuzzed on the simulated Xen "
                         "(--platform sim)")
    if args.catalogue:
        args.workers = args.workers or 2
        return _catalogue(args)
    args.workers = args.workers or 1
    from harness.backends.reference.defects import UnknownDefect, lookup
    from harness.cli import UsageError
    from harness.fuzz.campaign import Budget
    from harness.fuzz.driver import DriverConfig
    from harness.fuzz.machine import GROUPS
    from harness.fuzz.parallel import DatabaseError, Snapshot, open_database, run_campaign

    # the options' own errors first: they need no Xen to be found
    spec = world_from_args(args, **(REAL_DOM0 if args.platform != "sim" else {}))
    try:
        for name in args.defect or []:
            lookup(name)  # a typo is a usage error now, not a backend that fails to start
    except UnknownDefect as exc:
        raise UsageError(str(exc)) from None
    if spec.backend.kind == "attach":
        raise UsageError("--backend attach: fuzzing needs a backend it can restart")
    groups = None
    if args.rules:
        groups = [g.strip() for g in args.rules.split(",") if g.strip()]
        bad = [g for g in groups if g not in GROUPS]
        if bad or not groups:
            raise UsageError(f"--rules {args.rules}: known rule groups are "
                             f"{', '.join(GROUPS)}")
    db = None if args.db in ("none", "") else (args.db or str(_default_db()))
    try:
        open_database(db)
    except DatabaseError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out or f"reports/fuzz-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.platform == "xen-qemu":
        return _fuzz_in_dom0(args, out.absolute())
    more = platform_more(args.platform, "fuzz")
    budget = Budget(examples=args.examples, seconds=args.budget,
                    shrink_seconds=args.shrink_seconds, steps=args.steps, seed=args.seed,
                    stop_at_first=args.stop_at_first)
    dcfg = DriverConfig(stream=args.stream,
                        request_timeout=args.request_timeout or REQUEST_TIMEOUT)
    tty = sys.stdout.isatty()
    last = [0.0]

    def progress(snaps: list[Snapshot], elapsed: float) -> None:
        # a line rewritten in place on a terminal, a line every 5 s in a log
        if elapsed - last[0] < (0.5 if tty else 5.0):
            return
        last[0] = elapsed
        e = max(elapsed, 1e-3)
        examples = sum(x.examples for x in snaps)
        requests = sum(x.requests for x in snaps)
        unique = len({f for x in snaps for f in x.found})
        pairs = len({k for x in snaps for k in x.coverage})
        print(f"{chr(13) if tty else ''}{examples} examples ({examples / e:.1f}/s), "
              f"{requests / e:.0f} requests/s, {unique} unique failure(s), "
              f"{pairs} operation x state pairs covered, {elapsed:.0f} s",
              end="" if tty else "\n", flush=True)

    world_args = option_args(lambda name: getattr(args, name))
    if more["platform"] == "real":
        world_args += ["--platform", "real", "--frontend-domid", "0"]
    if args.compare_feedback:
        return _compare(world_args, out, budget, dcfg, groups)
    try:
        result = run_campaign(world_args, out, budget, dcfg, workers=args.workers,
                              mode=args.mode, groups=groups, db=db, progress=progress,
                              feedback=args.coverage_feedback)
    except Exception as exc:  # the harness or the environment, not the backend
        print(f"\nsndif-harness fuzz: harness failure: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 3
    s = result.stats()
    print(f"{chr(13) if tty else ''}{s['examples']} examples, {s['requests']} requests in "
          f"{s['seconds']} s with {s['workers']} worker(s): "
          f"{s['requests_per_s']} requests/s, {s['malformed_per_s']} malformed requests/s "
          "executed and checked")
    print(_coverage_table(result.coverage))
    if result.edges is not None:
        print(f"backend edges reached: {result.edges}"
              + (" (with coverage feedback)" if args.coverage_feedback else ""))
    for note in result.notes:
        print(note)
    if not result.found:
        print(f"no finding; summary: {result.summary}; results: {result.results}")
        return 0
    print(f"{len(result.found)} finding(s):")
    for name, f in sorted(result.found.items()):
        print(f"  {name} ({', '.join(f.problem.clauses)}): {f.problem.detail}")
        print(f"    {len(f.steps)} request(s): " +
              "; ".join(st.describe()[:60] for st in f.steps[:4]) +
              (" ..." if len(f.steps) > 4 else ""))
        print(f"    reproducer: {out / ('test_repro_' + name.replace('-', '_') + '.py')}")
    print(f"summary: {result.summary}; results: {result.results}")
    return 1


def _fuzz_in_dom0(args: argparse.Namespace, out: Path) -> int:
    """The same campaign in dom0 of real Xen under QEMU; its output is printed here."""
    from harness.xenqemu.dom0_harness import REQUEST_TIMEOUT_QEMU, rerun_in_dom0

    # Python under TCG is ~20x slower: an answer takes longer than on the host; the
    # budget covers the campaign, its shrinking and the backends' starts and stops, slowed
    return rerun_in_dom0(args, out, [], budget=600.0 + 20 * (args.budget + args.shrink_seconds),
                         request_timeout=args.request_timeout or REQUEST_TIMEOUT_QEMU)


def _compare(world: list[str], out: Path, budget: Any, dcfg: Any,
             groups: list[str] | None) -> int:
    """The same budget and seed twice, without and with coverage feedback, against an
    instrumented backend: the edges each reached."""
    from harness.fuzz.parallel import run_campaign

    edges: dict[str, int | None] = {}
    for name, feedback in (("without", False), ("with", True)):
        print(f"{name} coverage feedback: {budget.seconds:g} s ...", flush=True)
        try:
            r = run_campaign(world, out / f"{name}-feedback", budget, dcfg, groups=groups,
                             db=None, feedback=feedback)
        except Exception as exc:  # the harness or the environment
            print(f"sndif-harness fuzz: harness failure: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 3
        edges[name] = r.edges
        print(f"  {r.examples} examples, {len(r.found)} finding(s), edges reached: "
              f"{r.edges if r.edges is not None else 'n/a (backend not instrumented)'}")
    if edges["with"] is None or edges["without"] is None:
        print("no edge counts: build the backend with `python -m harness.fuzz.coverage`")
        return 1
    print(f"edges reached in {budget.seconds:g} s: {edges['without']} without feedback, "
          f"{edges['with']} with feedback")
    return 0


def _default_db() -> Path:
    """Hypothesis' saved failures across runs: under the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sndif-harness" / "fuzz-examples"


def _coverage_table(coverage: dict[str, int]) -> str:
    """Requests per operation (rows) and the stream state they met (columns)."""
    if not coverage:
        return "coverage: no request executed"
    states = sorted({k.split(":", 1)[0] for k in coverage})
    ops = sorted({k.split(":", 1)[1] for k in coverage})
    lines = ["coverage (requests by operation and stream state):",
             f"  {'':16}" + "".join(f"{st:>9}" for st in states)]
    for op in ops:
        lines.append(f"  {op[:16]:16}" + "".join(
            f"{coverage.get(f'{st}:{op}', 0):>9}" for st in states))
    return "\n".join(lines)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "fuzz", help="fuzz a stream of the backend; reproducers for what breaks",
        description="Drive one stream of the backend under test with a Hypothesis state "
                    "machine (valid and malformed OPEN, READ/WRITE in and out of bounds, "
                    "any TRIGGER, CLOSE, HW_PARAM_QUERY, raw malformed requests), checking "
                    "after every step that each request is answered once with id and "
                    "operation echoed, statuses are 0 or -XEN_Exx, valid requests succeed, "
                    "the backend lives and answers, and maps nothing outside the buffer. "
                    "Exit 0 no finding, 1 findings, 2 usage error, 3 harness failure.")
    add_platform_option(p, "findings and reproducers")
    add_world_options(p)
    p.add_argument("--mode", choices=("machine", "requests"), default="machine",
                   help="machine: the state machine, one backend case per example "
                        "(default); requests: malformed requests on a closed stream, "
                        "pipelined, no restarts (the throughput mode)")
    p.add_argument("--examples", type=_positive_int, default=1_000_000_000,
                   help="examples (one backend case each) at most, per worker (default: "
                        "no limit but the budget; a count makes a seeded run repeatable)")
    p.add_argument("--budget", type=duration, default=60.0, metavar="DURATION",
                   help="time for generating examples: 90s, 10m, 1h (default 60s)")
    p.add_argument("--seconds", type=duration, dest="budget", help=argparse.SUPPRESS)
    p.add_argument("--catalogue", action="store_true",
                   help="instead of one campaign: a short campaign per catalogued defect "
                        "of the reference backend (--defect NAME to pick some), and the "
                        "table of what caught each. Exit 0 when at least 80%% are caught "
                        "and no AMBIG behaviour is reported, 1 otherwise")
    p.add_argument("--seconds-per-defect", type=duration, default=8.0, metavar="DURATION",
                   help="--catalogue: each defect's budget (default 8s; some need more "
                        "and get it)")
    p.add_argument("-n", "--workers", type=_positive_int, default=None, metavar="WORKERS",
                   help="processes, each with its own world and seed offset; findings "
                        "merged (default 1; --catalogue: campaigns at a time, default 2)")
    p.add_argument("--coverage-feedback", action="store_true",
                   help="steer by the edges an instrumented backend reaches (build it "
                        "with `python -m harness.fuzz.coverage`); the edges are printed")
    p.add_argument("--compare-feedback", action="store_true",
                   help="run the budget twice, without and with --coverage-feedback, and "
                        "print the edges each reached")
    p.add_argument("--stop-at-first", action="store_true",
                   help="stop at the first finding (default: go on to the budget, a new "
                        "batch and seed after each finding, for more unique failures)")
    p.add_argument("--rules", metavar="GROUPS",
                   help="machine rule groups, comma-separated (default all: core, "
                        "reserved, events, hwquery, volume, xenstore)")
    p.add_argument("--db", metavar="DIR|redis://HOST:PORT",
                   help="Hypothesis example database shared by the workers and runs: "
                        "saved failures are replayed first (default "
                        "~/.cache/sndif-harness/fuzz-examples; 'none': no database, "
                        "fully deterministic for a seed)")
    p.add_argument("--shrink-seconds", type=positive_float, default=20.0,
                   help="time for shrinking what was found (default 20)")
    p.add_argument("--steps", type=_positive_int, default=20,
                   help="rules per example at most (default 20)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--stream", default="0/0", metavar="PCM/STREAM",
                   help="the stream to fuzz (default 0/0)")
    p.add_argument("--request-timeout", type=positive_float, default=None, metavar="S",
                   help=f"a request unanswered this long is probed (default "
                        f"{REQUEST_TIMEOUT:g}; 10 on xen-qemu)")
    p.add_argument("--out", metavar="DIR",
                   help="findings, reproducers and the backend's log (default "
                        "reports/fuzz-<time>)")
    p.set_defaults(handler=_fuzz, parser=p)
