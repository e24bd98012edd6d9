"""The real-Xen tier: Xen 4.17 + a Debian dom0 and PV guest under QEMU (TCG). The backend
runs in dom0; in the guest, the real Linux ``xen-snd-front`` plays a known signal with aplay
(and records with arecord), or the harness's own reference frontend plays the same scenario;
what the backend wrote out must equal what was played byte for byte (and what the guest
recorded, the backend's capture source). Then the suites on real Xen (certify: by the
harness in the guest, and in dom0 what needs dom0, with the simulated Xen's verdicts), the
Linux frontend judged (certify-frontend, with its audio and its requests' parity), and in
one boot (``xen-qemu batch``) dom0's certification, fuzz, and snd_be through shell and fuzz.

Costs five boots (about 1-2 minutes each on 2 cores; the certification in the guest adds
its own ~4 minutes, the batch's four commands ~5) plus, the first time, the preparation
(about 15 s with the packages at hand) and the snd_be build (about 20 s). Outside CI it is
skipped only when the host lacks QEMU, busybox-static, cpio or alsa-utils; under CI=true
it always runs (tests/requires.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.xenqemu import INSTALL_HINT
from harness.xenqemu.prepare import (
    FRAME_BYTES,
    capture_signal,
    known_signal,
    missing_host_tools,
)
from harness.xenqemu.run import nbytes_for
from tests.requires import unavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared():  # type: ignore[no-untyped-def]
    from harness.peers.snd_be import missing_packages
    from harness.xenqemu.prepare import prepare

    missing = missing_host_tools()
    if missing:
        unavailable(f"missing {', '.join(missing)}: {INSTALL_HINT}")
    missing = missing_packages()
    if missing:
        unavailable(f"cannot build snd_be: apt-get install {' '.join(missing)}")
    return prepare()


def test_known_signal_is_stable_and_not_silent() -> None:
    a = known_signal(1000)
    assert a == known_signal(2000)[:len(a)] and len(a) == 1000 * FRAME_BYTES
    assert a.count(0) < len(a) // 10  # noise: a shifted block cannot compare equal


def test_snd_be_in_dom0_serves_the_linux_frontends_aplay_twice_and_arecord_bit_exact(
        prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Playback, reopen (a second aplay opens the stream anew) and capture."""
    from harness.xenqemu.run import recorded_from_console, run

    lines: list[str] = []
    result = run(prepared, tmp_path / "run", backend="snd_be", seconds=2.0, capture=True,
                 plays=2, say=lines.append)
    log = "\n".join(lines)
    assert result.failed_stage is None, f"{result.failed_stage}: {result.failure}\n{log}"
    assert result.aplay_rc == 0, log
    # the verdict is the byte comparison itself, made again here from the files: the
    # signal once per aplay
    once = known_signal(nbytes_for(2.0) // FRAME_BYTES)
    received = (tmp_path / "run" / "backend.raw").read_bytes()
    assert len(received) == 2 * len(once), result.mismatch
    assert received == once + once, result.mismatch
    assert result.audio_equal
    # and the other way: the guest's arecord got snd_be's capture source, exactly
    console = (tmp_path / "run" / "console" / "guest-sndguest.log").read_text(
        errors="replace")
    assert result.arecord_rc == 0, log
    assert recorded_from_console(console) == capture_signal(len(once) // FRAME_BYTES), \
        result.capture_mismatch
    assert result.ok
    # the stages came in boot order, each with its time
    names = [name for name, _ in result.stages]
    assert names[:3] == ["xen", "dom0-linux", "dom0-init"] and names[-1] == "qemu-exit"


def test_the_reference_frontend_in_a_guest_plays_and_captures_bit_exact_on_real_xen(
        prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The harness's own frontend as a PV guest's (Python in the guest, on the real-Xen
    seam: the guest's xenbus device, gntalloc, evtchn; grants and event channels between
    two domains), against the reference backend in dom0: two plays, each a new OPEN, and
    a capture, bit-exact; and on real Xen it sends exactly what it sends on the simulated
    Xen (--parity, no allowance)."""
    import subprocess
    import sys

    from harness.backends.reference.audio_io import read_wav_data
    from harness.frontend.sequence import Recording
    from harness.xenqemu.guest_scenario import CAPTURE, PLAYBACK
    from harness.xenqemu.run import REFERENCE_OUT

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "xen-qemu", "run", "--backend", "reference",
         "--frontend", "reference", "--seconds", "1", "--plays", "2", "--capture",
         "--parity", "--out", str(out)], capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    once = known_signal(nbytes_for(1.0) // FRAME_BYTES)
    wavs = sorted((out / REFERENCE_OUT).glob("*-open*.wav"))
    assert [read_wav_data(w) for w in wavs] == [once, once]
    assert "capture: the guest recorded the backend's source bit-exact" in log
    assert "real Xen with the simulated: the same requests" in log, log
    live = Recording.read(out / "reference-sequence.json")
    assert [s.op for s in live.streams[PLAYBACK]] == \
        ["HW_PARAM_QUERY", "OPEN", "WRITE", "TRIGGER START", "TRIGGER STOP", "CLOSE"] * 2
    assert [s.op for s in live.streams[CAPTURE]] == \
        ["HW_PARAM_QUERY", "OPEN", "TRIGGER START", "READ", "TRIGGER STOP", "CLOSE"]
    guest = (out / "console" / "guest-sndguest.log").read_text(errors="replace")
    assert "@@GUEST card domid=" in guest and "Traceback" not in guest, guest[-3000:]


#: what the harness in dom0 runs: the cases that restart the backend's process or watch
#: it (an attached backend has none the harness owns), and the toolstack's removal
DOM0_CASES = "test_g_platform or test_g_resources or removal_and_recreation"
#: what the harness in the guest runs: every other case
GUEST_CASES = "not test_g_platform and not test_g_resources"


def _certify_as_on_the_sim(tmp_path: Path, where: list[str], k: str) -> dict:
    """certify --platform xen-qemu (``where``: dom0 or the guest), then
    :func:`_as_on_the_sim`."""
    import subprocess
    import sys

    real = tmp_path / "real"
    proc = subprocess.run([sys.executable, "-m", "harness", "certify", "--platform",
                           "xen-qemu", *where, "-k", k, "--report-dir", str(real)],
                          capture_output=True, text=True, timeout=1500)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    return _as_on_the_sim(tmp_path, real, k)


def _as_on_the_sim(tmp_path: Path, real: Path, k: str) -> dict:
    """The real run's results (report dir ``real``), complete and with the verdicts of the
    same cases on the simulated Xen but where a case needs what only the simulation has
    (grant accounting, fault injection); report compare shows every difference."""
    import json
    import subprocess
    import sys

    from harness.xenqemu.certify import sim_differences

    sim = tmp_path / "sim"
    doc = json.loads((real / "results.json").read_text())
    assert doc["run"]["complete"] is True and doc["run"]["platform"] == "real", doc["run"]
    proc = subprocess.run([sys.executable, "-m", "harness", "certify", "-k", k,
                           "--report-dir", str(sim)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    simdoc = json.loads((sim / "results.json").read_text())
    assert {c["nodeid"] for c in doc["cases"]} == {c["nodeid"] for c in simdoc["cases"]}
    differences = sim_differences(doc, simdoc)
    for d in differences:
        print(d)
    assert [d for d in differences if d[3] is None] == [], differences
    proc = subprocess.run([sys.executable, "-m", "harness", "report", "compare",
                           str(real / "results.json"), str(sim / "results.json"),
                           "--format", "md", "-o", str(tmp_path / "compare.md")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shown = (tmp_path / "compare.md").read_text()
    assert all(d[0] in shown for d in differences)
    return doc


def test_the_reference_frontend_in_a_guest_certifies_as_on_the_simulated_xen(
        prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The suites run by the harness in a PV guest (its frontend the guest's: xenbus
    device, gntalloc, evtchn) against the reference backend in dom0, on the device the
    toolstack created: every area, with the simulated Xen's verdicts."""
    doc = _certify_as_on_the_sim(tmp_path, ["--frontend-domid", "1"], GUEST_CASES)
    # the backend judged, named as the simulated run names it (the guest only attached)
    assert doc["backend"]["spec"] == "reference" and "dom0" in doc["backend"]["where"]
    judged = {c["area"] for c in doc["clauses"] if c["verdict"] == "PASS"}
    assert set("ABCDEFGH") <= judged, judged
    toolstack = [c for c in doc["cases"] if "removal_and_recreation" in c["nodeid"]]
    assert [c["verdict"] for c in toolstack] == ["N/A"], toolstack  # dom0's right


def test_certify_frontend_judges_linux_playing_and_capturing_bit_exact(
        prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The reference backend in dom0, on the real-Xen seam, as the judge of Linux's
    xen-snd-front in the guest while aplay plays twice (each a new OPEN) and arecord
    records: both plays and the capture bit-exact; results.json with every frontend-side
    MUST clause given a verdict (judged, or untestable from a backend with the reason),
    none failing; and the requests Linux sent, as the backend saw them, those of the
    reference frontend on the simulated Xen but for the allowed differences (parity)."""
    import json
    import subprocess
    import sys

    from harness.backends.reference.audio_io import read_wav_data
    from harness.fejudge.clauses import FE_CLAUSES
    from harness.frontend.sequence import Recording
    from harness.xenqemu import parity
    from harness.xenqemu.guest_scenario import PLAYBACK
    from harness.xenqemu.run import REFERENCE_OUT, recorded_from_console

    out = tmp_path / "fe"
    proc = subprocess.run([sys.executable, "-m", "harness", "certify-frontend", "--frontend",
                           "linux", "--report-dir", str(out)],
                          capture_output=True, text=True, timeout=900)
    log = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode in (0, 1), log
    doc = json.loads((out / "results.json").read_text())
    assert doc["run"]["judged"] == "frontend" and "linux" in doc["frontend"]["name"]
    verdicts = {c["id"]: c for c in doc["clauses"]}
    for cid in FE_CLAUSES:
        c = verdicts[cid]
        if "MUST" in c["levels"]:
            assert c["verdict"] != "UNTESTED" or c["untestable"], (cid, c["verdict"])
    passed = [cid for cid in FE_CLAUSES if verdicts[cid]["verdict"] == "PASS"]
    assert len(passed) >= 15, passed
    print({cid: verdicts[cid]["verdict"] for cid in FE_CLAUSES})

    # the audio, compared here again from the files: one WAV per OPEN, each the signal
    assert doc["run"]["scenario"]["errors"] == [], doc["run"]["scenario"]
    once = known_signal(nbytes_for(1.0) // FRAME_BYTES)
    wavs = sorted((out / REFERENCE_OUT).glob("*-open*.wav"))
    assert [read_wav_data(w) for w in wavs] == [once, once], wavs
    console = (out / "console" / "guest-sndguest.log").read_text(errors="replace")
    assert recorded_from_console(console) == capture_signal(len(once) // FRAME_BYTES)

    # what Linux sent: the scenario of the stored data, and parity with the reference's
    live = parity.linux_recording(out, parity.SOURCE)
    assert [s.op for s in live.streams[PLAYBACK] if s.op != parity.HWQ] == \
        ["OPEN", "WRITE", "TRIGGER START", "TRIGGER STOP", "CLOSE"] * 2, live
    found = parity.compare(live, parity.reference_recording(tmp_path / "parity"))
    assert [f for f in found if f.allowed is None] == [], found
    assert len(found) == 3, found  # the allowances used, each explained in parity.py
    if live.streams != Recording.read(parity.DATA).streams:  # a new kernel or alsa-utils
        print(f"note: Linux's requests differ from {parity.DATA.name}; re-record it")


SHELL_CODE = (
    "r = sr(0, HwParamReq(formats=['S16_LE'], rates_min=8000, rates_max=48000, "
    "channels_min=1, channels_max=2, buffer_min=64, buffer_max=16384, "
    "period_min=64, period_max=16384))\nprint(r.summary())\n"
    "rep = play(0, 0.3)\nprint('PLAYED', rep.ok, len(rep.positions) > 0)\n"
    "print('STATE', xs.read(xs.be + '/state'))\n"
    "try:\n    fault('evtchn.notify', 'EINVAL')\n"
    "except RuntimeError as exc:\n    print('NOFAULT', exc)\n")


def test_dom0_commands_in_one_boot_certify_fuzz_and_drive_snd_be(
        prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``xen-qemu batch``: four harness commands in dom0 of one boot, each run there with
    ``--platform real`` as ``--platform xen-qemu`` runs it alone (the backend started in
    dom0, dom0's own frontend):

    - certify: the cases the guest cannot run (the backend's process restarted and
      watched, the toolstack's removal and re-creation of the device), with the simulated
      Xen's verdicts; with the guest's run, every case of the suites on real Xen;
    - fuzz: finds a catalogued defect of the reference backend, with a reproducer that
      names the real platform;
    - shell, against snd_be (its ALSA-only build, on ALSA's file plugin: no sound device
      in dom0): the code sends a request, plays through it, reads XenStore, and is told
      fault injection is the simulation's;
    - fuzz against snd_be: ends with its findings and their reproducers."""
    import json
    import shlex
    import subprocess
    import sys

    from harness.peers.snd_be import SndBeFlags, build_snd_be

    snd_be = build_snd_be(flags=SndBeFlags(pulse=False)).binary
    world = shlex.join(["--backend", f"exec:{snd_be} -v *:Debug", "--audio", "alsa-file",
                        "--unique-id", "alsa<default>"])
    d = {n: tmp_path / n for n in ("certify", "fuzz", "shell", "fuzz-snd_be")}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "xen-qemu", "batch", "--out", str(tmp_path / "boot"),
         f"certify -k {shlex.quote(DOM0_CASES)} --report-dir {d['certify']}",
         f"fuzz --defect positive-status --stop-at-first --budget 60s --shrink-seconds 5 "
         f"--db none --out {d['fuzz']}",
         f"shell {world} --out {d['shell']} -c {shlex.quote(SHELL_CODE)}",
         f"fuzz {world} --stop-at-first --budget 30s --shrink-seconds 5 --db none "
         f"--out {d['fuzz-snd_be']}"],
        capture_output=True, text=True, timeout=2400)
    log = proc.stdout[-8000:] + proc.stderr[-3000:]
    parts = proc.stdout.split("\n== sndif-harness ")
    assert [p.split(" ", 1)[0] for p in parts[1:]] == ["certify", "fuzz", "shell", "fuzz"], log
    exits = [p.rsplit("== exit ", 1)[-1].split()[0] for p in parts[1:]]
    assert proc.returncode == 1 and exits[:3] == ["0", "1", "0"], log
    assert exits[3] in ("0", "1"), log  # snd_be's campaign: a verdict, not a failure
    assert proc.stdout.count("qemu-exit") == 1, log  # one boot

    doc = _as_on_the_sim(tmp_path, d["certify"], DOM0_CASES)
    verdicts = {c["nodeid"].split("::")[-1]: c["verdict"] for c in doc["cases"]}
    assert verdicts["test_removal_and_recreation_beside_hostile_entries"] == "PASS", verdicts
    assert verdicts["test_backend_restart_under_a_connected_frontend"] == "PASS", verdicts

    findings = json.loads((d["fuzz"] / "findings.json").read_text())
    assert any("SND-G-01" in f["clauses"] for f in findings["findings"]), findings
    assert json.loads((d["fuzz"] / "results.json").read_text())["run"]["platform"] == "real"
    (repro,) = d["fuzz"].glob("test_repro_*.py")
    assert "'--platform', 'real'" in repro.read_text()
    assert "is positive" in parts[2], log

    shell = parts[3]
    assert "HW_PARAM_QUERY status=" in shell, log  # snd_be's answer, whichever
    assert "PLAYED True True" in shell and "STATE 4" in shell, log
    assert "NOFAULT this platform has no fault injection" in shell, log
    assert (d["shell"] / "trace.jsonl").stat().st_size > 0
    played = (d["shell"] / "alsa" / "played.raw").read_bytes()
    assert len(played) >= 57600 and played.count(0) < len(played), len(played)

    doc = json.loads((d["fuzz-snd_be"] / "results.json").read_text())
    assert doc["run"]["platform"] == "real", doc["run"]
    found = json.loads((d["fuzz-snd_be"] / "findings.json").read_text())["findings"]
    assert (exits[3] == "1") == bool(found), log
    assert len(list(d["fuzz-snd_be"].glob("test_repro_*.py"))) == len(found)
    print([f["what"] for f in found])
