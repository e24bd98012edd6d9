"""Where the audio goes and comes from (AMBIG-10, BEHAVIOUR.md "Data model").

Playback: every WRITE appends the exact octets of its region to a WAV file, one file per
successful OPEN, whose header carries that OPEN's format, rate and channels; a JSON sidecar
names the sndif format (WAV cannot express big-endian or S8/U16 samples). Capture: READ
takes the next octets of a source, restarted at every OPEN: a WAV file's data (raw, looped)
or a deterministic sine that tests can recompute with :func:`sine_bytes`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from protocol_models.constants import PCM_FORMATS, PcmFormat

#: The sine's peak, as a fraction of full scale.
SINE_AMPLITUDE = 0.5

_WAV_TAG = {"int": 1, "iec958": 1, "float": 3}
_WAV_TAG_BY_FMT = {PcmFormat.A_LAW: 6, PcmFormat.MU_LAW: 7}
WAV_HEADER_SIZE = 44


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class Source(Protocol):
    def read(self, n: int) -> bytes: ...
    def close(self) -> None: ...


class AudioFactory(Protocol):
    """What a stream core asks for at OPEN. ``name`` identifies the stream."""

    def open_sink(self, name: str, fmt: PcmFormat, rate: int, channels: int) -> Sink: ...
    def open_source(self, name: str, fmt: PcmFormat, rate: int, channels: int) -> Source: ...


def wav_header(fmt: PcmFormat, rate: int, channels: int, data_len: int) -> bytes:
    info = PCM_FORMATS[fmt]
    width = info.width or 1
    tag = _WAV_TAG_BY_FMT.get(fmt, _WAV_TAG.get(info.kind, 1))
    frame = width * channels
    return (b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, tag, channels, rate, rate * frame,
                                    frame, 8 * width)
            + b"data" + struct.pack("<I", data_len))


class WavSink:
    """A WAV file holding exactly the octets written, sizes patched after every write so the
    file is valid even if the process is killed."""

    def __init__(self, path: str | os.PathLike[str], fmt: PcmFormat, rate: int,
                 channels: int) -> None:
        self.path = Path(path)
        self.fmt, self.rate, self.channels = fmt, rate, channels
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.octets = 0
        self._fh = open(self.path, "wb")
        self._fh.write(wav_header(fmt, rate, channels, 0))
        self._fh.flush()
        self._sidecar()

    def write(self, data: bytes) -> None:
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(data)
        self.octets += len(data)
        self._fh.seek(4)
        self._fh.write(struct.pack("<I", (36 + self.octets) & 0xFFFF_FFFF))
        self._fh.seek(40)
        self._fh.write(struct.pack("<I", self.octets & 0xFFFF_FFFF))
        self._fh.flush()

    def _sidecar(self) -> None:
        meta = {"format": self.fmt.name, "xs_name": self.fmt.xs_name, "rate": self.rate,
                "channels": self.channels,
                "frame_size": PCM_FORMATS[self.fmt].frame_size(self.channels),
                "octets": self.octets, "data_offset": WAV_HEADER_SIZE}
        Path(str(self.path) + ".json").write_text(json.dumps(meta, indent=1) + "\n")

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
            self._sidecar()


def read_wav_data(path: str | os.PathLike[str]) -> bytes:
    """The ``data`` chunk of a RIFF/WAVE file (any format tag; raw octets)."""
    raw = Path(path).read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    off = 12
    while off + 8 <= len(raw):
        cid, size = raw[off:off + 4], struct.unpack_from("<I", raw, off + 4)[0]
        if cid == b"data":
            return raw[off + 8:off + 8 + size]
        off += 8 + size + (size & 1)
    raise ValueError(f"{path}: no data chunk")


# --- samples -------------------------------------------------------------------------------

def _ulaw(pcm: int) -> int:
    """G.711 mu-law from 16-bit linear (Sun g711.c)."""
    sign = 0x80 if pcm < 0 else 0
    mag = min(-pcm if pcm < 0 else pcm, 32635) + 0x84
    exponent, mask = 7, 0x4000
    while not mag & mask and exponent > 0:
        exponent -= 1
        mask >>= 1
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _alaw(pcm: int) -> int:
    """G.711 A-law from 16-bit linear (Sun g711.c)."""
    val = pcm >> 3
    if val >= 0:
        mask = 0xD5
    else:
        mask, val = 0x55, -val - 1
    seg = next((i for i, end in enumerate(_ALAW_SEG_END) if val <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4 | ((val >> 1) if seg < 2 else (val >> seg)) & 0x0F
    return aval ^ mask


def encode_sample(fmt: PcmFormat, x: float) -> bytes:
    """One sample of value ``x`` in [-1, 1] in ``fmt`` (ALSA layouts: S24/U24 are the low
    24 bits of a 4-octet container; IEC958 subframes carry 24 bits in bits 4..27)."""
    info = PCM_FORMATS[fmt]
    order = "<" if info.endian != "big" else ">"
    if info.kind == "float":
        return struct.pack(order + ("f" if info.width == 4 else "d"), x)
    if info.kind == "companded":
        lin = round(x * 32767)
        return bytes([_ulaw(lin) if fmt == PcmFormat.MU_LAW else _alaw(lin)])
    width = info.width or 1
    bits = 24 if info.kind == "iec958" or fmt.name[1:3] == "24" else 8 * width
    value = round(x * ((1 << (bits - 1)) - 1))
    if info.kind == "iec958":
        value = (value & 0xFF_FFFF) << 4
    elif info.signed is False:
        value += 1 << (bits - 1)
    return (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little" if order == "<"
                                                       else "big")


def sine_frame(fmt: PcmFormat, channels: int, rate: int, freq: float, n: int) -> bytes:
    """Frame ``n`` (counted from OPEN) of the capture sine: every channel carries
    ``SINE_AMPLITUDE * sin(2 pi freq n / rate)``."""
    return encode_sample(fmt, SINE_AMPLITUDE * math.sin(2 * math.pi * freq * n / rate)) \
        * channels


def sine_bytes(fmt: PcmFormat, channels: int, rate: int, freq: float, start: int,
               length: int) -> bytes:
    """Octets ``[start, start + length)`` of the capture sine since OPEN."""
    frame = PCM_FORMATS[fmt].frame_size(channels)
    first, last = start // frame, (start + length + frame - 1) // frame
    data = b"".join(sine_frame(fmt, channels, rate, freq, n) for n in range(first, last))
    return data[start - first * frame:start - first * frame + length]


class SineSource:
    def __init__(self, fmt: PcmFormat, rate: int, channels: int, freq: float) -> None:
        self.fmt, self.rate, self.channels, self.freq = fmt, rate, channels, freq
        self.offset = 0

    def read(self, n: int) -> bytes:
        data = sine_bytes(self.fmt, self.channels, self.rate, self.freq, self.offset, n)
        self.offset += n
        return data

    def close(self) -> None:
        pass  # generated: nothing to release


class LoopSource:
    """Raw octets, looped (a WAV file's data chunk, no conversion); zeros when empty."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def read(self, n: int) -> bytes:
        if not self.data:
            return bytes(n)
        out = bytearray()
        while len(out) < n:
            start = self.offset % len(self.data)
            chunk = self.data[start:start + n - len(out)]
            out += chunk
            self.offset += len(chunk)
        return bytes(out)

    def close(self) -> None:
        pass  # in memory: nothing to release


def parse_capture_spec(spec: str) -> Callable[[PcmFormat, int, int], Source]:
    """``sine:FREQ``, ``silence`` or a WAV path -> a factory of fresh sources."""
    if spec.startswith("sine:"):
        freq = float(spec[5:])
        if not math.isfinite(freq):
            raise ValueError(f"bad sine frequency in {spec!r}")
        return lambda fmt, rate, ch: SineSource(fmt, rate, ch, freq)
    if spec == "silence":
        return lambda fmt, rate, ch: LoopSource(b"")
    data = read_wav_data(spec)
    return lambda fmt, rate, ch: LoopSource(data)


class FileAudio:
    """The process's :class:`AudioFactory`: WAV sinks under ``out_dir`` named
    ``<name>-open<N>.wav`` (N counts successful OPENs of that stream from 1) and capture
    sources from ``capture`` (a :func:`parse_capture_spec` string)."""

    def __init__(self, out_dir: str | os.PathLike[str] | None, capture: str = "sine:1000"
                 ) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._capture = parse_capture_spec(capture)
        self._opens: dict[str, int] = {}

    def open_sink(self, name: str, fmt: PcmFormat, rate: int, channels: int) -> Sink:
        if self.out_dir is None:
            return NullSink()
        n = self._opens[name] = self._opens.get(name, 0) + 1
        return WavSink(self.out_dir / f"{name}-open{n}.wav", fmt, rate, channels)

    def open_source(self, name: str, fmt: PcmFormat, rate: int, channels: int) -> Source:
        return self._capture(fmt, rate, channels)


class NullSink:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass
