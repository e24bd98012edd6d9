"""``sndif-harness shell [WORLD OPTIONS] [-c CODE | SCRIPT [ARGS]]``: a world built and a
Python prompt in it (see :mod:`harness.shell`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness.cli.world_opts import (
    REAL_DOM0,
    add_platform_option,
    add_world_options,
    platform_more,
    world_from_args,
)


def _shell(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.shell import run_shell
    from harness.world.world import BackendStartError
    from harness.xen.api import PlatformError

    # bad options: a usage error before anything starts (and before Xen is looked for)
    world_from_args(args, **(REAL_DOM0 if args.platform != "sim" else {}))
    if args.platform == "xen-qemu" and args.code is None and args.script is None:
        raise UsageError("--platform xen-qemu: the shell runs in dom0 without a terminal; "
                         "give it -c CODE or a SCRIPT")
    argv = list(args.args)
    if args.code is not None and args.script is not None:
        argv.insert(0, args.script)  # as python -c CODE ARGS: the rest is sys.argv[1:]
        args.script = None
    source, filename = args.code, "<string>"
    if args.script is not None:
        path = Path(args.script)
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{args.script}: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
        filename = str(path)
    out = Path(args.out) if args.out else Path("reports") / time.strftime(
        "shell-%Y%m%d-%H%M%S")
    if args.platform == "xen-qemu":
        return _shell_in_dom0(args, out.absolute(), source, argv)
    spec = world_from_args(args, **platform_more(args.platform, "shell"))
    try:
        return run_shell(spec, out, source=source, filename=filename, plain=args.plain,
                         argv=[filename if args.script else "-c", *argv])
    except (BackendStartError, PlatformError) as exc:
        first, _, rest = str(exc).partition("\n")
        print(f"sndif-harness shell: {first}", file=sys.stderr)
        if rest.strip():
            print(rest, file=sys.stderr)
        return 1


def _shell_in_dom0(args: argparse.Namespace, out: Path, source: str | None,
                   argv: list[str]) -> int:
    """The same shell in dom0 of real Xen under QEMU; its output is printed here."""
    from harness.xenqemu.dom0_harness import check_out_dir, rerun_in_dom0

    if check_out_dir(out, "--out") is None:  # (else rerun_in_dom0 says why)
        out.mkdir(parents=True, exist_ok=True)
        # the code or the script, where dom0 sees it
        (out / "shell-code.py").write_text(source or "")
    positionals = [str(out / "shell-code.py"), *argv] if args.code is None \
        else ["-c", source or "", *argv]
    return rerun_in_dom0(args, out, positionals, code=None, script=None)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "shell", help="a Python prompt with the models and a connected card (Scapy-style)",
        description="Build the world (simulated Xen, the backend under test, the vsnd "
                    "device, the connected reference frontend) and open Python with the "
                    "sndif models, the card, its streams and helpers (sr, events, play, "
                    "xs, trace, fault) in scope; or run -c CODE or a SCRIPT in it. "
                    "Leaving tears everything down.")
    p.add_argument("-c", dest="code", metavar="CODE", default=None,
                   help="run this code instead of an interactive prompt")
    p.add_argument("script", nargs="?", default=None, metavar="SCRIPT",
                   help="run this Python file instead of an interactive prompt")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="sys.argv[1:] of the code (options of the shell go before SCRIPT)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="trace and backend log here (default: reports/shell-<time>)")
    p.add_argument("--plain", action="store_true",
                   help="the standard library's console even if IPython is installed")
    add_platform_option(p, "the output")
    add_world_options(p)
    p.set_defaults(handler=_shell, parser=p)
