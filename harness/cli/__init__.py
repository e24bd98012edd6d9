"""``sndif-harness``: one entry point, a sub-command per module.

Each module in ``COMMAND_MODULES`` exposes ``register(commands, benches)``: it adds its
sub-commands to ``commands`` and its benchmarks (``sndif-harness bench NAME``) to
``benches``. A handler returns the exit status; a :class:`UsageError` becomes a one-line
message and status 2, never a traceback.
"""

from __future__ import annotations

import signal
import sys

if sys.argv and sys.argv[0].endswith("sndif-harness"):
    # Run as the program: a Ctrl-C while the commands' modules are still being imported
    # (before main's own handling) ends quietly with the shell's status for SIGINT. main()
    # puts Python's handler back.
    def _early_interrupt(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, _early_interrupt)

import argparse
import contextlib
import errno
import importlib
import math
import os
from collections.abc import Callable, Sequence
from typing import NoReturn

from harness.xen.api import PlatformDied

COMMAND_MODULES = (
    "harness.cli.models_cmd",
    "harness.cli.sim_cmd",
    "harness.cli.demo_cmd",
    "harness.cli.defects_cmd",
    "harness.cli.certify_cmd",
    "harness.cli.certify_frontend_cmd",
    "harness.cli.report_cmd",
    "harness.cli.baseline_cmd",
    "harness.cli.bundle_cmd",
    "harness.cli.fuzz_cmd",
    "harness.cli.replay_cmd",
    "harness.cli.shell_cmd",
    "harness.cli.trace_cmd",
    "harness.cli.xen_qemu_cmd",
    "harness.cli.bench_cmd",
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
    """argparse type of a duration or count that must be a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, not {text}")
    return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def number_in(low: float, high: float, *, integer: bool = False,
              unit: str = "") -> Callable[[str], float]:
    """argparse type of a number in ``low .. high``: every duration and count a user gives
    is bounded, so that no value runs for ever or grows memory without end."""
    def parse(text: str) -> float:
        try:
            value = int(text, 10) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text}{unit} is out of range ({_num(low)} .. "
                                             f"{_num(high)}{unit})")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names it in errors
    return parse


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a mistake is one line (what was wrong, where to look), not the usage
    block; sub-commands' parsers are of this class too (add_subparsers follows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe or a full disk
    would otherwise fail again at exit, with a traceback of its own."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse said why on stderr; return, so callers can test it
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("sndif-harness: interrupted", file=sys.stderr)
        return 130
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        print(f"sndif-harness: {exc}", file=sys.stderr)
        return 2
    except PlatformDied as exc:  # e.g. the simulator killed mid-demo: the environment failed
        print(f"sndif-harness: {exc}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # e.g. `sndif-harness defects | head`: an OSError too
        _silence_stdout()
        return 0
    except OSError as exc:
        if exc.filename is None and exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT):
            _silence_stdout()  # e.g. `sndif-harness ls >/dev/full`
            print(f"sndif-harness: cannot write the output: {exc.strerror}", file=sys.stderr)
            return 2
        if exc.filename is None:
            raise  # not about a path the user gave: a real failure, keep its traceback
        print(f"sndif-harness: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sndif-harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
