"""``sndif-harness replay FILE [WORLD OPTIONS]``: replay a fuzz finding (a generated
``test_repro_*.py`` or a ``findings.json``) against a backend: the recorded one, or the
one the world options name. Exit status: 0 the backend no longer shows any of them, 1 at
least one reproduced, 2 usage error, 3 the harness failed."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.world.options import WORLD_OPTIONS, dest, option_args


def _given_world(args: argparse.Namespace) -> list[str] | None:
    """The world options given on the command line, in command-line form; None if none."""
    if not any(hasattr(args, dest(flag, kw)) for flag, kw in WORLD_OPTIONS):
        return None
    defaults = {dest(flag, kw): kw.get("default") for flag, kw in WORLD_OPTIONS}
    return option_args(lambda name: getattr(args, name, defaults[name]))


def _replay(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.fuzz.reproducer import ReproducerError, load_reproducers, replay, world_from_cli
    from harness.world.spec import WorldSpecError

    path = Path(args.file)
    try:
        repros = load_reproducers(path)
    except ReproducerError as exc:
        raise UsageError(str(exc)) from None
    if not repros:
        raise UsageError(f"{path}: holds no finding")
    world = _given_world(args)
    try:
        for r in repros:
            world_from_cli(world or r.world)  # a bad world is a usage error, up front
    except WorldSpecError as exc:
        raise UsageError(str(exc)) from None
    reproduced = 0
    for r in repros:
        where = " ".join(world or r.world)
        print(f"{r.oracle} ({', '.join(r.clauses)}): {len(r.steps)} request(s) against "
              f"{where}")
        try:
            with tempfile.TemporaryDirectory(prefix="sndif-replay-") as tmp:
                problems = replay(world or r.world, r.steps, stream=r.stream,
                                  out=args.out or tmp, driver=r.driver)
        except Exception as exc:  # the harness or the environment, not the backend
            print(f"sndif-harness replay: harness failure: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 3
        hit = [p for p in problems if p.oracle == r.oracle]
        reproduced += bool(hit)
        if hit:
            print(f"  reproduced: {hit[0].detail}")
        else:
            print("  not reproduced" + (f"; other problems: {problems}" if problems else ""))
    print(f"{reproduced} of {len(repros)} finding(s) reproduced")
    return 1 if reproduced else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "replay", help="replay a fuzz finding (reproducer or findings.json) against a backend",
        description="Rebuild the world and replay the exact requests of a fuzz finding, "
                    "judged by the fuzzer's oracles. The world recorded with the finding is "
                    "used unless world options are given. Exit 0 nothing reproduced, 1 a "
                    "finding reproduced, 2 usage error, 3 harness failure.")
    p.add_argument("file", metavar="FILE", help="a test_repro_*.py or a findings.json")
    # no defaults: an option given replaces the recorded world, none keeps it
    for flag, kw in WORLD_OPTIONS:
        p.add_argument(flag, **{**kw, "default": argparse.SUPPRESS})
    p.add_argument("--out", metavar="DIR", default=None,
                   help="keep the backend's log and the trace here (default: discarded)")
    p.set_defaults(handler=_replay)
