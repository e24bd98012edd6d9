"""A harness command on real Xen 4.17 booted under QEMU for the run: ``certify``, ``fuzz``
and ``shell`` with ``--platform xen-qemu``. dom0 runs the same command with ``--platform
real`` (from the host's root through 9p): the frontend is dom0's own, the backend under
test is started in dom0, and every grant, event channel and XenStore operation between
them is Xen's. The output directory is shared with dom0, so what the command writes lands
where a simulated run puts it, with the boot's serial log and the command's console output
(``<command>.log``) beside them."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from harness.xenqemu import ENV_EXIT, XenQemuError, said, scripts

#: after the boot stages, the command's own; its budget is generous (Python under TCG runs
#: ~20x slower than on the host) and bounded
COMMAND_BUDGET = 1800.0

#: the backend's start and the device's connection in dom0 under emulation: Python's
#: imports alone take longer than libxl's 10 s there
START_TIMEOUT_QEMU = 120.0
#: a request unanswered this long is a hang there (Linux's 3 s is for native speed)
REQUEST_TIMEOUT_QEMU = 10.0

#: the environment of the command in dom0
DOM0_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "CI": "",
            "COLUMNS": "120"}


def _stages(name: str, budget: float) -> list[tuple[str, str, float]]:
    from harness.xenqemu.run import STAGES

    boot = [s for s in STAGES if s[0] in ("xen", "dom0-linux", "dom0-init", "toolstack", "9p")]
    return [*boot, (f"{name}-start", rf"@@SNDIF stage {name}-start", 60),
            (f"{name}-done", rf"@@SNDIF stage {name}-done", budget),
            ("dom0-done", r"@@SNDIF stage dom0-done", 30)]


def check_out_dir(out: Path, prog: str) -> str | None:
    """Why ``out`` cannot be shared with dom0, or None."""
    if "," in str(out):  # QEMU's -fsdev syntax cannot quote a comma
        return f"{prog} {out}: QEMU cannot share a path with a comma"
    return None


def run_in_dom0(name: str, argv: list[str], out: Path, *, cwd: Path,
                budget: float = COMMAND_BUDGET,
                say: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Boot, run ``argv`` (a command line, the harness's Python first) as domain 0 with
    ``out`` shared at its host path, and stop. Returns the command's exit status in dom0
    (or :data:`ENV_EXIT` when a stage failed, named on stderr) and its console output."""
    from harness.xenqemu.prepare import prepare
    from harness.xenqemu.run import RunResult, boot

    say = say or _say
    out.mkdir(parents=True, exist_ok=True)
    (out / "dom0-run.sh").write_text(scripts.dom0_command(
        name=name, argv=argv, cwd=str(cwd), out_in_chroot=str(out), env=DOM0_ENV))
    try:
        prepared = prepare(say=say)
    except XenQemuError as exc:
        return said("sndif-harness", exc), ""
    result = RunResult(out=out)
    boot(prepared, out, 0.0, result, say, stages=_stages(name, budget))
    log = out / f"{name}.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    if result.failed_stage is not None:
        print(f"sndif-harness {name}: real Xen under QEMU: stage {result.failed_stage}: "
              f"{result.failure}; serial log {out / 'serial.log'}", file=sys.stderr)
        return ENV_EXIT, text
    serial = (out / "serial.log").read_text(errors="replace")
    m = re.search(rf"@@SNDIF stage {name}-done rc=(\d+)", serial)
    return (int(m.group(1)) if m else ENV_EXIT), text


def rerun_in_dom0(args: argparse.Namespace, out: Path, positionals: list[str], *,
                  budget: float = COMMAND_BUDGET, **override: object) -> int:
    """This process's command (``args.parser``, parsed into ``args``) again, in dom0 of
    real Xen under QEMU with ``--platform real``, ``--out`` ``out`` (shared) and the
    ``override`` values, then ``positionals``; what it printed is printed here. Returns
    its exit status (3: a stage failed, named on stderr)."""
    from harness.cli import UsageError

    bad = check_out_dir(out, "--out")
    if bad:
        raise UsageError(bad)
    out.mkdir(parents=True, exist_ok=True)
    name = args.parser.prog.split()[-1]
    argv = harness_argv(args.parser, args, positionals, platform="real", out=str(out),
                        start_timeout=args.start_timeout or START_TIMEOUT_QEMU, **override)
    rc, text = run_in_dom0(name, argv, out, cwd=Path.cwd(), budget=budget)
    sys.stdout.write(text)
    return rc


def harness_argv(parser: argparse.ArgumentParser, args: argparse.Namespace,
                 positionals: list[str], /, **override: object) -> list[str]:
    """The command line of the harness's command ``parser`` with the options ``args``
    holds (those left at their defaults omitted), ``override`` replacing some (by dest),
    then ``positionals``: what dom0 runs for this process."""
    values = {**vars(args), **override}
    out: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help" \
                or action.help == argparse.SUPPRESS:  # an alias of another option
            continue
        value = values.get(action.dest, action.default)
        if value == action.default and action.dest not in override:
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") \
            else action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            out += [flag] if value else []
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        elif value is not None:
            out += [flag, str(value)]
    return [sys.executable, "-m", "harness", parser.prog.split()[-1], *out, *positionals]


def _say(text: str) -> None:
    print(f"xen-qemu: {text}", flush=True)
