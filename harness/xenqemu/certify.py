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
from harness.xenqemu.dom0_harness import (
    COMMAND_BUDGET,
    REQUEST_TIMEOUT_QEMU,
    START_TIMEOUT_QEMU,
    check_out_dir,
    run_in_dom0,
)


def certify_on_qemu(args: argparse.Namespace, report_dir: Path, suites: Path) -> int:
    """Boot, certify in dom0, bring the report back; our exit status (0/1/2/3)."""
    from harness.cli.certify_cmd import pytest_args

    if args.n:
        print("sndif-harness certify: -n is not supported with --platform xen-qemu (one "
              "dom0)", file=sys.stderr)
        return 2
    bad = check_out_dir(report_dir, "sndif-harness certify: --report-dir")
    if bad:
        print(bad, file=sys.stderr)
        return 2
    report_dir.mkdir(parents=True, exist_ok=True)
    if args.frontend_domid not in (None, 0):
        return _certify_in_guest(args, report_dir)
    inner = _inner_args(args, frontend_domid=0)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
            *pytest_args(inner, report_dir, suites)]
    rc, text = run_in_dom0("certify", argv, report_dir, cwd=suites.parent)
    if text:
        # the inner run's summary (its table and verdict), as a simulated run prints it
        lines = text.splitlines()
        start = next((i for i, ln in enumerate(lines) if "sndif certification" in ln), None)
        print("\n".join(lines[start:] if start is not None else lines[-30:]))
    return 2 if rc == 4 else rc if rc in (0, 1, 3) else ENV_EXIT


def _inner_args(args: argparse.Namespace, frontend_domid: int | None) -> argparse.Namespace:
    """The options of the run inside (dom0's or the guest's): a real host, no gate."""
    inner = copy.copy(args)
    inner.platform, inner.frontend_domid, inner.baseline = "real", frontend_domid, None
    # under emulation the backend's start (Python's imports) takes about libxl's 10 s
    # alone: A-09's limit is for native speed, judged on the sim or a real host
    inner.start_timeout = args.start_timeout or START_TIMEOUT_QEMU
    # and an answer can take longer than Linux's 3 s there (a loaded host stretches it)
    inner.case_timeout = args.case_timeout or REQUEST_TIMEOUT_QEMU
    return inner


#: the report's files the guest sends back on its console (its traces stay there)
GUEST_REPORT = ("results.json", "junit.xml", "report.md", "report.html")
GUEST_REPORT_DIR = "/tmp/report"


