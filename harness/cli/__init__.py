"""``sndif-harness``: one entry point, a sub-command per module.

Each module in ``COMMAND_MODULES`` exposes ``register(commands, benches)``: it adds its
sub-commands to ``commands`` and its benchmarks (``sndif-harness bench NAME``) to
``benches``. A handler returns the exit status; a :class:`UsageError` becomes a one-line
message and status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "harness.cli.models_cmd",
    "harness.cli.sim_cmd",
    "harness.cli.demo_cmd",
    "harness.cli.defects_cmd",
)


class UsageError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sndif-harness",
        description="Conformance and fuzzing harness for the Xen PV sound protocol (sndif).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    benches = bench.add_subparsers(dest="bench", metavar="BENCH")
    benches.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, benches)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"sndif-harness: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sndif-harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
