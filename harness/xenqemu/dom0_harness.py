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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.xenqemu import ENV_EXIT, XenQemuError, said, scripts

if TYPE_CHECKING:
    from harness.xenqemu.prepare import Prepared

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


class Planned(BaseException):
    """How :func:`run_in_dom0` leaves a command a batch is planning: not an error (a
    BaseException, so that no handler of the command takes it for one)."""


@dataclass
class Batch:
    """Several dom0 commands in one boot (:mod:`harness.xenqemu.batch`): each command is
    run once to plan it (its call of :func:`run_in_dom0` recorded and left by
    :class:`Planned`), then, after the boot, once more to take its outcome."""
    active: bool = False
    planning: bool = False
    planned: list[tuple[scripts.Dom0Step, float]] = field(default_factory=list)
    #: the outcome of the command being finished, until it takes it
    outcome: tuple[int, str] | None = None

    @property
    def finishing(self) -> bool:
        return self.active and not self.planning

    def take(self, step: scripts.Dom0Step, budget: float) -> tuple[int, str]:
        if self.planning:
            self.planned.append((step, budget))
            raise Planned
        outcome, self.outcome = self.outcome, None
        if outcome is None:
            raise RuntimeError(f"{step.name}: a batch's command ran in dom0 twice")
        return outcome


BATCH = Batch()


def _step_stages(stage: str, budget: float) -> list[tuple[str, str, float]]:
    return [(f"{stage}-start", rf"@@SNDIF stage {re.escape(stage)}-start", 60),
            (f"{stage}-done", rf"@@SNDIF stage {re.escape(stage)}-done", budget)]


def _stages(steps: list[tuple[scripts.Dom0Step, float]]) -> list[tuple[str, str, float]]:
    """Xen's and dom0's boot, each step's start and end, dom0's end."""
    from harness.xenqemu.run import STAGES

    boot = [s for s in STAGES if s[0] in ("xen", "dom0-linux", "dom0-init", "toolstack", "9p")]
    return [*boot, *(st for step, budget in steps for st in _step_stages(step.stage, budget)),
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
    (or :data:`ENV_EXIT` when a stage failed, named on stderr) and its console output.
    Within a batch (:mod:`harness.xenqemu.batch`) the command is planned instead, or its
    outcome from the batch's one boot returned."""
    from harness.xenqemu.prepare import prepare

    step = scripts.Dom0Step(name, argv, str(cwd), str(out), DOM0_ENV, name)
    if BATCH.active:
        return BATCH.take(step, budget)
    say = say or _say
    out.mkdir(parents=True, exist_ok=True)
    (out / "dom0-run.sh").write_text(scripts.dom0_command(step))
    try:
        prepared = prepare(say=say)
    except XenQemuError as exc:
        return said("sndif-harness", exc), ""
    return boot_steps(prepared, out, [(step, budget)], [], say)[0]


def boot_steps(prepared: Prepared, out: Path, steps: list[tuple[scripts.Dom0Step, float]],
               shares: list[Path], say: Callable[[str], None]) -> list[tuple[int, str]]:
    """One boot running ``steps`` (each with its budget) from ``out``/dom0-run.sh;
    each one's exit status in dom0 (:data:`ENV_EXIT` when it did not end, the stage that
    failed named on stderr) and its console output."""
    from harness.xenqemu.run import RunResult, boot

    result = RunResult(out=out)
    boot(prepared, out, 0.0, result, say, stages=_stages(steps), shares=shares)
    serial = (out / "serial.log").read_text(errors="replace") \
        if (out / "serial.log").exists() else ""
    if result.failed_stage is not None:
        print(f"sndif-harness {steps[0][0].name}: real Xen under QEMU: stage "
              f"{result.failed_stage}: {result.failure}; serial log {out / 'serial.log'}",
              file=sys.stderr)
    outcomes = []
    for step, _budget in steps:
        log = Path(step.out_in_chroot) / f"{step.name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        # its status once it ended, whatever failed after it
        m = re.search(rf"@@SNDIF stage {re.escape(step.stage)}-done rc=(\d+)", serial)
        outcomes.append((int(m.group(1)) if m else ENV_EXIT, text))
    return outcomes


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
