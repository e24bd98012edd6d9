"""The audio host: a real sound server for the backend under test (design: "a real sound
server is the audio host").

PulseAudio runs as a private, user-less daemon for one run: its own configuration (no
default.pa, no D-Bus, no autospawn, no shared memory), its own runtime/state/home
directories and a native-protocol socket under the run's directory, anonymous auth. Two
clocked null sinks with the run's sample spec and rewinds off (a rewind re-renders audio
the monitor has already delivered, so a monitor recording would lose the start of every
stream):

``harness_sink``   the default sink: what the backend plays lands here; its monitor is
                   recorded with ``pacat --record`` into a raw file, exact format.
``harness_src``    its monitor is the default source: :meth:`AudioHost.play_into_source`
                   plays a known signal into the sink with ``pacat --playback``, so a
                   backend recording the default source hears it, clocked as a microphone.

With no resampling (the stream's spec equals the sink's) and unity volume PulseAudio
passes samples through untouched, so the oracle can demand sample-exact equality.

The ALSA half is a byte-exact alternative where pacing does not matter: a configuration
whose default PCM is the ``file`` plugin over a ``null`` slave (no clock: it runs as fast
as the program writes).

Needs Debian's ``pulseaudio`` and ``pulseaudio-utils`` (and ``alsa-utils`` for the ALSA
tests).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypedDict, Unpack

from harness.procs import pdeathsig_preexec, stop_process
from protocol_models.constants import PCM_FORMATS, PcmFormat, pcm_format

#: What CI must install for the audio host (Debian package names).
APT_PACKAGES = ("pulseaudio", "pulseaudio-utils", "alsa-utils")
INSTALL_HINT = ("apt-get install -y --no-install-recommends "
                "pulseaudio pulseaudio-utils alsa-utils")

#: sndif formats PulseAudio carries unchanged (PulseAudio's sample format names). S24 in
#: sndif/ALSA is the low 24 bits of a 32-bit container: PulseAudio's s24-32.
PA_FORMATS: dict[PcmFormat, str] = {
    PcmFormat.U8: "u8", PcmFormat.S16_LE: "s16le", PcmFormat.S16_BE: "s16be",
    PcmFormat.S24_LE: "s24-32le", PcmFormat.S24_BE: "s24-32be",
    PcmFormat.S32_LE: "s32le", PcmFormat.S32_BE: "s32be",
    PcmFormat.F32_LE: "float32le", PcmFormat.F32_BE: "float32be",
    PcmFormat.MU_LAW: "ulaw", PcmFormat.A_LAW: "alaw",
}

SINK, SOURCE_SINK = "harness_sink", "harness_src"
#: A unix socket path must fit sockaddr_un (108 octets with the NUL).
_MAX_SOCKET_PATH = 100


class AudioHostError(RuntimeError):
    pass


def pa_format(fmt: PcmFormat | int | str) -> str:
    """PulseAudio's name for ``fmt``; ValueError where PulseAudio has no such format."""
    f = pcm_format(fmt)
    try:
        return PA_FORMATS[f]
    except KeyError:
        raise ValueError(f"PulseAudio has no sample format for {f.name}") from None


def missing_tools() -> list[str]:
    """The PulseAudio programs not on PATH (empty when the audio host can run)."""
    return [t for t in ("pulseaudio", "pacat", "pactl") if shutil.which(t) is None]


class SpawnOptions(TypedDict, total=False):
    """The :class:`subprocess.Popen` options :func:`spawn` passes on (binary I/O)."""

    stdin: int | IO[Any] | None
    stdout: int | IO[Any] | None
    stderr: int | IO[Any] | None
    start_new_session: bool


def spawn(argv: list[str], env: Mapping[str, str], **kw: Unpack[SpawnOptions]
          ) -> subprocess.Popen[bytes]:
    """Start a helper that dies with this process (PR_SET_PDEATHSIG)."""
    return subprocess.Popen(argv, env=dict(env), preexec_fn=pdeathsig_preexec(signal.SIGTERM),
                            **kw)


#: pacat's buffer (``--latency-msec``) for the harness's own clients and the reference
#: backend's: 20 ms underran on a loaded machine (a gap of silence in what the sink got);
#: the protocol's positions do not depend on it, so a deeper buffer costs only latency.
PACAT_LATENCY_MS = 100


