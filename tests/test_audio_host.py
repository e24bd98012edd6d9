"""The audio host (a private PulseAudio; the ALSA file plugin) and the reference backend
playing into it and recording from it, checked sample-exact by the audio oracle.

Needs Debian's pulseaudio, pulseaudio-utils and alsa-utils: skipped without them, except
under CI=true, where their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from requires import unavailable

from harness.backends.audio_host import (
    INSTALL_HINT,
    PACAT_LATENCY_MS,
    AudioHost,
    AudioHostError,
    alsa_file_env,
    asoundrc_for_file,
    missing_tools,
    pa_format,
    pacat_argv,
    running_audio_host,
)
from harness.backends.audio_oracle import check_capture, check_playback, noise
from harness.frontend import audio
from harness.world.world import reference_world
from protocol_models.constants import PcmFormat, frame_size

RATE, FMT, CH = 48000, PcmFormat.S16_LE, 2
FSZ = frame_size(FMT, CH)


def need(tools: list[str]) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    unavailable(f"{', '.join(missing)} not installed ({INSTALL_HINT})")


@pytest.fixture
def pulse() -> None:
    need(["pulseaudio", "pacat", "pactl"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state says it is gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def pacat(host, mode: str, data: bytes | None = None, *, rate: int = RATE,
          seconds: float | None = None) -> bytes:
    argv = pacat_argv(mode, None, FMT, rate, CH, latency_ms=PACAT_LATENCY_MS, name="test")
    if seconds is not None:  # a recorder: stop it after a while
        argv = ["timeout", "-s", "INT", str(seconds), *argv]
    return subprocess.run(argv, input=data, env=host.client_env, capture_output=True,
                          timeout=10).stdout


# --- the host ------------------------------------------------------------------------------

def test_pulse_host_runs_privately_and_leaves_nothing_behind(pulse, tmp_path):
    with running_audio_host(tmp_path, RATE, FMT, CH) as host:
        procs = host.processes
        assert procs and all(alive(p.pid) for p in procs)
        assert host.env["PULSE_SERVER"] == f"unix:{host.socket}" and host.socket.exists()
        info = host.pactl("info")
        assert "Default Sink: harness_sink" in info
        assert "Default Source: harness_src.monitor" in info
        sinks = host.pactl("list", "short", "sinks")
        assert "harness_sink" in sinks and "s16le 2ch 48000Hz" in sinks
        host.start_recording()
        host.play_into_source(noise(FMT, CH, 4800))
        procs = host.processes
        assert len(procs) == 3
    assert not any(alive(p.pid) for p in procs)
    assert list(tmp_path.iterdir()) == []  # config, socket, recordings: all gone


def test_a_long_run_directory_gets_a_short_socket_and_still_cleans_up(pulse, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with running_audio_host(deep) as host:
        assert len(str(host.socket)) < 100 and not host.socket.is_relative_to(deep)
        sock_dir = host.socket.parent
        assert "Default Sink" in host.pactl("info")
    assert not sock_dir.exists() and not deep.exists()


def test_missing_pulseaudio_is_reported_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    assert "pulseaudio" in missing_tools()
    with pytest.raises(AudioHostError, match="apt-get install"), \
            running_audio_host(tmp_path / "h"):
        pass


def test_pulse_formats_map_exactly_or_refuse(tmp_path):
    with pytest.raises(ValueError):
        AudioHost(tmp_path, fmt=PcmFormat.U16_LE)  # before creating anything
    assert list(tmp_path.iterdir()) == []
    assert pa_format(PcmFormat.S24_LE) == "s24-32le"  # ALSA's S24 is 24-in-32
    assert pa_format("float_be") == "float32be"
    for fmt in (PcmFormat.U16_LE, PcmFormat.S8, PcmFormat.F64_LE, PcmFormat.MPEG):
        with pytest.raises(ValueError):
            pa_format(fmt)


def test_the_monitor_records_what_is_played_sample_exact(pulse, tmp_path):
    sig = noise(FMT, CH, RATE // 4, seed=1)
    with running_audio_host(tmp_path, RATE, FMT, CH) as host:
        host.start_recording()
        pacat(host, "playback", sig)
        rec = host.wait_recorded(lambda b: check_playback(sig, b, FMT, CH, RATE).match, 3)
        data = host.stop_recording()
        assert not host.recording_path.exists()
        # Resampled audio is not the same samples: the chain can tell (the test can fail).
        host.start_recording()
        pacat(host, "playback", sig, rate=44100)
        time.sleep(0.1)
        resampled = host.stop_recording()
    r = check_playback(sig, rec, FMT, CH, RATE)
    assert r.match, r.detail
    assert r.offset_frames is not None and r.offset_frames > 0  # the silence before it
    assert data[:len(rec)] == rec
    assert not check_playback(sig, resampled, FMT, CH, RATE).match


def test_the_source_plays_the_known_signal_sample_exact(pulse, tmp_path):
    sig = noise(FMT, CH, RATE, seed=2)
    with running_audio_host(tmp_path, RATE, FMT, CH) as host:
        host.play_into_source(sig)
        host.wait_source_playing()
        got = pacat(host, "record", seconds=0.3)
        assert host.wait_source_done(3.0)
    r = check_capture(sig, got, FMT, CH, RATE)
    assert r.match, r.detail
    assert r.overlap_frames > RATE // 10


def test_a_killed_sound_server_is_restarted_with_the_same_devices(pulse, tmp_path):
    """kill_daemon() is a crash (clients fail); restart() brings the same server back:
    the same socket, sink and source, recording again sample-exact."""
    sig = noise(FMT, CH, RATE // 4, seed=3)
    with running_audio_host(tmp_path, RATE, FMT, CH) as host:
        host.kill_daemon()
        assert not host._pactl_ok()
        host.restart()
        assert host._pactl_ok() and host.sink in host.pactl("list", "short", "sinks")
        host.start_recording()
        pacat(host, "playback", sig)
        rec = host.wait_recorded(lambda b: check_playback(sig, b, FMT, CH, RATE).match, 3)
        host.stop_recording()
    assert check_playback(sig, rec, FMT, CH, RATE).match


# --- ALSA's file plugin ----------------------------------------------------------------------

def test_asoundrc_for_file_is_self_contained(tmp_path):
    conf = asoundrc_for_file(tmp_path / "out 100%.raw", infile=tmp_path / "in.raw")
    assert "pcm.!default" in conf and "type file" in conf and "type null" in conf
    assert f'file "{tmp_path}/out 100%%.raw"' in conf  # % is the plugin's escape
    assert f'infile "{tmp_path}/in.raw"' in conf
    with pytest.raises(ValueError):
        asoundrc_for_file('a"b')
    env = alsa_file_env(tmp_path / "asound.conf", {"ALSA_CONFIG_DIR": "/x", "A": "1"})
    assert env == {"A": "1", "ALSA_CONFIG_PATH": str(tmp_path / "asound.conf")}


def test_aplay_and_arecord_through_the_file_plugin_are_byte_exact(tmp_path):
    need(["aplay", "arecord"])
    sig = noise(FMT, CH, 10_000, seed=3)
    (tmp_path / "in.raw").write_bytes(sig)
    conf = tmp_path / "asound.conf"
    conf.write_text(asoundrc_for_file(tmp_path / "out.raw", infile=tmp_path / "in.raw"))
    env = alsa_file_env(conf)
    spec = ["-t", "raw", "-f", "S16_LE", "-r", str(RATE), "-c", str(CH)]
    subprocess.run(["aplay", "-q", *spec, str(tmp_path / "in.raw")], env=env, check=True,
                   timeout=10)
    out = (tmp_path / "out.raw").read_bytes()
    r = check_playback(sig, out, FMT, CH, RATE)  # aplay pads its last period with silence
    assert r.match and r.offset_frames == 0, r.detail
    subprocess.run(["arecord", "-q", *spec, "-s", "4000", str(tmp_path / "cap.raw")],
                   env=env, check=True, timeout=10)
    assert (tmp_path / "cap.raw").read_bytes() == sig[:4000 * FSZ]


# --- the reference backend on the audio host (acceptance) ----------------------------------

BUFFER, PERIOD = 65536, 4096


#: seconds the sink's recording may lag the protocol (a loaded machine included)
SINK_WAIT = 15.0


def _holds(recorded: bytes, signal_octets: int) -> bool:
    """Cheap: the recording is long enough to hold the signal after its leading silence
    (digital silence is zero octets in S16_LE)."""
    lead = len(recorded) - len(recorded.lstrip(b"\0"))
    return len(recorded) - (lead - lead % FSZ) >= signal_octets


def test_reference_backend_playback_arrives_sample_exact_at_the_sink(pulse, tmp_path):
    sig = noise(FMT, CH, RATE, seed=4)  # 1 s
    with reference_world(tmp_path / "run", audio="pulse") as s:
        host = s.audio_host
        assert s.dev is not None and host is not None
        host.start_recording()
        rep = audio.play(s.dev.stream("0/0"), sig, RATE, FMT, CH, BUFFER, PERIOD)
        assert rep.ok and rep.drained, rep.error
        # The sound server lags the protocol's positions by its latency, more under load:
        # wait (bounded by SINK_WAIT, not a guess of the lag) until the recording could
        # hold the whole signal after its leading silence, and only then compare.
        rec = host.wait_recorded(lambda b: _holds(b, len(sig))
                                 and check_playback(sig, b, FMT, CH, RATE).match, SINK_WAIT)
        host.stop_recording()
        assert not list((tmp_path / "run").glob("wav/*.wav"))  # it went to PulseAudio
    r = check_playback(sig, rec, FMT, CH, RATE)
    assert r.match, r.detail + "\n" + (tmp_path / "run" / "backend.log").read_text()
    assert r.offset_frames is not None and r.offset_frames >= 0


def test_reference_backend_capture_reads_the_source_sample_exact(pulse, tmp_path):
    sig = noise(FMT, CH, 3 * RATE, seed=5)  # longer than the capture: no silence at its end
    with reference_world(tmp_path / "run", audio="pulse") as s:
        host = s.audio_host
        assert s.dev is not None and host is not None
        host.play_into_source(sig)
        host.wait_source_playing()
        rep = audio.capture(s.dev.stream("0/1"), RATE, FMT, CH, BUFFER, PERIOD,
                            seconds=1.0)
        assert rep.ok, rep.error
    assert len(rep.data) == RATE * FSZ
    r = check_capture(sig, rep.data, FMT, CH, RATE, max_lead_frames=RATE // 10)
    log = (tmp_path / "run" / "backend.log").read_text()
    assert r.match, r.detail + "\n" + log
    assert r.overlap_frames >= RATE - RATE // 10
    assert "underrun" not in log
