"""The names the shell puts in scope besides the models: ``sr``, ``events``, ``play``,
``share_buffer``, ``xs``, ``trace``, ``fault``. Each is a thin layer over the reference
frontend, the world and the platform seam, so what works here works the same in a suite.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scapy.packet import Packet

from harness.capture import packets_from_trace, write_pcapng
from harness.capture.timeline import timeline
from harness.frontend import audio
from harness.frontend.driver import FrontendDevice
from harness.frontend.shbuf import SharedBuffer
from harness.frontend.stream import FrontendStream
from harness.trace import Trace
from harness.world.world import World
from harness.xen.api import Store
from protocol_models import sndif
from protocol_models.constants import XENSND_MSG_SIZE, PcmFormat, frame_size
from protocol_models.xenstore import XsError

StreamKey = FrontendStream | int | str


class Listing(list[str]):
    """Lines that show as lines at the prompt (not as a list's repr)."""

    def __repr__(self) -> str:
        return "\n".join(self) if self else "(none)"


class Shell:
    """The helpers of one shell session, bound to its world."""

    def __init__(self, world: World, trace: Trace,
                 echo: Callable[[str], None] = print) -> None:
        self.world = world
        self.trace = trace
        self.echo = echo

    @property
    def card(self) -> FrontendDevice:
        dev = self.world.dev
        if dev is None:
            raise RuntimeError("the frontend is not connected")
        return dev

    def stream(self, key: StreamKey) -> FrontendStream:
        """A stream by object, index in the card (``0``) or path (``"0/1"``)."""
        if isinstance(key, FrontendStream):
            return key
        try:
            return self.card.stream(key)
        except KeyError:
            known = ", ".join(f"{s.index} ({s.path})" for s in self.card.streams)
            raise KeyError(f"no stream {key!r}; streams: {known}") from None

    # -- sr ---------------------------------------------------------------------------

    def sr(self, stream: StreamKey, pkt: Packet | bytes, timeout: float | None = None
           ) -> Packet | None:
        """Send one request and return the decoded response (``XenSndResp``), or None
        when none came within ``timeout`` seconds (default: the frontend's request
        timeout). ``pkt``: a model packet (``XenSndReq(...)/OpenReq(...)``, or a body alone
        such as ``OpenReq(...)``) or 64 raw bytes sent as they are. A packet whose ``id`` is
        not given gets the stream's next id, as the frontend numbers its requests."""
        s = self.stream(stream)
        raw = self._request_bytes(s, pkt)
        for late in s.collect(64, timeout=0):
            # a response to an earlier request that came after its sr gave up
            self.echo(f"(late response: {sndif.XenSndResp(late.raw).summary()})")
        s.send_raw(raw)
        got = s.collect(1, timeout)
        if not got:
            wait = s.timeout_ms / 1000 if timeout is None else timeout
            # e.g. a lost notification: the ring's hold-off then skips the next one too
            self.echo(f"no response within {wait:g} s (a lost notification? "
                      f"streams[{s.index}].kick() notifies again)")
            return None
        return sndif.XenSndResp(got[0].raw)

    @staticmethod
    def _request_bytes(s: FrontendStream, pkt: Packet | bytes) -> bytes:
        if isinstance(pkt, bytes | bytearray | memoryview):
            raw = bytes(pkt)
        else:
            if not isinstance(pkt, sndif.XenSndReq):
                if not isinstance(pkt, tuple(sndif.REQ_BODIES.values())):
                    raise TypeError(f"{type(pkt).__name__} is not a request (XenSndReq / "
                                    "a request body)")
                pkt = sndif.XenSndReq() / pkt
            if "id" not in pkt.fields:
                pkt = pkt.copy()
                with s.cond:
                    pkt.id = s.core.next_id
                    s.core.next_id = (s.core.next_id + 1) & 0xFFFF
            raw = bytes(pkt)
        if len(raw) != XENSND_MSG_SIZE:
            raise ValueError(f"a request is {XENSND_MSG_SIZE} octets, not {len(raw)}")
        return raw

    def share_buffer(self, stream: StreamKey, size: int = 65536) -> int:
        """Grant a ``size``-octet buffer to the backend, as OPEN needs, and return its
        ``gref_directory`` (the stream's previous buffer is revoked)."""
        s = self.stream(stream)
        dev = self.card
        with s.cond:
            old, s.shbuf = s.shbuf, None
            if old is not None:
                old.free()
            s.shbuf = SharedBuffer(dev.domain.grants, dev.backend_id, size, dev.hv_lock)
            return s.shbuf.gref_directory

    # -- events -----------------------------------------------------------------------

    def events(self, stream: StreamKey, last: int | None = None) -> Listing:
        """The events received on ``stream`` since it connected (the ``last`` N)."""
        s = self.stream(stream)
        with s.cond:
            evs = list(s.events)
        t0 = evs[0].t_ns if evs else 0  # times from the first event, whatever is shown
        if last is not None:
            evs = evs[-last:]
        out = Listing()
        for e in evs:
            text = sndif.XenSndEvt(e.raw).summary().removeprefix("sndif ")
            skip = " (Linux drops it: id mismatch)" if e.linux_skips else ""
            out.append(f"#{e.index:<5} +{(e.t_ns - t0) / 1e6:9.3f} ms  {text}{skip}")
        return out

    # -- play -------------------------------------------------------------------------

    def play(self, stream: StreamKey, what: float | str | Path = 1.0, *,
             buffer_sz: int = 65536, period_sz: int = 4096) -> audio.Report:
        """Play ``what`` (seconds of a 1 kHz sine in a format the stream offers, or a WAV
        file) through ``stream`` as ALSA would: query, open, write, start, drain,
        close. Returns the report (positions, events, violations)."""
        s = self.stream(stream)
        if isinstance(what, str | Path):
            pcm, rate, fmt, channels = _read_wav(Path(what))
        else:
            rate, fmt, channels = _pick_params(s)
            from harness.backends.reference.audio_io import sine_bytes

            frames = max(1, int(float(what) * rate))
            pcm = sine_bytes(fmt, channels, rate, 1000, 0, frames * frame_size(fmt, channels))
        buffer_sz = min(buffer_sz, s.config.hw.buffer_bytes_max)
        rep = audio.play(s, pcm, rate, fmt, channels, buffer_sz, period_sz,
                         pad_last_period=True)
        self.echo(f"played {len(pcm)} octets ({rate} Hz {fmt.name} {channels} ch): "
                  f"{'ok' if rep.ok else 'FAILED: ' + str(rep.error)}, "
                  f"{len(rep.positions)} position events, {len(rep.violations)} violations")
        return rep


def _pick_params(s: FrontendStream) -> tuple[int, PcmFormat, int]:
    """48 kHz S16_LE stereo where the stream allows it, else its nearest offer."""
    hw = s.config.hw
    rate = 48000 if hw.rate_min <= 48000 <= hw.rate_max else hw.rate_min
    usable = [f for f in _WAV_FORMATS.values() if f in hw.formats]
    fmt = PcmFormat.S16_LE if PcmFormat.S16_LE in hw.formats or not usable else usable[0]
    channels = min(max(2, hw.channels_min), hw.channels_max)
    return rate, fmt, channels


_WAV_FORMATS = {1: PcmFormat.U8, 2: PcmFormat.S16_LE, 4: PcmFormat.S32_LE}


def _read_wav(path: Path) -> tuple[bytes, int, PcmFormat, int]:
    with wave.open(str(path), "rb") as w:
        width = w.getsampwidth()
        if width not in _WAV_FORMATS:
            raise ValueError(f"{path}: {8 * width}-bit samples are not supported "
                             "(8, 16 or 32)")
        return (w.readframes(w.getnframes()), w.getframerate(), _WAV_FORMATS[width],
                w.getnchannels())


class XenStoreShell:
    """XenStore through the platform seam, as the toolstack (dom0) sees it.
    ``xs.fe`` / ``xs.be`` are the device's frontend and backend paths."""

    def __init__(self, store: Store, fe: str, be: str) -> None:
        self._store = store
        self.fe = fe
        self.be = be

    def read(self, path: str) -> str:
        return self._store.read(path).decode(errors="replace")

    def write(self, path: str, value: str | bytes) -> None:
        self._store.write(path, value)

    def rm(self, path: str) -> None:
        self._store.rm(path)

    def dir(self, path: str) -> list[str]:
        return self._store.directory(path)

    def ls(self, path: str = "/", depth: int = 8) -> Listing:
        """The tree under ``path`` with values, as ``xenstore-ls`` prints it."""
        return Listing(self._walk(path.rstrip("/") or "/", 0, depth))

    def _walk(self, path: str, indent: int, depth: int) -> Iterator[str]:
        try:
            children = self._store.directory(path)
        except XsError as exc:
            yield f"{path}: {exc}"
            return
        for c in children:
            sub = f"{path.rstrip('/')}/{c}"
            try:
                value = self.read(sub)
            except XsError as exc:
                value = f"({exc})"
            yield f"{' ' * indent}{c} = \"{value}\""
            if depth > 1:
                yield from self._walk(sub, indent + 1, depth - 1)

    def __repr__(self) -> str:
        return f"<xs: XenStore as dom0; xs.fe={self.fe!r} xs.be={self.be!r}>"


class LiveTrace:
    """The session's trace: ``trace.show(last=20, stream=None)``, ``trace.export(path)``;
    everything of :class:`~harness.trace.Trace` too (``records``, ``select``, ...)."""

    def __init__(self, trace: Trace) -> None:
        self._trace = trace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trace, name)

    def show(self, last: int | None = 20, stream: int | str | None = None) -> Listing:
        lines = list(timeline(self._trace.records,
                              stream=None if stream is None else str(stream)))
        return Listing(lines[-last:] if last else lines)

    def export(self, path: str | Path) -> str:
        """Write the trace so far as pcapng (see ``sndif-harness trace export``)."""
        with open(path, "wb") as fh:
            n = write_pcapng(fh, packets_from_trace(self._trace.records))
        return f"{path}: {n} packets"

    def __repr__(self) -> str:
        return (f"<trace: {len(self._trace.records)} records, in {self._trace.path}; "
                "trace.show(), trace.export('x.pcapng')>")


class Faults:
    """``fault(op, errno=None, mode="once", domid=<backend>)`` makes a platform operation
    fail (the simulated Xen's fault injection: ``evtchn.notify``, ``grant.map``,
    ``xs.read``, ...); returns the fault's id. ``fault.clear()``, ``fault.list()``."""

    def __init__(self, world: World) -> None:
        self._world = world

    def _inj(self) -> Any:
        inj = self._world.faults
        if inj is None:
            raise RuntimeError("this platform has no fault injection (a real Xen host)")
        return inj

    def __call__(self, op: str, errno: int | str | None = None,
                 mode: str | tuple[str, int] = "once", domid: int | None = None) -> int:
        dom = self._world.spec.backend_domid if domid is None else domid
        return int(self._inj().inject_fault(dom, op, errno, mode))

    def clear(self, fault_id: int | None = None, domid: int | None = None) -> int:
        return int(self._inj().clear_faults(domid, fault_id))

    def list(self) -> Listing:
        return Listing(str(f) for f in self._inj().faults())

    def __repr__(self) -> str:
        return ("<fault(op, errno=None, mode='once'|'always'|('from', N), domid=backend); "
                "fault.list(), fault.clear()>")

