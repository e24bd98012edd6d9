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
    "harness.cli.certify_cmd",
    "harness.cli.report_cmd",
    "harness.cli.baseline_cmd",
    "harness.cli.bundle_cmd",
    "harness.cli.fuzz_cmd",
    "harness.cli.replay_cmd",
    "harness.cli.shell_cmd",
    "harness.cli.trace_cmd",
)


class UsageError(Exception):
    """A user mistake: printed as one line, exit status 2."""


#: Xen's DOMID_FIRST_RESERVED: ids from here on are special (DOMID_SELF, DOMID_IO, ...).
DOMID_FIRST_RESERVED = 0x7FF0


def domid_arg(text: str) -> int:
    """argparse type of a domain id: 0 .. DOMID_FIRST_RESERVED-1."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a domain id: {text!r}") from None
    if not 0 <= value < DOMID_FIRST_RESERVED:
        raise argparse.ArgumentTypeError(
            f"domain id {value} out of range (0 .. {DOMID_FIRST_RESERVED - 1})")
    return value


def positive_float(text: str) -> float:
    """argparse type of a duration or count that must be > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse said why on stderr; return, so callers can test it
        return int(exc.code or 0)
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"sndif-harness: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `sndif-harness defects | head`: an OSError too
        return 0
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a path the user gave: a real failure, keep its traceback
        print(f"sndif-harness: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sndif-harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
