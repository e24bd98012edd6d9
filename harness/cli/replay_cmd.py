"""``sndif-harness replay FILE [WORLD OPTIONS]``: replay a fuzz finding (a generated
``test_repro_*.py`` or a ``findings.json``) or a trace (``*.jsonl``: ``demo``, ``shell``,
a certify case's) against a backend: the recorded one, or the one the world options name.
Exit status, finding: 0 the backend no longer shows any of them, 1 at least one
reproduced; trace: 0 every answer as recorded, 1 a difference (``harness.capture.replay``
says what is compared how); both: 2 usage error, 3 the harness failed."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli import number_in
from harness.world.options import WORLD_OPTIONS, dest, option_args

if TYPE_CHECKING:
    from harness.capture.recording import Recording
    from harness.capture.replay import Outcome
    from harness.world.spec import WorldSpec


def _given_world(args: argparse.Namespace) -> list[str] | None:
    """The world options given on the command line, in command-line form; None if none."""
    if not any(hasattr(args, dest(flag, kw)) for flag, kw in WORLD_OPTIONS):
        return None
    defaults = {dest(flag, kw): kw.get("default") for flag, kw in WORLD_OPTIONS}
    return option_args(lambda name: getattr(args, name, defaults[name]))


def _replay_trace(args: argparse.Namespace) -> int:
    from harness.capture.recording import (
        RecordingError,
        check_trace_file,
        recorded_world,
        recording_of,
    )
    from harness.cli import UsageError
    from harness.cli.trace_cmd import read_records
    from harness.fuzz.reproducer import world_from_cli
    from harness.world.spec import WorldSpecError

    path = Path(args.file)
    try:
        check_trace_file(path)
        recording = recording_of(read_records(args.file))
    except RecordingError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:  # records of the wrong shape
        raise UsageError(f"{path}: not a trace ({type(exc).__name__}: {exc})") from None
    given = _given_world(args)
    recorded = recorded_world(path)
    world = given if given is not None else recorded[0] if recorded else []
    try:
        spec = world_from_cli(world)
    except WorldSpecError as exc:
        raise UsageError(str(exc)) from None
    source = ("the options given" if given is not None else
              f"as recorded in {recorded[1]}" if recorded else
              "default: the trace does not record its world")
    print(f"replay of {path}: {len(recording.exchanges)} request(s) on "
          f"{', '.join(recording.streams)}, {len(recording.events)} position event(s) "
          f"recorded; world: {' '.join(world) or '--backend reference'} ({source})")
    if recording.not_replayed:
        print(f"  ({recording.not_replayed} XenStore operations and watch events in the "
              "trace are not replayed: the connection is made anew)")
    try:
        with tempfile.TemporaryDirectory(prefix="sndif-replay-") as tmp:
            outcome = _run_trace(recording, spec, Path(args.out or tmp), args.timeout)
    except UsageError:
        raise
    except Exception as exc:  # the harness or the environment, not the backend
        print(f"sndif-harness replay: harness failure: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 3
    diffs = outcome.differences
    if not diffs:
        print(f"no difference: {outcome.responses} response(s) as recorded, "
              f"{outcome.events} position event(s) (recorded {len(recording.events)}) "
              "within tolerance")
        return 0
    print(diffs[0].block())
    print(f"{len(diffs)} difference(s); {outcome.sent} of {len(recording.exchanges)} "
          f"request(s) sent, {outcome.responses} response(s)")
    return 1


def _run_trace(recording: Recording, spec: WorldSpec, out: Path, timeout: float
               ) -> Outcome:
    """Build the world, check the trace's streams are in its card, replay."""
    from harness.capture.replay import Replay
    from harness.cli import UsageError
    from harness.shell.console import terminating_signals
    from harness.trace import Trace
    from harness.world.world import running_world

    # SIGTERM/SIGHUP unwind the world like an exception: nothing is left running
    with terminating_signals(), Trace(out / "trace.jsonl") as trace, \
            running_world(spec, out, trace=trace) as world:
        assert world.dev is not None
        card = [s.path for s in world.dev.streams]
        missing = [p for p in recording.streams if p not in card]
        if missing:
            raise UsageError(f"the trace's stream(s) {', '.join(missing)} are not in the "
                             f"card (streams {', '.join(card)}): give the card it was "
                             "recorded with (--vsnd or --config)")
        return Replay(recording, world, timeout=timeout,
                      report=lambda d: print(d.line(), flush=True)).run()


def _replay(args: argparse.Namespace) -> int:
    from harness.cli import UsageError

    if Path(args.file).suffix not in (".py", ".json"):
        return _replay_trace(args)
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
        "replay", help="replay a fuzz finding (reproducer or findings.json) or a trace "
                       "against a backend",
        description="A fuzz finding: rebuild the world and replay the exact requests of "
                    "the finding, judged by the fuzzer's oracles; exit 0 nothing "
                    "reproduced, 1 a finding reproduced. A trace (*.jsonl): send the "
                    "frontend's recorded requests again and print where the backend's "
                    "answers (responses, position events) differ from the recorded ones; "
                    "exit 0 no difference, 1 a difference. The recorded world (a finding's, "
                    "or a certify case's run) is used unless world options are given. "
                    "Exit 2 usage error, 3 harness failure.")
    p.add_argument("file", metavar="FILE",
                   help="a test_repro_*.py, a findings.json, or a trace (*.jsonl)")
    # no defaults: an option given replaces the recorded world, none keeps it
    for flag, kw in WORLD_OPTIONS:
        p.add_argument(flag, **{**kw, "default": argparse.SUPPRESS})
    p.add_argument("--out", metavar="DIR", default=None,
                   help="keep the backend's log and the trace here (default: discarded)")
    p.add_argument("--timeout", metavar="S", type=number_in(0.1, 120, unit=" s"),
                   default=3.0, help="trace: how long to wait for each response (default 3 s, "
                                     "the frontend's request timeout)")
    p.set_defaults(handler=_replay)
