"""``sndif-harness sim run`` (the simulated Xen in the foreground) and ``bench sim``."""

from __future__ import annotations

import argparse

from harness.cli import positive_float
from harness.xen.sim import cli as sim_cli


def _run(args: argparse.Namespace) -> int:
    return sim_cli.run_daemon(args.dir)


def _bench(args: argparse.Namespace) -> int:
    sim_cli.run_bench(args.seconds)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser("sim", help="the simulated Xen")
    sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run xenstored + hypervisor in the foreground")
    run.add_argument("--dir", help="directory for the sockets (default: a new temporary one)")
    run.set_defaults(handler=_run)
    sim_cli.register_exec(sub)
    b = benches.add_parser("sim", help="xenstore, event-channel and grant-map figures")
    b.add_argument("--seconds", type=positive_float, default=2.0,
                   help="time per measurement")
    b.set_defaults(handler=_bench)
