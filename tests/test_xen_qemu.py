"""The real-Xen tier: Xen 4.17 + a Debian dom0 and PV guest under QEMU (TCG). The backend
runs in dom0, the real Linux ``xen-snd-front`` in the guest plays a known signal with aplay
(and records with arecord), and what the backend wrote out must equal what was played byte
for byte (and what the guest recorded, the backend's capture source).

Costs two boots (about 1-1.5 minutes each on 2 cores) plus, the first time, the preparation
(about 15 s with the packages at hand) and the snd_be build (about 20 s). Outside CI it is
skipped only when the host lacks QEMU, busybox-static, cpio or alsa-utils; under CI=true it
always runs (tests/requires.py)."""

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


def test_reference_backend_on_the_real_xen_seam_plays_twice_captures_and_records_linux(
        prepared, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The harness's own backend, on harness/xen/real (pyxs + /dev/xen) in dom0, through
    the CLI: both aplays and the arecord bit-exact, the requests Linux sent recorded, and
    the reference frontend's on the simulated Xen the same but for the allowed (--parity)."""
    import subprocess
    import sys

    from harness.backends.reference.audio_io import read_wav_data
    from harness.frontend.sequence import Recording
    from harness.xenqemu import parity
    from harness.xenqemu.run import REFERENCE_OUT

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "xen-qemu", "run", "--backend", "reference",
         "--seconds", "1", "--plays", "2", "--capture", "--parity", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    wavs = sorted((out / REFERENCE_OUT).glob("*-open*.wav"))
    assert len(wavs) == 2, wavs  # one WAV per OPEN: the stream was opened anew
    once = known_signal(nbytes_for(1.0) // FRAME_BYTES)
    assert [read_wav_data(w) for w in wavs] == [once, once]
    assert "capture: the guest recorded the backend's source bit-exact" in log
    # what Linux sent, as the reference backend saw it: the scenario of the stored data
    live = Recording.read(out / "linux-sequence.json")
    assert [s.op for s in live.streams[parity.PLAYBACK] if s.op != parity.HWQ] == \
        ["OPEN", "WRITE", "TRIGGER START", "TRIGGER STOP", "CLOSE"] * 2, live
    assert "parity with the reference frontend: 0 difference(s), 3 allowed" in log, log
    stored = Recording.read(parity.DATA)
    if live.streams != stored.streams:  # a new kernel or alsa-utils: worth re-recording
        print(f"note: Linux's requests differ from {parity.DATA.name}; re-record it")
