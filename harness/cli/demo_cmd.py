"""``sndif-harness demo``: the end-to-end playback/capture demo on the simulated Xen."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.cli import number_in
from harness.cli.world_opts import add_world_options, world_from_args


def _demo(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.demo import run_demo

    spec = world_from_args(args)
    if spec.backend.kind == "attach":
        raise UsageError("demo: --backend attach is not supported (the demo restarts "
                         "nothing, but needs to stop the backend it judges)")

    out = Path(args.out) if args.out else Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty")
    return 0 if run_demo(out, seconds=args.seconds, spec=spec) else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "demo", help="play and capture through the reference frontend and a backend on the sim",
        description="Create a card with the toolstack, connect the reference frontend and "
                    "backend on the simulated Xen, play a sine and capture one, check every "
                    "byte and event, and write the trace under reports/.")
    p.add_argument("--out", help="output directory (default: reports/demo-<time>)")
    # below half a second too few position events come to judge the pacing by
    p.add_argument("--seconds", type=number_in(0.5, 600, unit=" s"), default=2.0,
                   help="seconds of audio to play (0.5 .. 600, default 2)")
    add_world_options(p)
    p.set_defaults(handler=_demo)
