"""OPEN parameters inside a stream's configured space, chosen one way for every user (the
suites, the sanity sequence, the profile probes, hostile requests): S16_LE and 48 kHz when
offered, two channels when allowed, whole frames; the buffer sized either by a byte
budget (``buffer_bytes``) or by the period's duration (``period_ms``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from harness.card_config import LINUX_MIN_PERIOD_SIZE, PcmHw
from protocol_models.constants import PCM_FORMATS, PcmFormat

PREFERRED_FORMATS = (PcmFormat.S16_LE, PcmFormat.S32_LE, PcmFormat.U8, PcmFormat.S8)
PREFERRED_RATE = 48000


@dataclass(frozen=True)
class OpenParams:
    """A complete OPEN configuration (buffer and period in octets)."""

    rate: int
    fmt: PcmFormat
    channels: int
    buffer_sz: int
    period_sz: int  # 0: no CUR_POS (SND-E-02)

    @property
    def frame(self) -> int:
        return PCM_FORMATS[self.fmt].frame_size(self.channels)

    @property
    def bytes_per_s(self) -> int:
        return self.frame * self.rate

    bytes_per_second = bytes_per_s

    def seconds(self, octets: int) -> float:
        """Play time of ``octets`` at this rate."""
        return octets / self.bytes_per_s

    def frames(self, n: int) -> int:
        """``n`` frames in octets."""
        return n * self.frame

    def but(self, **changes: Any) -> OpenParams:
        return replace(self, **changes)

    def open_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`FrontendStream.open`."""
        return {"rate": self.rate, "fmt": self.fmt, "channels": self.channels,
                "buffer_sz": self.buffer_sz, "period_sz": self.period_sz}

    def args(self) -> tuple[int, PcmFormat, int, int, int]:
        """Positional arguments of :meth:`FrontendStream.open`."""
        return self.rate, self.fmt, self.channels, self.buffer_sz, self.period_sz

    def fields(self, **changes: Any) -> dict[str, Any]:
        """OPEN request fields (``gref_directory`` to be added), with ``changes``."""
        out: dict[str, Any] = {"pcm_rate": self.rate, "pcm_format": int(self.fmt),
                               "pcm_channels": self.channels, "buffer_sz": self.buffer_sz,
                               "period_sz": self.period_sz}
        out.update(changes)
        return out

    def __str__(self) -> str:
        return (f"{self.fmt.name} {self.rate} Hz x{self.channels}, buffer {self.buffer_sz}, "
                f"period {self.period_sz}")


def choose_open_params(hw: PcmHw, *, buffer_bytes: int | None = None,
                       period_ms: float | None = None, periods: int = 4,
                       rate: int | None = None) -> OpenParams | None:
    """A configuration inside ``hw``. With ``period_ms``: periods of about that duration
    (at least Linux's 64 octets), ``periods`` of them as far as ``buffer-size`` allows.
    Else: a buffer of at most ``buffer_bytes`` (default 16 KiB, and ``buffer-size``) in
    ``periods`` equal periods. None when no fixed-width format is offered or not even two
    periods fit."""
    fixed = [f for f in hw.formats if PCM_FORMATS[f].width]
    if not fixed:
        return None
    fmt = next((f for f in PREFERRED_FORMATS if f in fixed), min(fixed))
    if rate is None:
        rates = [r for r in hw.rate_list if hw.rate_min <= r <= hw.rate_max] or [hw.rate_max]
        rate = PREFERRED_RATE if PREFERRED_RATE in rates or (
            hw.rates_continuous and hw.rate_min <= PREFERRED_RATE <= hw.rate_max) \
            else max(rates)
    channels = min(max(2, hw.channels_min), hw.channels_max)
    frame = PCM_FORMATS[fmt].frame_size(channels)
    if period_ms is not None:
        period = max(round(rate * period_ms / 1000), -(-LINUX_MIN_PERIOD_SIZE // frame)) * frame
        n = min(periods, hw.buffer_bytes_max // period)
    else:
        limit = min(buffer_bytes or 16384, hw.buffer_bytes_max)
        period = max(1, limit // (periods * frame)) * frame
        n = periods if period * periods <= hw.buffer_bytes_max else 0
    if n < 2:
        return None
    return OpenParams(rate, fmt, channels, n * period, period)
