"""``sndif-harness sim run`` (the simulated Xen in the foreground) and ``sim exec``
(``bench sim`` is in :mod:`harness.cli.bench_cmd`)."""

from __future__ import annotations

import argparse

from harness.cli import UsageError, domid_arg, number_in
from harness.xen.sim import cli as sim_cli


def _run(args: argparse.Namespace) -> int:
    try:
        return sim_cli.run_daemon(args.dir)
    except sim_cli.SimUsageError as exc:
        raise UsageError(f"sim run: {exc}") from None


def _exec(args: argparse.Namespace) -> int:
    try:
        return sim_cli.exec_command(args)
    except sim_cli.SimUsageError as exc:
        raise UsageError(str(exc)) from None


#: a domain's name: XenStore's /local/domain/N/name and the hypervisor's record; Xen sets
#: no limit, libxl keeps names short: this bound only keeps a mistake from going far
NAME_MAX_BYTES = 256


def domain_name(text: str) -> str:
    """argparse type of ``--name``: UTF-8 (an argument of other bytes is refused), no
    control characters, at most NAME_MAX_BYTES bytes."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("a domain name must be UTF-8 text") from None
    if not raw or len(raw) > NAME_MAX_BYTES:
        raise argparse.ArgumentTypeError(
            f"a domain name has 1 .. {NAME_MAX_BYTES} bytes (this one {len(raw)})")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise argparse.ArgumentTypeError("a domain name has no control characters")
    return text


def _register_exec(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "exec", help="run a program as a domain of the simulated Xen",
        description="Run COMMAND with the sim's replacement Xen libraries, as domain N of "
                    "the sim running in --dir or $XEN_SIM_DIR (else of a new one). "
                    "SIGINT/SIGTERM/SIGHUP are forwarded to COMMAND's process group, "
                    "SIGKILLed 2 s later if still there; COMMAND dies with us.")
    p.add_argument("--domid", type=domid_arg, default=0, help="domain to act as (default 0)")
    p.add_argument("--name", type=domain_name,
                   help="the domain's name (XenStore /local/domain/N/name); the domain is "
                        "created if the sim doesn't have it")
    p.add_argument("--dir", help="directory of a running sim (`sim run --dir`)")
    p.add_argument("--timeout", type=number_in(0.01, 7 * 86400, unit=" s"),
                   help="kill the program after this many seconds (omit for none)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS]")
    p.set_defaults(handler=_exec)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = commands.add_parser("sim", help="the simulated Xen")
    sub = sim.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run xenstored + hypervisor in the foreground")
    run.add_argument("--dir", help="directory for the sockets (default: a new temporary one)")
    run.set_defaults(handler=_run)
    _register_exec(sub)
