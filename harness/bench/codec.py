"""Row: encode+decode of a 64-byte message, the fast codec against Scapy (target >= 100x).

Both sides do the same work: build an OPEN request from keyword fields, serialise it,
parse it back and read a field. Scapy runs ``iterations`` times, the codec 100x as many
(so that both windows are long enough to time); the best of ``repeats`` is kept, which
is the figure least disturbed by the other load of a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from protocol_models import codec, sndif
from protocol_models.constants import PcmFormat

from .table import Row, check

TARGET = 100.0


@dataclass(frozen=True)
class CodecFigures:
    scapy_us: float
    codec_us: float
    iterations: int
    repeats: int

    @property
    def ratio(self) -> float:
        return self.scapy_us / self.codec_us


def _best_us(fn: Callable[[], object], iterations: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def measure(iterations: int = 3000, repeats: int = 3) -> CodecFigures:
    fmt = int(PcmFormat.S16_LE)

    def with_scapy() -> object:
        raw = bytes(sndif.XenSndReq(id=7) / sndif.OpenReq(
            pcm_rate=48000, pcm_format=fmt, pcm_channels=2, buffer_sz=65536,
            gref_directory=1234, period_sz=4096))
        return sndif.XenSndReq(raw)[sndif.OpenReq].pcm_rate

    encode, decode = codec.OPEN_REQ.encode, codec.decode_req

    def with_codec() -> object:
        raw = encode(id=7, pcm_rate=48000, pcm_format=fmt, pcm_channels=2, buffer_sz=65536,
                     gref_directory=1234, period_sz=4096)
        return decode(raw).pcm_rate

    if with_scapy() != with_codec():
        raise RuntimeError("Scapy and the fast codec disagree")
    # interleave the repeats (Scapy, codec, Scapy, ...) so that both see the same load
    scapy_us = codec_us = float("inf")
    for _ in range(repeats):
        scapy_us = min(scapy_us, _best_us(with_scapy, iterations, 1))
        codec_us = min(codec_us, _best_us(with_codec, iterations * 100, 1))
    return CodecFigures(scapy_us, codec_us, iterations, repeats)


def rows_of(f: CodecFigures) -> list[Row]:
    return [Row("encode+decode 64-byte message, fast codec", f.codec_us, "us",
                reference=f.scapy_us, reference_name="Scapy", ratio=f.ratio,
                target=f">= {TARGET:g}x faster", holds=check(f.ratio >= TARGET),
                note="ratio = Scapy time / codec time",
                extra={"iterations": f.iterations, "repeats": f.repeats})]


def run(quick: bool = False) -> list[Row]:
    return rows_of(measure(300 if quick else 3000, 2 if quick else 3))
