"""``sndif-harness certify --platform xen-qemu``: the conformance suites on real Xen 4.17,
booted under QEMU for the run. dom0 runs the harness itself (its pytest run of the
suites, from the host's root through 9p), with ``--platform real``: the frontend is dom0's
own, the backend under test is started in dom0, and every grant, event channel and
XenStore operation between them is Xen's. The report directory is shared with dom0, so
results.json, junit.xml, the traces and the logs land where a simulated run puts them,
with the boot's serial log and the run's console output (``certify.log``) beside them.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

from harness.xenqemu import ENV_EXIT, XenQemuError, said, scripts

#: after the boot stages of every run, the certification's own; its budget is generous
#: (Python under TCG runs ~20x slower than on the host) and bounded
CERTIFY_BUDGET = 1800.0


def _stages() -> list[tuple[str, str, float]]:
    from harness.xenqemu.run import STAGES

    boot = [s for s in STAGES if s[0] in ("xen", "dom0-linux", "dom0-init", "toolstack", "9p")]
    return [*boot, ("certify-start", r"@@SNDIF stage certify-start", 60),
            ("certify-done", r"@@SNDIF stage certify-done", CERTIFY_BUDGET),
            ("dom0-done", r"@@SNDIF stage dom0-done", 30)]


def certify_on_qemu(args: argparse.Namespace, report_dir: Path, suites: Path) -> int:
    """Boot, certify in dom0, bring the report back; our exit status (0/1/2/3)."""
    from harness.cli.certify_cmd import pytest_args
    from harness.xenqemu.prepare import prepare
    from harness.xenqemu.run import RunResult, boot

    if args.n:
        print("sndif-harness certify: -n is not supported with --platform xen-qemu (one "
              "dom0)", file=sys.stderr)
        return 2
    report_dir.mkdir(parents=True, exist_ok=True)
    if "," in str(report_dir):  # QEMU's -fsdev syntax cannot quote a comma
        print(f"sndif-harness certify: --report-dir {report_dir}: QEMU cannot share a path "
              "with a comma", file=sys.stderr)
        return 2
    inner = copy.copy(args)
    inner.platform, inner.frontend_domid, inner.baseline = "real", 0, None
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
            *pytest_args(inner, report_dir, suites)]
    root = suites.parent
    (report_dir / "dom0-run.sh").write_text(scripts.dom0_certify(
        argv=argv, cwd=str(root), out_in_chroot=str(report_dir),
        env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "CI": "",
             "COLUMNS": "120"}))
    try:
        prepared = prepare(say=_say)
    except XenQemuError as exc:
        return said("sndif-harness", exc)
    result = RunResult(out=report_dir)
    boot(prepared, report_dir, 0.0, result, _say, stages=_stages())
    log = report_dir / scripts.CERTIFY_LOG
    text = log.read_text(errors="replace") if log.exists() else ""
    if text:
        # the inner run's summary (its table and verdict), as a simulated run prints it
        lines = text.splitlines()
        start = next((i for i, ln in enumerate(lines) if "sndif certification" in ln), None)
        print("\n".join(lines[start:] if start is not None else lines[-30:]))
    if result.failed_stage is not None:
        print(f"sndif-harness certify: real Xen under QEMU: stage {result.failed_stage}: "
              f"{result.failure}; serial log {report_dir / 'serial.log'}", file=sys.stderr)
        return ENV_EXIT
    serial = (report_dir / "serial.log").read_text(errors="replace")
    m = re.search(r"@@SNDIF stage certify-done rc=(\d+)", serial)
    rc = int(m.group(1)) if m else ENV_EXIT
    return 2 if rc == 4 else rc if rc in (0, 1, 3) else ENV_EXIT


def _say(text: str) -> None:
    print(f"xen-qemu: {text}", flush=True)


#: why a case cannot run on a real host: the simulated Xen's capabilities it needs
#: (harness/certify/outcomes.py words these N/A reasons)
PLATFORM_ONLY = ("needs the platform's", "the platform cannot")


def sim_differences(real: dict[str, Any], sim: dict[str, Any]
                    ) -> list[tuple[str, str, str, str | None]]:
    """Every clause whose verdict on real Xen differs from the simulated Xen's:
    ``(clause, real verdict, sim verdict, explanation)``; the explanation is None unless
    every case of the clause that differs was not applicable on the real host for a
    capability only the simulation has (grant accounting, fault injection)."""
    real_cases = {c["nodeid"]: c for c in real.get("cases") or []}
    sim_cases = {c["nodeid"]: c for c in sim.get("cases") or []}
    sim_verdicts = {c["id"]: c["verdict"] for c in sim.get("clauses") or []}
    out: list[tuple[str, str, str, str | None]] = []
    for clause in real.get("clauses") or []:
        cid, verdict = clause["id"], clause["verdict"]
        other = sim_verdicts.get(cid, "UNTESTED")
        if verdict == other:
            continue
        differing = [real_cases[n] for n in real_cases
                     if cid in (real_cases[n].get("clauses") or [])
                     and real_cases[n]["verdict"] != sim_cases.get(n, {}).get("verdict")]
        reasons = {str(c.get("message") or "") for c in differing}
        why = None
        if differing and all(c["verdict"] == "N/A" for c in differing) \
                and all(r.startswith(PLATFORM_ONLY) for r in reasons):
            why = "; ".join(sorted(reasons))
        out.append((cid, verdict, other, why))
    return out
