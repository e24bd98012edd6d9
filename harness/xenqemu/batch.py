"""``sndif-harness xen-qemu batch``: several harness commands run in dom0 of one boot of
real Xen under QEMU, each exactly as ``sndif-harness <command> --platform xen-qemu`` runs
it alone (its options, its out directory, its output and exit status), one after another.
A boot costs about half a minute before the first command starts: a certification, a
fuzz campaign and a shell session in one boot save two.

Each command is run twice in this process: first to plan it (everything it does before
its boot, its checks and usage errors included; :class:`~harness.xenqemu.dom0_harness.
Planned` ends it there), then, after the one boot, to finish it with its outcome from
dom0. Every command is checked before anything boots."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.xenqemu import XenQemuError, said, scripts
from harness.xenqemu.dom0_harness import BATCH, Planned, boot_steps, check_out_dir

#: the commands a batch runs (those whose xen-qemu run is a command in dom0: certify's
#: run in a guest, --frontend-domid 1, boots its own) and the option naming where each
#: writes: set to the planned directory when it is finished (a default is a new one)
OUT_OPTION = {"certify": "--report-dir", "fuzz": "--out", "shell": "--out"}


class BatchError(ValueError):
    """A command of the batch cannot run in it; the message says which and why."""


def plan(lines: list[str]) -> list[list[str]]:
    """Each command line as the harness's argv with ``--platform xen-qemu``."""
    argvs = []
    for n, line in enumerate(lines, 1):
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise BatchError(f"command {n} ({line!r}): {exc}") from None
        if not words or words[0] not in OUT_OPTION:
            raise BatchError(f"command {n} ({line!r}): not one of {', '.join(OUT_OPTION)}")
        platforms = _values(words, "--platform")
        if any(p != "xen-qemu" for p in platforms):
            raise BatchError(f"command {n} ({line!r}): a batch runs on --platform xen-qemu")
        if any(d != "0" for d in _values(words, "--frontend-domid")):
            raise BatchError(f"command {n} ({line!r}): the certification in a guest boots "
                             "its own (certify --platform xen-qemu --frontend-domid 1)")
        argvs.append(words if platforms else [*words, "--platform", "xen-qemu"])
    return argvs


def _values(words: list[str], option: str) -> list[str]:
    """The values ``option`` is given in ``words`` (``--opt V`` or ``--opt=V``; a last
    ``--opt`` without one: "")."""
    return [words[i + 1] if w == option and i + 1 < len(words) else w[len(option) + 1:]
            for i, w in enumerate(words) if w == option or w.startswith(option + "=")]


@contextlib.contextmanager
def _batch(planning: bool) -> Iterator[None]:
    BATCH.active, BATCH.planning = True, planning
    try:
        yield
    finally:
        BATCH.active = BATCH.planning = False


def run_batch(lines: list[str], out: Path, say: Callable[[str], None]) -> int:
    """Plan every command, boot once, finish every command; the highest exit status."""
    from harness.cli import main
    from harness.xenqemu.prepare import prepare

    try:
        argvs = plan(lines)
    except BatchError as exc:
        print(f"sndif-harness xen-qemu batch: {exc}", file=sys.stderr)
        return 2
    out = out.resolve()  # QEMU's share and dom0's binds want it absolute
    bad = check_out_dir(out, "--out")
    if bad:
        print(f"sndif-harness xen-qemu batch: {bad}", file=sys.stderr)
        return 2
    BATCH.planned.clear()
    for n, argv in enumerate(argvs, 1):
        with _batch(planning=True):
            try:
                rc = main(argv)
            except Planned:  # its run in dom0 planned (the only way it raises that)
                continue
        print(f"sndif-harness xen-qemu batch: command {n} ({shlex.join(argv)}) ended with "
              f"status {rc}; nothing booted", file=sys.stderr)
        return 2 if rc in (0, 2) else rc
    steps = [(dataclasses.replace(step, stage=f"{n}-{step.name}"), budget)
             for n, (step, budget) in enumerate(BATCH.planned, 1)]
    shares = [Path(step.out_in_chroot) for step, _ in steps]
    try:
        _check_shares(shares, out)
    except BatchError as exc:
        print(f"sndif-harness xen-qemu batch: {exc}; nothing booted", file=sys.stderr)
        return 2
    argvs = [[a[0], OUT_OPTION[a[0]], str(d), *a[1:]]
             for a, d in zip(argvs, shares, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "dom0-run.sh").write_text(scripts.dom0_batch(
        [(step, f"/out{n}") for n, (step, _) in enumerate(steps, 1)]))
    try:
        prepared = prepare(say=say)
    except XenQemuError as exc:
        return said("sndif-harness xen-qemu batch", exc)
    outcomes = boot_steps(prepared, out, steps, shares, say)
    worst = 0
    for argv, outcome in zip(argvs, outcomes, strict=True):
        print(f"== sndif-harness {shlex.join(argv)}", flush=True)
        BATCH.outcome = outcome
        with _batch(planning=False):
            rc = main(argv)
        if BATCH.outcome is not None:  # it stopped short of dom0 this time
            BATCH.outcome = None
            rc = max(rc, 2)
        print(f"== exit {rc}", flush=True)
        worst = max(worst, rc)
    return worst


def _check_shares(shares: list[Path], out: Path) -> None:
    """Each command's out directory is a share of its own, bound at its host path in
    dom0: no two may be one, or one inside another (nor the batch's own)."""
    dirs = [*shares, out]
    for i, a in enumerate(dirs):
        for b in dirs[i + 1:]:
            if a == b or a in b.parents or b in a.parents:
                raise BatchError(f"{a} and {b}: each command needs an out directory of "
                                 "its own, neither inside the other nor the batch's --out")
