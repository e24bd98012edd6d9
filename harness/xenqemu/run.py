"""``sndif-harness xen-qemu run``: one boot of real Xen under QEMU (TCG) that plays a known
signal from the guest's ``aplay`` through the real Linux ``xen-snd-front`` to the backend
under test in dom0, and compares what the backend wrote out with what was played.

The host gives QEMU two virtio-9p shares: its root, read-only (dom0 runs the backend in a
chroot of it, so the backend binary and its libraries are the host's own, the same Debian
libxen* as in the image), and the run's ``out`` directory, writable (the per-run scripts
going in; the backend's log and audio, the guest's console and xl's log coming out).

QEMU runs in its own process group, bounded by per-stage deadlines and an overall one, and
is killed on every path out of :func:`run`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from harness.procs import pdeathsig_preexec
from harness.xenqemu import FRONTENDS, EnvironmentMissing, XenQemuError, guest_python, scripts
from harness.xenqemu.prepare import (
    CHANNELS,
    FRAME_BYTES,
    MAX_SECONDS,
    PERIOD_FRAMES,
    RATE,
    Prepared,
    capture_signal,
    known_signal,
)

QEMU = "qemu-system-x86_64"
REFERENCE_OUT = "reference-out"
CAPTURE_RAW, CAPTURE_WAV = "capture-source.raw", "capture-source.wav"
CAPTURE_ECHO = "capture-echo.raw"  # snd_be: what its ALSA capture device returned
ARECORD_STAGE = ("arecord", r"@@SNDIF guest arecord rc=", 120.0)

# (stage, serial-log pattern, seconds allowed since the previous stage) in boot order.
# The figures are several times what was measured (see the README), for a busy CI host.
STAGES: tuple[tuple[str, str, float], ...] = (
    ("xen", r"\(XEN\) Xen version", 30),
    ("dom0-linux", r"Linux version", 90),
    ("dom0-init", r"@@SNDIF stage dom0-init", 120),
    ("toolstack", r"@@SNDIF stage toolstack", 90),
    ("9p", r"@@SNDIF stage 9p", 60),
    ("backend-start", r"@@SNDIF stage backend-start", 90),
    ("xl-create", r"@@SNDIF stage xl-create", 120),
    ("guest-init", r"@@SNDIF guest init", 120),
    ("guest-card", r"@@SNDIF guest card", 90),
    ("aplay", r"@@SNDIF guest aplay rc=", 120),  # + the seconds played
    ("guest-gone", r"@@SNDIF stage guest-gone", 60),
    ("backend-stopped", r"@@SNDIF stage backend-stopped", 30),
    ("dom0-done", r"@@SNDIF stage dom0-done", 30),
)
#: the stages of a boot whose guest runs the harness (a certification): up to its /init
GUEST_STAGES = [s for s in STAGES[:[n for n, _, _ in STAGES].index("guest-init") + 1]]
FATAL = re.compile(r"@@SNDIF FAIL|Hardware Dom0 crashed|Kernel panic|"
                   r"domain_crash_sync called")
QEMU_EXIT_TIMEOUT = 60.0
#: seconds (emulated) the reference frontend's guest may take beyond Linux's to connect:
#: unpacking its ~150 MB image and Python's start-up (imports run ~20x slower under TCG)
PYTHON_START = 240
#: an error line in the backend's log: snd_be's "| ERR -", Python logging's "ERROR"
BACKEND_ERROR = re.compile(r"\| ERR - | ERROR |^Traceback|Error: ")


@dataclass
class RunResult:
    out: Path
    stages: list[tuple[str, float]] = field(default_factory=list)  # (stage, s since start)
    failed_stage: str | None = None
    failure: str = ""
    played: int = 0  # bytes the guest played (all plays)
    plays: int = 1  # aplay runs, each opening the stream anew
    received: int = 0  # bytes the backend wrote out
    audio_equal: bool = False
    mismatch: str = ""
    aplay_rc: int | None = None
    capture: bool = False  # the guest also recorded
    arecord_rc: int | None = None
    capture_equal: bool = False
    capture_mismatch: str = ""
    backend_errors: list[str] = field(default_factory=list)  # its log's error lines
    notes: list[str] = field(default_factory=list)  # dom0's "@@SNDIF note" lines

    @property
    def ok(self) -> bool:
        played = self.failed_stage is None and self.audio_equal and self.aplay_rc == 0
        return played and (not self.capture or (self.capture_equal
                                                and self.arecord_rc == 0))


@dataclass(frozen=True)
class Backend:
    name: str
    argv: list[str]
    env: dict[str, str]
    unique_id: str  # the playback stream's unique-id in the card's XenStore config
    capture_id: str  # the capture stream's
    ready_wait: float  # seconds (emulated) dom0 gives it to start watching XenStore

    def received(self, out: Path) -> bytes | None:
        """Every byte of playback it wrote out (None: it wrote nothing)."""
        if self.name == "reference":
            # one WAV per OPEN of the stream: <name>-open<N>.wav
            wavs = sorted((out / REFERENCE_OUT).glob("*-open*.wav"),
                          key=lambda p: int(p.stem.rsplit("-open", 1)[1]))
            if not wavs:
                return None
            from harness.backends.reference.audio_io import read_wav_data

            return b"".join(read_wav_data(w) for w in wavs)
        raw = out / scripts.BACKEND_RAW
        return raw.read_bytes() if raw.exists() else None


def snd_be_backend(out: Path) -> Backend:
    """xen-troops snd_be, built from the peers' tarballs, playing to ALSA PCM ``tap``.
    The ALSA-only build: with PulseAudio compiled in, snd_be connects to a sound server
    for every frontend it meets and drops the frontend when none answers."""
    from harness.peers.snd_be import PeersError, SndBeFlags, build_snd_be

    try:
        build = build_snd_be(flags=SndBeFlags(pulse=False))
    except PeersError as exc:
        raise EnvironmentMissing("backend-build", str(exc)) from None
    return Backend("snd_be", [str(build.binary), "-v", "*:Debug"],
                   {"ALSA_CONFIG_PATH": str(out / "asound.conf")}, "alsa<tap>", "alsa<tapc>",
                   ready_wait=1.5)


def reference_backend(out: Path) -> Backend:
    """The harness's own backend (harness.backends.reference) on the real-Xen seam
    (harness/xen/real: pyxs + /dev/xen), run by this very interpreter, which dom0 sees
    through the host's root; playback goes to WAV files in the out share. Python's
    start-up under emulation is slow: dom0 gives it longer before ``xl create``."""
    (out / REFERENCE_OUT).mkdir(exist_ok=True)
    return Backend("reference",
                   [sys.executable, "-m", "harness.backends.reference",
                    "--out", str(out / REFERENCE_OUT), "--log-level", "INFO",
                    "--trace", f"/run/{scripts.BACKEND_TRACE}",
                    "--capture-source", str(out / CAPTURE_WAV)],
                   {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}, "ref", "refc",
                   ready_wait=20)


#: the emulated CPU (see qemu_argv)
CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16"


def qemu_argv(p: Prepared, out: Path, shares: Sequence[Path] = ()) -> list[str]:
    # -cpu: qemu64 with x86-64-v2's features (numpy's wheels need SSE4.2 and POPCNT:
    # SIGILL on plain qemu64), without SMAP (QEMU 7.2's TCG IRET helper trips it on a PV
    # kernel's ring-3 stack; fixed in QEMU 9.1), XSAVE or AVX: with -cpu max,-smap (AVX2
    # new in 7.2's TCG) the guest's Python died of SIGSEGV in 4 of 6 certify runs, its data
    # corrupted when Xen switched between dom0 and the guest. (-cpu Nehalem, also v2, made
    # the guest's certification 40 % slower.) KVM cannot run Xen on this machine kind.
    # -icount: the machine's clock counts executed instructions, not host time, so a slow
    # or busy host stretches nothing the guest can see (the backend's ALSA device is
    # clocked: late writes would underrun); sleep=off skips idle time instead of waiting
    # for it. One CPU: icount runs the vCPUs in turn anyway, and with one the boot took
    # 70 s instead of 120 s on a loaded 2-core host (and leaves a host core free).
    return [QEMU, "-accel", "tcg", "-cpu", CPU, "-m", "2048", "-smp", "1",
            "-icount", "shift=0,sleep=off",
            "-display", "none", "-nodefaults", "-serial", "stdio", "-monitor", "none",
            "-no-reboot",
            "-kernel", str(p.xen),
            "-append", "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
                       "dom0_mem=1024M,max:1024M bootscrub=0 noreboot",
            "-initrd", f"{p.kernel} console=hvc0 earlyprintk=xen rdinit=/init "
                       f"loglevel=4 sndif.guest_kernel={p.kernel},{p.dom0_initrd}",
            "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,"
                      "multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            "-fsdev", f"local,id=out,path={out},security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
            # more directories shared with dom0: tags out1, out2, ... (a batch's outs)
            *(a for i, d in enumerate(shares, 1) for a in (
                "-fsdev", f"local,id=out{i},path={d},security_model=none,multidevs=remap",
                "-device", f"virtio-9p-pci,fsdev=out{i},mount_tag=out{i}"))]


def nbytes_for(seconds: float) -> int:
    """Bytes the guest plays for ``seconds``: whole periods (aplay pads a last partial
    period with silence), at least one."""
    periods = max(1, round(seconds * RATE / PERIOD_FRAMES))
    return periods * PERIOD_FRAMES * FRAME_BYTES


def write_run_files(out: Path, backend: Backend, nbytes: int, guest_timeout: int,
                    capture: bool = False, plays: int = 1, *,
                    guest_image: Path | None = None) -> None:
    raw = out / scripts.BACKEND_RAW
    (out / "asound.conf").write_text(scripts.asound_conf(
        str(raw), str(out / CAPTURE_RAW), str(out / CAPTURE_ECHO)))
    source = capture_signal(MAX_SECONDS * RATE)
    (out / CAPTURE_RAW).write_bytes(source)
    from harness.backends.reference.audio_io import wav_header
    from protocol_models.constants import PcmFormat

    (out / CAPTURE_WAV).write_bytes(
        wav_header(PcmFormat.S16_LE, RATE, CHANNELS, len(source)) + source)
    cfg = scripts.guest_cfg if guest_image is None else partial(guest_python.guest_cfg,
                                                                guest_image)
    (out / "guest.cfg").write_text(cfg(nbytes // FRAME_BYTES, backend.unique_id, RATE,
                                       backend.capture_id if capture else None, plays))
    (out / "dom0-run.sh").write_text(scripts.dom0_run(
        backend_argv=backend.argv, backend_env=backend.env, out_in_chroot=str(out),
        guest_timeout=guest_timeout, ready_wait=backend.ready_wait))


def run(p: Prepared, out: Path, *, backend: str = "snd_be", seconds: float = 1.0,
        capture: bool = False, plays: int = 1, judge_frontend: tuple[Path, str] | None = None,
        frontend: str = "linux", say: Callable[[str], None] = lambda _s: None) -> RunResult:
    """Boot, play ``plays`` times (each aplay opens and closes the stream; with
    ``capture`` then record once), compare. ``judge_frontend`` (the reference backend
    only): (results.json under ``out``, the frontend's name): the backend judges the
    guest's frontend's side of the protocol as it serves it (harness/fejudge).
    ``frontend``: the guest's: Linux's xen-snd-front driven by aplay/arecord, or the
    harness's reference frontend (:mod:`harness.xenqemu.guest_scenario`). Never leaves
    QEMU running."""
    if shutil.which(QEMU) is None:
        raise EnvironmentMissing("run/host-tools", f"{QEMU} not found "
                                 "(apt-get install qemu-system-x86)")
    out = out.resolve()
    if "," in str(out):  # QEMU's -fsdev option syntax has no way to quote a comma
        raise XenQemuError("run/out", f"{out}: QEMU cannot share a path with a comma")
    out.mkdir(parents=True, exist_ok=True)
    for stale in (scripts.BACKEND_RAW, scripts.BACKEND_LOG, scripts.GUEST_LOG,
                  scripts.BACKEND_TRACE, "xl-create.log", "xl-create-1.log", "serial.log",
                  "guest-reference.cpio.gz"):
        with contextlib.suppress(FileNotFoundError):
            (out / stale).unlink()
    shutil.rmtree(out / REFERENCE_OUT, ignore_errors=True)
    if backend == "snd_be":
        be = snd_be_backend(out)
    elif backend == "reference":
        be = reference_backend(out)
        if judge_frontend is not None:
            results, name = judge_frontend
            be.env.update({"SNDIF_JUDGE_FRONTEND": str(results),
                           "SNDIF_JUDGE_FRONTEND_NAME": name})
    else:
        raise XenQemuError("backend-build", f"no backend {backend!r}")
    if judge_frontend is not None and backend != "reference":
        raise XenQemuError("backend-build", "only the reference backend judges a frontend")
    if frontend not in FRONTENDS:
        raise XenQemuError("guest-image", f"no frontend {frontend!r}")
    nbytes = nbytes_for(seconds)
    guest_timeout = int(seconds * plays) + 150
    image, stages = None, None
    if frontend == "reference":
        say("guest-image: the reference frontend's Python guest")
        image = guest_python.build(p, out)
        guest_timeout += PYTHON_START
        stages = [(n, pat, t + PYTHON_START if n == "guest-card" else t)
                  for n, pat, t in _stages(capture)]
    write_run_files(out, be, nbytes, guest_timeout, capture, plays, guest_image=image)
    result = RunResult(out=out, played=nbytes * plays, plays=plays, capture=capture)
    boot(p, out, seconds * plays, result, say, stages=stages)
    _rcs_from_console(out, result)
    _judge(be.received(out), nbytes, plays, result)
    if capture:
        _judge_capture(out, nbytes, result)
    log = out / scripts.BACKEND_LOG
    if log.exists():
        # not part of the verdict (the audio is), but a backend that logged errors on real
        # Xen is worth a look: these are reported with the result
        result.backend_errors = [ln for ln in log.read_text(errors="replace").splitlines()
                                 if BACKEND_ERROR.search(ln)]
    return result


def _reader(stream: IO[bytes], log: IO[str], t0: float,
            lines: queue.Queue[tuple[float, str] | None]) -> None:
    for raw in stream:
        t = time.monotonic() - t0
        line = raw.decode(errors="replace").rstrip("\r\n")
        log.write(f"[{t:8.2f}] {line}\n")
        log.flush()
        lines.put((t, line))
    lines.put(None)


def _stages(capture: bool) -> list[tuple[str, str, float]]:
    stages = list(STAGES)
    if capture:
        stages.insert([s[0] for s in stages].index("aplay") + 1, ARECORD_STAGE)
    return stages


def compile_for_dom0() -> None:
    """The project's bytecode, next to its sources as Python keeps it, compiled here
    first: the root dom0 sees is read-only, and the checkout may hold none
    (PYTHONDONTWRITEBYTECODE, a fresh clone); compiling every module under emulation would
    cost each process started there many seconds, longer than a backend has to reach
    InitWait. (The standard library's and site-packages' bytecode was written when they
    were installed.)"""
    import compileall

    root = guest_python.project_root()
    saved = sys.pycache_prefix
    sys.pycache_prefix = None  # where dom0's Python looks: beside the sources
    try:
        for name in guest_python.PACKAGES:
            if (root / name).is_dir():  # a read-only checkout: nothing written, no error
                compileall.compile_dir(root / name, quiet=2, workers=0)
    finally:
        sys.pycache_prefix = saved


def boot(p: Prepared, out: Path, seconds: float, result: RunResult,
          say: Callable[[str], None],
          stages: list[tuple[str, str, float]] | None = None,
          shares: Sequence[Path] = ()) -> None:
    """One boot, followed stage by stage (``stages``: the guest's play by default);
    ``shares``: directories shared with dom0 beside ``out`` (see :func:`qemu_argv`)."""
    compile_for_dom0()
    argv = qemu_argv(p, out, shares)
    if stages is None:
        stages = _stages(result.capture)
    (out / "qemu-argv.txt").write_text("\n".join(argv) + "\n")
    lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
    t0 = time.monotonic()
    with open(out / "serial.log", "w") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=pdeathsig_preexec(signal.SIGKILL))
        try:
            assert proc.stdout is not None
            th = threading.Thread(target=_reader, args=(proc.stdout, log, t0, lines),
                                  daemon=True)
            th.start()
            _follow(proc, lines, t0, seconds, result, say, stages)
        finally:
            _kill(proc)
            th.join(10)


def _follow(proc: subprocess.Popen[bytes], lines: queue.Queue[tuple[float, str] | None],
            t0: float, seconds: float, result: RunResult,
            say: Callable[[str], None],
            stages: list[tuple[str, str, float]]) -> None:
    idx = 0
    last = 0.0
    while idx < len(stages):
        stage, _pattern, allowed = stages[idx]
        if stage in ("aplay", "arecord"):
            allowed += seconds * 3
        deadline = t0 + last + allowed
        try:
            item = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            result.failed_stage = stage
            result.failure = f"not reached within {allowed:g} s of the previous stage"
            say(f"FAIL {stage}: {result.failure}")
            return
        if item is None:
            result.failed_stage = stage
            result.failure = f"QEMU exited (status {proc.wait(10)}) before this stage"
            say(f"FAIL {stage}: {result.failure}")
            return
        t, line = item
        if FATAL.search(line):
            m = re.search(r"@@SNDIF FAIL (\S+) ?(.*)", line)
            result.failed_stage = m.group(1) if m else stage
            result.failure = m.group(2) if m else line.strip()
            say(f"FAIL {result.failed_stage}: {result.failure}")
            return
        note = re.search(r"@@SNDIF note (.*)", line)
        if note:
            result.notes.append(note.group(1).strip())
            say(f"{t:7.1f} s  note: {result.notes[-1]}")
        m = re.search(r"@@SNDIF guest (aplay|arecord) rc=(\d+)", line)
        if m and m.group(1) == "aplay":
            result.aplay_rc = int(m.group(2))
        elif m:
            result.arecord_rc = int(m.group(2))
        for j in range(idx, len(stages)):
            if re.search(stages[j][1], line):
                for k in range(idx, j + 1):  # a stage that printed nothing is passed
                    result.stages.append((stages[k][0], t))
                say(f"{t:7.1f} s  {stages[j][0]}"
                    + (f" ({m.group(0).split()[-1]})" if m else ""))
                idx = j + 1
                last = t
                break
    try:
        proc.wait(QEMU_EXIT_TIMEOUT)
        result.stages.append(("qemu-exit", time.monotonic() - t0))
        say(f"{time.monotonic() - t0:7.1f} s  qemu-exit (status {proc.returncode})")
    except subprocess.TimeoutExpired:
        result.failed_stage = "qemu-exit"
        result.failure = f"QEMU still running {QEMU_EXIT_TIMEOUT:g} s after dom0 was done"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """QEMU and anything it started: the whole process group, then reap."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _rcs_from_console(out: Path, result: RunResult) -> None:
    """aplay's and arecord's status from the guest's own console log, where dom0's relay
    to the serial log missed them (it polls; the guest may power off in between)."""
    log = out / scripts.GUEST_LOG
    if not log.exists():
        return
    for m in re.finditer(r"^@@GUEST (aplay|arecord) rc=(\d+)",
                         log.read_text(errors="replace"), re.M):
        if m.group(1) == "aplay" and result.aplay_rc is None:
            result.aplay_rc = int(m.group(2))
        elif m.group(1) == "arecord" and result.arecord_rc is None:
            result.arecord_rc = int(m.group(2))


def _judge(received: bytes | None, nbytes: int, plays: int, result: RunResult) -> None:
    """Compare what the backend wrote out with what the guest played (the signal, once per
    play), byte for byte."""
    expected = known_signal(nbytes // FRAME_BYTES) * plays
    got = received or b""
    result.received = len(got)
    result.audio_equal = got == expected
    if result.audio_equal:
        return
    if received is None:
        result.mismatch = "the backend wrote no audio"
        return
    n = min(len(got), len(expected))
    first = next((i for i in range(n) if got[i] != expected[i]), n)
    result.mismatch = (f"received {len(got)} bytes, played {len(expected)}; first "
                       f"difference at byte {first} (frame {first // FRAME_BYTES})")
    if first == len(expected) and not got[first:].strip(b"\0"):
        result.mismatch += (f"; all that was played arrived, followed by "
                            f"{len(got) - first} bytes of silence")


_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def recorded_from_console(console: str) -> bytes | None:
    """What the guest's arecord got: the base64 block between its markers."""
    return uuencoded_from_console(console, "rec")


def uuencoded_from_console(console: str, name: str) -> bytes | None:
    """A file the guest sent on its console (a PV guest has no 9p): the base64 block
    between ``@@GUEST <name>-begin`` and ``@@GUEST <name>-end``."""
    import base64

    lines = [ln.rstrip("\r") for ln in console.splitlines()]
    try:
        begin = next(i for i, ln in enumerate(lines) if ln.startswith(f"@@GUEST {name}-begin"))
        end = next(i for i in range(begin, len(lines))
                   if lines[i].startswith(f"@@GUEST {name}-end"))
    except StopIteration:
        return None
    # uuencode -m: "begin-base64 MODE NAME", the base64 lines, "===="
    # only whole base64 lines: a kernel message printed in between is not part of it
    body = [ln.strip() for ln in lines[begin + 1:end]]
    body = [ln for ln in body if _BASE64_LINE.fullmatch(ln) and ln != "===="]
    try:
        return base64.b64decode("".join(body))
    except ValueError:  # binascii.Error: cut short (the guest died while sending it)
        return None


def _judge_capture(out: Path, nbytes: int, result: RunResult) -> None:
    """The guest's recording must equal the start of the backend's capture source."""
    log = out / scripts.GUEST_LOG
    got = recorded_from_console(log.read_text(errors="replace")) if log.exists() else None
    if got is None:
        result.capture_mismatch = "no recording came back on the guest's console"
        return
    expected = capture_signal(nbytes // FRAME_BYTES)
    result.capture_equal = got == expected
    if not result.capture_equal:
        n = min(len(got), len(expected))
        first = next((i for i in range(n) if got[i] != expected[i]), n)
        result.capture_mismatch = (f"recorded {len(got)} bytes, expected {len(expected)}; "
                                   f"first difference at byte {first}")