def pacat_argv(mode: str, device: str | None, fmt: PcmFormat | int | str, rate: int,
               channels: int, *, latency_ms: int, name: str) -> list[str]:
    """``pacat`` in raw mode with an exact sample spec (``mode``: playback or record)."""
    argv = ["pacat", f"--{mode}", "--raw", f"--format={pa_format(fmt)}", f"--rate={rate}",
            f"--channels={channels}", f"--latency-msec={latency_ms}",
            "--client-name=sndif-harness", f"--stream-name={name}"]
    if device is not None:
        argv.append(f"--device={device}")
    return argv


class AudioHost:
    """A running PulseAudio for one run; use :func:`running_audio_host`.

    ``env`` is what a backend (or any client) needs to reach it. Files live under
    ``directory/pulse`` (the socket in a short temporary directory when that path is too
    long for a unix socket); all of it is removed by :meth:`close`."""

    def __init__(self, directory: str | os.PathLike[str], rate: int = 48000,
                 fmt: PcmFormat | int | str = PcmFormat.S16_LE, channels: int = 2, *,
                 latency_ms: int = PACAT_LATENCY_MS, start_timeout: float = 10.0) -> None:
        self.fmt, self.rate, self.channels = pcm_format(fmt), rate, channels
        pa_format(self.fmt)  # refuse before anything is created
        self.frame_size = PCM_FORMATS[self.fmt].frame_size(channels)
        self.latency_ms = latency_ms
        self.start_timeout = start_timeout
        self.sink, self.source = SINK, f"{SOURCE_SINK}.monitor"
        self.monitor = f"{SINK}.monitor"
        self.dir = Path(directory).absolute() / "pulse"
        self._made_parent = not self.dir.parent.exists()
        self.dir.mkdir(parents=True, exist_ok=False)
        self._sock_dir: Path | None = None
        sock = self.dir / "native"
        if len(str(sock)) > _MAX_SOCKET_PATH:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="sndif-pa-"))
            sock = self._sock_dir / "native"
        self.socket = sock
        self.log_path = self.dir / "daemon.log"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._recorder: subprocess.Popen[bytes] | None = None
        self._players: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()
        self._write_config()
        self.env: dict[str, str] = {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.dir / "runtime"),
            "PULSE_COOKIE": str(self.dir / "cookie"),
            "PULSE_CLIENTCONFIG": str(self.dir / "client.conf"),
        }

    # --- set-up ---------------------------------------------------------------------------

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("runtime", "state", "home"):
            (d / sub).mkdir(mode=0o700)
        # Clients read a cookie even under auth-anonymous; a private one keeps $HOME clean.
        (d / "cookie").write_bytes(secrets.token_bytes(256))
        (d / "client.conf").write_text("autospawn = no\nenable-shm = no\n")
        pa = pa_format(self.fmt)
        (d / "daemon.conf").write_text(
            "daemonize = no\nexit-idle-time = -1\nflat-volumes = no\nenable-shm = no\n"
            "realtime-scheduling = no\nhigh-priority = no\nsystem-instance = no\n"
            f"default-sample-format = {pa}\ndefault-sample-rate = {self.rate}\n"
            f"default-sample-channels = {self.channels}\navoid-resampling = yes\n")
        spec = f"format={pa} rate={self.rate} channels={self.channels} norewinds=1"
        (d / "host.pa").write_text(
            "# sndif-harness audio host: nothing but what a run needs.\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 "
            f"auth-cookie-enabled=0 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SINK} {spec}\n"
            f"load-module module-null-sink sink_name={SOURCE_SINK} {spec}\n"
            f"set-default-sink {SINK}\nset-default-source {self.source}\n")

    @property
    def daemon_env(self) -> dict[str, str]:
        d = self.dir
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PULSE_", "DBUS_", "XDG_")) and k != "DISPLAY"}
        env.update(self.env, HOME=str(d / "home"), XDG_RUNTIME_DIR=str(d / "runtime"),
                   XDG_CONFIG_HOME=str(d / "home"), PULSE_STATE_PATH=str(d / "state"),
                   PULSE_CONFIG=str(d / "daemon.conf"))
        return env

    @property
    def client_env(self) -> dict[str, str]:
        """The caller's environment plus :attr:`env` (for pacat/pactl run by the host)."""
        return {**os.environ, **self.env}

    def start(self) -> None:
        argv = ["pulseaudio", "-n", f"--file={self.dir / 'host.pa'}", "--daemonize=no",
                "--system=no", "--exit-idle-time=-1", "--disallow-exit",
                "--use-pid-file=no", "--realtime=no", "--high-priority=no",
                "--log-target=stderr", "--log-level=notice"]
        with open(self.log_path, "ab") as log:
            self._daemon = spawn(argv, self.daemon_env, stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._daemon.poll() is not None:
                raise AudioHostError(f"pulseaudio exited with {self._daemon.returncode}:\n"
                                     + self.log_tail())
            if self.socket.exists() and self._pactl_ok():
                return
            if time.monotonic() > deadline:
                raise AudioHostError(f"pulseaudio not ready after {self.start_timeout} s:\n"
                                     + self.log_tail())
            time.sleep(0.05)

    def _pactl_ok(self) -> bool:
        try:
            return subprocess.run(["pactl", "info"], env=self.client_env, timeout=5,
                                  capture_output=True).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def pactl(self, *args: str, timeout: float = 5.0) -> str:
        """Run ``pactl`` against this server; its stdout."""
        res = subprocess.run(["pactl", *args], env=self.client_env, timeout=timeout,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise AudioHostError(f"pactl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- the sink's monitor ---------------------------------------------------------------

    @property
    def recording_path(self) -> Path:
        return self.dir / "monitor.raw"

    def start_recording(self, timeout: float = 5.0) -> None:
        """Record the sink's monitor from now on (raw, the host's sample spec); returns
        once the recording runs (the first silence has arrived)."""
        if self._recorder is not None:
            raise AudioHostError("already recording")
        argv = pacat_argv("record", self.monitor, self.fmt, self.rate, self.channels,
                          latency_ms=self.latency_ms, name="monitor-recorder")
        with open(self.recording_path, "wb") as out, open(self.log_path, "ab") as log:
            self._recorder = spawn(argv, self.client_env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=log)
        deadline = time.monotonic() + timeout
        while self.recording_path.stat().st_size == 0:
            if self._recorder.poll() is not None or time.monotonic() > deadline:
                self._stop_recorder()
                raise AudioHostError("monitor recording did not start:\n" + self.log_tail())
            time.sleep(0.01)

    def recorded(self) -> bytes:
        """What the monitor recording holds so far (whole frames)."""
        try:
            data = self.recording_path.read_bytes()
        except FileNotFoundError:
            return b""
        return data[:len(data) - len(data) % self.frame_size]

    def wait_recorded(self, predicate: Callable[[bytes], bool], timeout: float) -> bytes:
        """Poll :meth:`recorded` until ``predicate(data)`` is true or ``timeout`` passes;
        the last data either way."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.recorded()
            if predicate(data) or time.monotonic() > deadline:
                return data
            time.sleep(0.05)

    def _stop_recorder(self) -> None:
        rec, self._recorder = self._recorder, None
        if rec is not None:
            stop_process(rec, signal.SIGINT, timeout=5.0)  # pacat quits cleanly on SIGINT

    def stop_recording(self) -> bytes:
        """Stop the monitor recording; everything recorded (whole frames). The file goes."""
        self._stop_recorder()
        data = self.recorded()
        self.recording_path.unlink(missing_ok=True)
        return data

    # --- the known-signal source ----------------------------------------------------------

    def play_into_source(self, data: bytes) -> subprocess.Popen[bytes]:
        """Start playing ``data`` (raw, the host's sample spec) into the source; returns at
        once (the player runs clocked by the sink; see :meth:`wait_source_done`)."""
        path = self.dir / f"source-{len(self._players)}.raw"
        path.write_bytes(data)
        argv = pacat_argv("playback", SOURCE_SINK, self.fmt, self.rate, self.channels,
                          latency_ms=self.latency_ms, name="known-signal")
        with open(path, "rb") as src, open(self.log_path, "ab") as log:
            proc = spawn(argv, self.client_env, stdin=src, stdout=subprocess.DEVNULL,
                         stderr=log)
        with self._lock:
            self._players.append(proc)
        return proc

    def wait_source_playing(self, timeout: float = 5.0) -> None:
        """Return once a stream plays into the source (PulseAudio lists it as a sink
        input of the source's sink)."""
        deadline = time.monotonic() + timeout
        while True:
            idx = self._sink_index(SOURCE_SINK)
            inputs = self.pactl("list", "short", "sink-inputs").splitlines()
            if any(line.split("\t")[1:2] == [idx] for line in inputs):
                return
            if time.monotonic() > deadline:
                raise AudioHostError("nothing plays into the source")
            time.sleep(0.02)

    def _sink_index(self, name: str) -> str:
        for line in self.pactl("list", "short", "sinks").splitlines():
            cols = line.split("\t")
            if len(cols) > 1 and cols[1] == name:
                return cols[0]
        raise AudioHostError(f"no sink {name}")

    def wait_source_done(self, timeout: float) -> bool:
        """Wait until every player has played all of its data; False on timeout."""
        deadline = time.monotonic() + timeout
        for proc in list(self._players):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop_source(self) -> None:
        with self._lock:
            players, self._players = self._players, []
        for proc in players:
            stop_process(proc, timeout=5.0)
        for f in self.dir.glob("source-*.raw"):
            f.unlink(missing_ok=True)

    # --- the daemon failing (suites: the sound server dying) -----------------------------

    def kill_daemon(self, sig: int = signal.SIGKILL) -> None:
        """Kill the sound server as a crash would: every client loses its connection."""
        if self._daemon is not None and self._daemon.poll() is None:
            self._daemon.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._daemon.wait(5.0)

    def restart(self) -> None:
        """Stop the daemon (and this host's own clients, which die with it anyway) and
        start it again: same configuration, socket, sink and source."""
        self.stop_source()
        self._stop_recorder()
        if self._daemon is not None:
            stop_process(self._daemon, timeout=5.0)
            self._daemon = None
        self.socket.unlink(missing_ok=True)  # a killed daemon leaves its socket behind
        self.start()

    # --- tear-down ------------------------------------------------------------------------

    def close(self, keep_log: Path | None = None) -> None:
        """Stop every process this host started and remove every file and socket it made.
        ``keep_log``: copy the daemon's log there first (evidence for a report)."""
        try:
            self.stop_source()
            self._stop_recorder()
        finally:
            if self._daemon is not None:
                stop_process(self._daemon, timeout=5.0)
                self._daemon = None
            if keep_log is not None:
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.log_path, keep_log)
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._sock_dir is not None:
                shutil.rmtree(self._sock_dir, ignore_errors=True)
            if self._made_parent:
                with contextlib.suppress(OSError):
                    self.dir.parent.rmdir()

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """Every live process of this host (for leak checks)."""
        procs = [self._daemon, self._recorder, *self._players]
        return [p for p in procs if p is not None and p.poll() is None]


@contextlib.contextmanager
def running_audio_host(directory: str | os.PathLike[str], rate: int = 48000,
                       fmt: PcmFormat | int | str = PcmFormat.S16_LE, channels: int = 2,
                       **kw: object) -> Iterator[AudioHost]:
    """A started :class:`AudioHost`; stopped and cleaned up on the way out, whatever
    happened inside."""
    missing = missing_tools()
    if missing:
        raise AudioHostError(f"{', '.join(missing)} not found: {INSTALL_HINT}")
    host = AudioHost(directory, rate, fmt, channels, **kw)  # type: ignore[arg-type]
    try:
        host.start()
        yield host
    finally:
        host.close()


# --- ALSA: the file plugin ------------------------------------------------------------------

def _alsa_string(value: str) -> str:
    # The file plugin expands %r/%f/... in file names; a literal % must be doubled.
    if any(c in value for c in '"\\\n'):
        raise ValueError(f"path not usable in an ALSA configuration: {value!r}")
    return '"' + value + '"'


def asoundrc_for_file(path: str | os.PathLike[str],
                      infile: str | os.PathLike[str] | None = None) -> str:
    """A self-contained ALSA configuration whose default PCM writes every frame played to
    ``path`` (raw, exactly as written) and, with ``infile``, reads capture data from it.
    The slave is the ``null`` plugin, which has no clock: where pacing matters use the
    PulseAudio host."""
    lines = ["# sndif-harness: the default PCM is a file (byte-exact, unpaced).",
             "pcm.!default {", "    type file",
             "    slave.pcm { type null }",
             f"    file {_alsa_string(os.fspath(path).replace('%', '%%'))}",
             '    format "raw"']
    if infile is not None:
        lines.append(f"    infile {_alsa_string(os.fspath(infile).replace('%', '%%'))}")
    lines += ["}", ""]
    return "\n".join(lines)


def alsa_file_env(config: str | os.PathLike[str],
                  base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ALSA reading only ``config``:
    ``ALSA_CONFIG_PATH`` replaces alsa.conf (so no ~/.asoundrc, /etc/asound.conf or card
    definitions interfere), and an inherited ``ALSA_CONFIG_DIR`` is dropped (it only
    locates alsa.conf's includes, which this configuration has none of)."""
    env = dict(os.environ if base is None else base)
    env.pop("ALSA_CONFIG_DIR", None)
    env["ALSA_CONFIG_PATH"] = str(Path(config).absolute())
    return env
