"""``sndif-harness sim run`` (the simulated Xen in the foreground) and ``bench sim``."""

from __future__ import annotations

import argparse
import sys
import tempfile

from harness.cli import positive_float


def _run(args: argparse.Namespace) -> int:
    from harness.xen.sim.daemon import Daemon

    made = args.dir is None
    dir = tempfile.mkdtemp(prefix="xen-sim-") if made else args.dir
    print("xen-sim: Ctrl-C or SIGTERM stops it", flush=True)
    try:
        return Daemon(dir, sys.stdout, watch_parent=False).run()
    finally:
        if made:
            import shutil

            shutil.rmtree(dir, ignore_errors=True)


def _bench(args: argparse.Namespace) -> int:
    from harness.xen.sim import bench

    bench.run(args.seconds)
    return 0


def register(commands: argparse._SubParsersAction, benches: argparse._SubParsersAction) -> None:
    sim = commands.add_parser("sim", help="the simulated Xen")
    sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run xenstored + hypervisor in the foreground")
    run.add_argument("--dir", help="directory for the sockets (default: a new temporary one)")
    run.set_defaults(handler=_run)
    from harness.xen.sim.simexec import register_exec

    register_exec(sub)
    b = benches.add_parser("sim", help="xenstore, event-channel and grant-map figures")
    b.add_argument("--seconds", type=positive_float, default=2.0,
                   help="time per measurement")
    b.set_defaults(handler=_bench)
