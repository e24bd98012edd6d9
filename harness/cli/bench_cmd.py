"""``sndif-harness bench [all|codec|sim|ring|requests|fuzz|certify|pacing|scale]``: the
harness's performance figures, each printed with its reference (measured in the same run),
the ratio, the target and whether it holds, and written to ``<out>/<group>.json``.

The exit status says whether the bench ran, never whether a target held (timings on a
shared machine are no gate): 0 every group ran, 2 usage error, 3 a group failed (its
row says why; the other groups still ran and wrote their files).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from harness.bench import GROUPS
from harness.bench.table import Row, format_table, unavailable, write_json
from harness.cli import number_in

_HELP = {
    "codec": "encode+decode of a 64-byte message: fast codec vs Scapy (>= 100x)",
    "sim": "the simulated Xen: xenstore and event-channel round trips, grant map/unmap",
    "ring": "event-channel notify round trip vs raw socketpair ping-pong (>= 0.5)",
    "requests": "request round trips (reference backend, snd_be) vs raw ping-pong; "
                "pipelined vs one outstanding",
    "fuzz": "malformed requests executed and checked per second (>= 1,000/s)",
    "certify": "certify wall time vs the audio its cases play, -n 2 vs -n 1, peak memory",
    "pacing": "CUR_POS receive vs send timestamps, p99 error (<= 1 ms)",
    "scale": "1, 4, 16, 64 guests on one backend: latency p99 and CPU per guest",
}
#: the module of each group under harness.bench
_MODULES = {"ring": "rings"}


def _run_group(name: str, args: argparse.Namespace) -> tuple[list[Row], bool]:
    """The group's rows, and whether it ran (False: it raised; one row says why)."""
    module = importlib.import_module(f"harness.bench.{_MODULES.get(name, name)}")
    try:
        if name == "codec":
            from harness.bench import codec

            f = codec.measure(args.iterations or (300 if args.quick else 3000),
                              args.repeats or (2 if args.quick else 3))
            print(f"  scapy:      {f.scapy_us:10.3f} us  ({f.iterations} iterations)")
            print(f"  fast codec: {f.codec_us:10.3f} us  ({f.iterations * 100} iterations)")
            print(f"  ratio:      {f.ratio:10.1f} x  (target >= {codec.TARGET:g})")
            return codec.rows_of(f), True
        if name == "sim":
            return module.run(args.quick, seconds=args.seconds, out=print), True
        if name == "requests":
            return module.run(args.quick, with_snd_be=not (args.quick or args.no_snd_be)), True
        rows: list[Row] = module.run(args.quick)
        return rows, True
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return [unavailable(f"{name}: the group failed", "", f"{type(exc).__name__}: {exc}")
                ], False


def _bench(args: argparse.Namespace) -> int:
    groups = list(GROUPS) if args.bench == "all" else [args.bench]
    out = Path(args.out)
    everything: list[Row] = []
    ok = True
    start_all = time.monotonic()
    for name in groups:
        if name in args.skip:
            continue
        print(f"== bench {name}{' (quick)' if args.quick else ''}: {_HELP[name]}",
              flush=True)
        start = time.monotonic()
        rows, ran = _run_group(name, args)
        ok &= ran
        seconds = time.monotonic() - start
        write_json(out / f"{name}.json", name, rows, quick=args.quick, seconds=seconds)
        print(format_table(rows))
        print(f"({seconds:.1f} s; {out / (name + '.json')})\n", flush=True)
        everything += rows
    if args.bench == "all":
        seconds = time.monotonic() - start_all
        write_json(out / "all.json", "all", everything, quick=args.quick, seconds=seconds)
        print(f"== bench all: {seconds:.0f} s")
        print(format_table(everything))
        held = sum(r.holds == "yes" for r in everything)
        missed = sum(r.holds == "no" for r in everything)
        print(f"{held} targets hold, {missed} do not, "
              f"{sum(r.holds == 'printed' for r in everything)} rows printed; "
              f"{out / 'all.json'}")
    return 0 if ok else 3


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in ("all", *GROUPS):
        help_text = ("every group below, one table and reports/bench/all.json" if name == "all"
                     else _HELP[name])
        p = benches.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--quick", action="store_true",
                       help="short durations and small steps (the CI smoke: checks that "
                            "the bench works, its figures mean little)")
        p.add_argument("--out", default=str(Path("reports") / "bench"), metavar="DIR",
                       help="where the JSON files go (default reports/bench)")
        p.set_defaults(handler=_bench, iterations=None, repeats=None, seconds=None,
                       no_snd_be=False, skip=[])
        if name == "all":
            p.add_argument("--skip", action="append", default=[], choices=GROUPS,
                           metavar="GROUP", help="leave this group out (repeatable)")
        if name in ("all", "requests"):
            p.add_argument("--no-snd-be", action="store_true",
                           help="leave out the snd_be row (no build of snd_be)")
        if name == "codec":
            p.add_argument("--iterations", type=number_in(1, 1_000_000, integer=True),
                           help="Scapy iterations per repeat (the fast codec runs 100x as "
                                "many; default 3000)")
            p.add_argument("--repeats", type=number_in(1, 100, integer=True),
                           help="best of this many repeats (default 3)")
        if name == "sim":
            p.add_argument("--seconds", type=number_in(0.05, 600, unit=" s"),
                           help="time per measurement (default 1, --quick 0.2)")
