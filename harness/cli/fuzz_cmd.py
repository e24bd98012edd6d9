"""``sndif-harness fuzz``: fuzz one stream of the backend under test with the state machine
of :mod:`harness.fuzz` within a budget; a live count, the findings at the end, a
reproducer per finding and ``findings.json`` under ``--out``.
Exit status: 0 no finding, 1 findings, 2 usage error, 3 the harness failed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.cli import positive_float
from harness.cli.world_opts import add_world_options, world_from_args
from harness.world.options import option_args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _fuzz(args: argparse.Namespace) -> int:
    from harness.backends.reference.defects import UnknownDefect, lookup
    from harness.cli import UsageError
    from harness.fuzz.campaign import Budget, run_machine, run_requests_mode
    from harness.fuzz.driver import DriverConfig, FuzzDriver

    spec = world_from_args(args)
    try:
        for name in args.defect or []:
            lookup(name)  # a typo is a usage error now, not a backend that fails to start
    except UnknownDefect as exc:
        raise UsageError(str(exc)) from None
    if spec.backend.kind == "attach":
        raise UsageError("--backend attach: fuzzing needs a backend it can restart")
    out = Path(args.out or f"reports/fuzz-{time.strftime('%Y%m%d-%H%M%S')}")
    budget = Budget(examples=args.examples, seconds=args.seconds,
                    shrink_seconds=args.shrink_seconds, steps=args.steps, seed=args.seed)
    dcfg = DriverConfig(stream=args.stream, request_timeout=args.request_timeout)
    tty = sys.stdout.isatty()
    last = [0.0]

    def progress(drv: FuzzDriver, elapsed: float) -> None:
        # a line rewritten in place on a terminal, a line every 5 s in a log
        if elapsed - last[0] < (0.5 if tty else 5.0):
            return
        last[0] = elapsed
        c = drv.counters
        print(f"{chr(13) if tty else ''}{c.examples} examples, "
              f"{c.requests / max(elapsed, 1e-3):.0f} requests/s, "
              f"{c.malformed / max(elapsed, 1e-3):.0f} malformed/s, "
              f"{len(drv.found)} finding(s), {elapsed:.0f} s", end="" if tty else "\n",
              flush=True)

    try:
        world_args = option_args(lambda name: getattr(args, name))
        run = run_machine if args.mode == "machine" else run_requests_mode
        result = run(spec, world_args, out, budget, dcfg, progress)
    except Exception as exc:  # the harness or the environment, not the backend
        print(f"\nsndif-harness fuzz: harness failure: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 3
    s = result.stats()
    print(f"{chr(13) if tty else ''}{s['examples']} examples, {s['requests']} requests in "
          f"{s['seconds']} s: "
          f"{s['requests_per_s']} requests/s, {s['malformed_per_s']} malformed requests/s "
          "executed and checked")
    for note in result.notes:
        print(note)
    if not result.found:
        print(f"no finding; summary: {result.summary}")
        return 0
    print(f"{len(result.found)} finding(s):")
    for name, f in sorted(result.found.items()):
        print(f"  {name} ({', '.join(f.problem.clauses)}): {f.problem.detail}")
        print(f"    {len(f.steps)} request(s): " +
              "; ".join(s.describe()[:60] for s in f.steps[:4]) +
              (" ..." if len(f.steps) > 4 else ""))
        print(f"    reproducer: {out / ('test_repro_' + name.replace('-', '_') + '.py')}")
    print(f"summary: {result.summary}")
    return 1


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
    add_world_options(p)
    p.add_argument("--mode", choices=("machine", "requests"), default="machine",
                   help="machine: the state machine, one backend case per example "
                        "(default); requests: malformed requests on a closed stream, "
                        "pipelined, no restarts (the throughput mode)")
    p.add_argument("--examples", type=_positive_int, default=200,
                   help="examples (one backend case each) at most (default 200)")
    p.add_argument("--seconds", type=positive_float, default=60.0,
                   help="time for generating examples (default 60)")
    p.add_argument("--shrink-seconds", type=positive_float, default=20.0,
                   help="time for shrinking what was found (default 20)")
    p.add_argument("--steps", type=_positive_int, default=20,
                   help="rules per example at most (default 20)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    p.add_argument("--stream", default="0/0", metavar="PCM/STREAM",
                   help="the stream to fuzz (default 0/0)")
    p.add_argument("--request-timeout", type=positive_float, default=1.0, metavar="S",
                   help="a request unanswered this long is probed (default 1)")
    p.add_argument("--out", metavar="DIR",
                   help="findings, reproducers and the backend's log (default "
                        "reports/fuzz-<time>)")
    p.set_defaults(handler=_fuzz)