def _certify_in_guest(args: argparse.Namespace, report_dir: Path) -> int:
    """The suites run by the harness in a PV guest (its frontend the guest's own, on the
    real-Xen seam), against the reference backend started in dom0 beforehand; the device
    is the toolstack's (``xl create`` with the run's card). The report comes back on the
    guest's console."""
    from harness.cli.certify_cmd import pytest_args
    from harness.world.spec import DEFAULT_VSND, xl_vsnd
    from harness.xenqemu import guest_python
    from harness.xenqemu.prepare import prepare
    from harness.xenqemu.run import GUEST_STAGES, REFERENCE_OUT, RunResult, boot

    if args.frontend_domid != 1:
        return _usage("--frontend-domid: the guest xl creates is domain 1")
    if args.backend != "reference" or args.vsnd_config is not None or args.audio \
            or args.unique_id or args.backend_env:
        return _usage("with the frontend in a guest, the backend in dom0 is the reference "
                      "backend (--defect allowed), the card from --vsnd or the default")
    inner = _inner_args(args, frontend_domid=None)
    inner.backend, inner.defect = "attach", []
    guest_args = pytest_args(inner, Path(GUEST_REPORT_DIR), Path(guest_python.SRC) / "suites")
    files = " ".join(GUEST_REPORT)
    command = guest_python.python_command(["-m", "pytest", "-p", "no:cacheprovider",
                                           *guest_args]) + f"""
rc=$?
g certify-done rc=$rc
cd {GUEST_REPORT_DIR} && tar czf /tmp/report.tgz $(ls {files} 2>/dev/null)
g out-begin
uuencode -m /tmp/report.tgz report.tgz
g out-end
"""
    try:
        prepared = prepare(say=_say)
        image = guest_python.build(prepared, report_dir, command)
    except XenQemuError as exc:
        return said("sndif-harness", exc)
    backend = [sys.executable, "-m", "harness.backends.reference", "--out",
               str(report_dir / REFERENCE_OUT), "--log-level", "INFO",
               *(x for d in args.defect or [] for x in ("--defect", d))]
    (report_dir / "guest.cfg").write_text(guest_python.guest_cfg(
        image, 1, "pb", 48000, vsnd=args.vsnd or xl_vsnd(DEFAULT_VSND)))
    (report_dir / "dom0-run.sh").write_text(scripts.dom0_run(
        backend_argv=backend, out_in_chroot=str(report_dir), guest_timeout=int(COMMAND_BUDGET),
        backend_env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"},
        ready_wait=20))
    result = RunResult(out=report_dir)
    boot(prepared, report_dir, 0.0, result, _say, stages=[
        *GUEST_STAGES, ("certify-done", r"@@SNDIF guest certify-done", COMMAND_BUDGET),
        ("guest-gone", r"@@SNDIF stage guest-gone", 120),
        ("backend-stopped", r"@@SNDIF stage backend-stopped", 30),
        ("dom0-done", r"@@SNDIF stage dom0-done", 30)])
    console = report_dir / scripts.GUEST_LOG
    text = console.read_text(errors="replace") if console.exists() else ""
    (report_dir / scripts.CERTIFY_LOG).write_text(text)
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if "sndif certification" in ln), None)
    if start is not None:
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("@@GUEST")),
                   len(lines))
        print("\n".join(lines[start:end]))
    if result.failed_stage is not None:
        print(f"sndif-harness certify: real Xen under QEMU: stage {result.failed_stage}: "
              f"{result.failure}; serial log {report_dir / 'serial.log'}", file=sys.stderr)
        return ENV_EXIT
    if not _unpack_report(text, report_dir):
        print("sndif-harness certify: the guest sent no report back; its console: "
              f"{console}", file=sys.stderr)
        return ENV_EXIT
    _as_run_from_here(report_dir, args)
    m = re.search(r"^@@GUEST certify-done rc=(\d+)", text, re.M)
    rc = int(m.group(1)) if m else ENV_EXIT
    return 2 if rc == 4 else rc if rc in (0, 1, 3) else ENV_EXIT


def _as_run_from_here(report_dir: Path, args: argparse.Namespace) -> None:
    """The guest's results.json as this run's: the backend it judged is the reference
    backend this run started in dom0 (the guest only attached to it), and the command line
    and report directory are this host's, so that compare, gate and the reports name the
    backend as a simulated run of it does."""
    from harness.report.results import read_results, write_atomic
    from harness.xenqemu.run import REFERENCE_OUT

    results = report_dir / "results.json"
    doc = read_results(results)
    doc["backend"] = {**(doc.get("backend") or {}), "spec": "reference", "kind": "reference",
                      "defects": list(args.defect or []),
                      "out_dir": str(report_dir / REFERENCE_OUT),
                      "where": "dom0, started before the guest's run, which attached to it"}
    doc["run"]["command_line"] = list(sys.argv)
    doc["run"]["report_dir"] = str(report_dir)
    write_atomic(results, doc)


def _unpack_report(console: str, report_dir: Path) -> bool:
    """The report's files from the guest's console (a base64 tarball between markers)."""
    import io
    import tarfile

    from harness.xenqemu.run import uuencoded_from_console

    data = uuencoded_from_console(console, "out")
    if not data:
        return False
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name in GUEST_REPORT and member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    (report_dir / name).write_bytes(f.read())
    return (report_dir / "results.json").is_file()


def _usage(message: str) -> int:
    print(f"sndif-harness certify: --platform xen-qemu: {message}", file=sys.stderr)
    return 2


def _say(text: str) -> None:
    print(f"xen-qemu: {text}", flush=True)


#: why a case cannot run on a real host: the simulated Xen's capabilities it needs
#: (harness/certify/outcomes.py words these N/A reasons)
PLATFORM_ONLY = ("needs the platform's", "the platform cannot", "needs the toolstack's")


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
