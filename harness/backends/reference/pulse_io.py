"""The reference backend's audio through a real sound server (``--audio pulse``).

The same :class:`~.audio_io.AudioFactory` as :class:`~.audio_io.FileAudio`, but a playback
OPEN starts ``pacat --playback`` with that OPEN's exact format, rate and channels and every
WRITE goes to it; a capture OPEN starts ``pacat --record`` and READs take its next octets.
The server is whatever ``PULSE_SERVER`` names (the harness's audio host, or a user's own);
the devices are its defaults unless given.

``pacat`` (pulseaudio-utils) is a real client of the real protocol, and a child process
keeps PulseAudio's threads out of the backend. The stream core's loop must never block on
audio, so a writer thread per sink feeds pacat, and a reader thread per source collects
what pacat records; a READ waits for data at most ``read_timeout`` and pads the rest with
silence (logged: an underrun), which the audio oracle then reports as a difference.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping

from harness.backends.audio_host import PACAT_LATENCY_MS, pa_format, pacat_argv, spawn
from harness.backends.audio_oracle import silence_frame
from harness.procs import stop_process
from protocol_models.constants import PCM_FORMATS, PcmFormat

from .audio_io import Sink, Source

log = logging.getLogger("harness.backends.reference")

#: At most this much recorded audio is kept unread per capture stream (older is dropped).
MAX_BUFFERED_SECONDS = 10.0
#: How long a closed sink's pacat may take to play out what it holds, beyond its data.
DRAIN_GRACE = 5.0


class PacatSink:
    """One playback stream: WRITEs are queued to a writer thread feeding pacat's stdin."""

    def __init__(self, name: str, fmt: PcmFormat, rate: int, channels: int,
                 device: str | None, env: Mapping[str, str], latency_ms: int) -> None:
        self.name = name
        self.bytes_per_s = PCM_FORMATS[fmt].frame_size(channels) * rate
        argv = pacat_argv("playback", device, fmt, rate, channels, latency_ms=latency_ms,
                          name=name)
        self.proc = spawn(argv, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.error: str | None = None
        self.queued = 0
        self._q: queue.Queue[bytes | None] = queue.Queue()
        self._thread = threading.Thread(target=self._feed, name=f"pacat-{name}",
                                        daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while (chunk := self._q.get()) is not None:
                stdin.write(chunk)
                stdin.flush()
        except OSError as exc:  # pacat died (BrokenPipe) or the server went away
            self.error = f"pacat: {exc}"
        finally:
            try:
                stdin.close()  # EOF: pacat drains what it holds, then exits
            except OSError:
                pass
        try:
            self.proc.wait(self.queued / self.bytes_per_s + DRAIN_GRACE)
        except subprocess.TimeoutExpired:
            log.warning("%s: pacat did not drain in time; killed", self.name)
            stop_process(self.proc, timeout=5.0)

    def write(self, data: bytes) -> None:
        if self.error is None and self.proc.poll() is not None:
            self.error = f"pacat exited with {self.proc.returncode}"
        if self.error is not None:
            raise OSError(self.error)
        self.queued += len(data)
        self._q.put(bytes(data))

    def close(self) -> None:
        """Returns at once; the writer thread lets pacat play out and reaps it."""
        self._q.put(None)

    def join(self, timeout: float) -> None:
        """Wait for the play-out (bounded); kill pacat if it is still running."""
        self._thread.join(timeout)
        if self.proc.poll() is None:
            stop_process(self.proc, timeout=5.0)


class PacatSource:
    """One capture stream: a reader thread collects what pacat records from OPEN on."""

    def __init__(self, name: str, fmt: PcmFormat, rate: int, channels: int,
                 device: str | None, env: Mapping[str, str], latency_ms: int,
                 read_timeout: float) -> None:
        self.name = name
        self.frame = PCM_FORMATS[fmt].frame_size(channels)
        self.silence = silence_frame(fmt, channels)
        self.read_timeout = read_timeout
        self.limit = int(MAX_BUFFERED_SECONDS * rate) * self.frame
        argv = pacat_argv("record", device, fmt, rate, channels, latency_ms=latency_ms,
                          name=name)
        self.proc = spawn(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        self.underruns = 0
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._collect, name=f"parec-{name}",
                                        daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        out = self.proc.stdout
        assert out is not None
        fd = out.fileno()
        try:
            while chunk := os.read(fd, 65536):
                with self._cond:
                    self._buf += chunk
                    if len(self._buf) > self.limit:  # nobody reads: keep the newest
                        drop = len(self._buf) - self.limit
                        del self._buf[:drop - drop % self.frame]
                    self._cond.notify_all()
        except OSError:
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def read(self, n: int) -> bytes:
        deadline = time.monotonic() + self.read_timeout
        with self._cond:
            while len(self._buf) < n and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._eof and not self._buf:
                raise OSError(f"pacat --record ended ({self.proc.poll()})")
            take = min(n, len(self._buf))
            data = bytes(self._buf[:take])
            del self._buf[:take]
        if take < n:
            self.underruns += 1
            log.warning("%s: capture underrun: %d of %d octets recorded in time; the rest "
                        "is silence", self.name, take, n)
            pad = self.silence * ((n - take) // self.frame + 1)
            data += pad[len(data) % self.frame:][:n - take]
        return data

    def close(self) -> None:
        stop_process(self.proc, timeout=2.0)
        self._thread.join(2.0)


class PulseAudioIO:
    """The AudioFactory over PulseAudio. ``sink``/``source``: device names (default: the
    server's defaults); ``env``: the clients' environment (default: this process's, which
    carries ``PULSE_SERVER``)."""

    def __init__(self, sink: str | None = None, source: str | None = None, *,
                 latency_ms: int = PACAT_LATENCY_MS, read_timeout: float = 0.5,
                 env: Mapping[str, str] | None = None) -> None:
        self.sink, self.source = sink, source
        self.latency_ms, self.read_timeout = latency_ms, read_timeout
        self.env = dict(os.environ if env is None else env)
        self._sinks: list[PacatSink] = []
        self._sources: dict[str, PacatSource] = {}

    def open_sink(self, name: str, fmt: PcmFormat, rate: int, channels: int) -> Sink:
        pa_format(fmt)  # ValueError (-> EIO at OPEN) for formats PulseAudio lacks
        self._sinks = [s for s in self._sinks if s.proc.poll() is None]
        sink = PacatSink(name, fmt, rate, channels, self.sink, self.env, self.latency_ms)
        self._sinks.append(sink)
        return sink

    def open_source(self, name: str, fmt: PcmFormat, rate: int, channels: int) -> Source:
        pa_format(fmt)
        old = self._sources.pop(name, None)
        if old is not None:  # the stream core does not close sources: the next OPEN does
            old.close()
        src = PacatSource(name, fmt, rate, channels, self.source, self.env,
                          self.latency_ms, self.read_timeout)
        self._sources[name] = src
        return src

    def close(self, drain_timeout: float = 2.0) -> None:
        """At exit: let the sinks play out (bounded), stop every pacat."""
        for sink in self._sinks:
            sink.close()
        deadline = time.monotonic() + drain_timeout
        for sink in self._sinks:
            sink.join(max(0.0, deadline - time.monotonic()))
        for src in self._sources.values():
            src.close()
        self._sinks, self._sources = [], {}
