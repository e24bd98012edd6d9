"""The configuration space of one stream as the reference backend supports it, and the two
questions asked of it: HW_PARAM_QUERY (SND-F-01..F-06) and OPEN validation (SND-C-14/C-15).

Pure. Buffer and period are in frames in a query (F-01) and in octets in OPEN (C-01).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from harness.card_config import PcmHw
from protocol_models.constants import PCM_FORMATS, PcmFormat, XenErrno

from .defects import NO_DEFECTS, Defects

EINVAL = -int(XenErrno.EINVAL)
U32_MAX = 0xFFFF_FFFF

#: Formats the backend can pace: a fixed number of octets per frame. Compressed formats
#: (IMA_ADPCM, MPEG, GSM) have none, so they are never offered (BEHAVIOUR.md).
PACEABLE_MASK = sum(f.mask for f, i in PCM_FORMATS.items() if i.width is not None)


class HwParams(NamedTuple):
    """The ``xensnd_query_hw_param`` payload (request and response)."""

    formats: int
    rates_min: int
    rates_max: int
    channels_min: int
    channels_max: int
    buffer_min: int
    buffer_max: int
    period_min: int
    period_max: int


def _widths(mask: int) -> list[int]:
    return [PCM_FORMATS[f].width or 0 for f in PcmFormat if mask & f.mask]


@dataclass(frozen=True)
class StreamSpace:
    """Supported formats (mask of ``1 << fmt``), rate interval, channel interval and the
    buffer limit in octets (``buffer-size``; AMBIG-21: the reference backend enforces it).

    Rates are an interval: a query answer can only carry [min, max] (F-01), and OPEN must
    accept everything inside the agreed space (C-14), so the backend accepts every rate in
    the hull of the configured ``sample-rates``.
    """

    formats: int
    rate_min: int
    rate_max: int
    channels_min: int
    channels_max: int
    buffer_bytes_max: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", self.formats & PACEABLE_MASK)

    @classmethod
    def from_pcm_hw(cls, hw: PcmHw) -> StreamSpace:
        """From the frontend's view of the stream (the same inheritance rules the Linux
        frontend applies, so both ends agree on the space)."""
        rates = sorted(hw.rates)
        lo, hi = ((hw.rate_min, hw.rate_max) if hw.rates_continuous or not rates
                  else (rates[0], rates[-1]))
        return cls(formats=hw.formats_mask, rate_min=lo, rate_max=hi,
                   channels_min=hw.channels_min, channels_max=hw.channels_max,
                   buffer_bytes_max=hw.buffer_bytes_max)

    # --- SND-F-01..F-06 ------------------------------------------------------------------

    def query(self, req: HwParams, defects: Defects = NO_DEFECTS) -> HwParams | int:
        """Intersect ``req`` with the space. Returns the reduced space (a subset of the
        request, F-02/AMBIG-12) or ``-EINVAL`` when it is empty (F-06). Deterministic and
        idempotent: ``query(query(r)) == query(r)`` (F-05), since every bound below depends
        only on bounds that the first answer already fixed."""
        if defects.has("hw-query-wider-than-asked"):
            req = self.full_query()  # F-02: the request is ignored, not intersected
        formats = req.formats & self.formats
        r_lo, r_hi = max(req.rates_min, self.rate_min), min(req.rates_max, self.rate_max)
        c_lo = max(req.channels_min, self.channels_min, 1)
        c_hi = min(req.channels_max, self.channels_max)
        if not formats or r_lo > r_hi or c_lo > c_hi:
            if defects.has("hw-query-success-on-empty"):
                return HwParams(formats, r_lo, r_hi, c_lo, c_hi, 1, 0, 1, 0)  # F-06
            return EINVAL
        # The largest frame in the answer: any buffer inside it fits buffer-size whatever
        # format/channels the FE then picks (C-14).
        max_frame = max(_widths(formats)) * c_hi
        b_lo = max(req.buffer_min, 1)
        b_hi = min(req.buffer_max, self.buffer_bytes_max // max_frame)
        p_lo = max(req.period_min, 1)
        p_hi = min(req.period_max, b_hi)
        if b_lo > b_hi or p_lo > p_hi:
            if defects.has("hw-query-success-on-empty"):
                return HwParams(formats, r_lo, r_hi, c_lo, c_hi, b_lo, b_hi, p_lo, p_hi)
            return EINVAL
        if defects.has("hw-query-not-idempotent") and p_hi > p_lo:
            p_hi -= 1  # F-05: re-querying the answer must return it unchanged
        return HwParams(formats, r_lo, r_hi, c_lo, c_hi, b_lo, b_hi, p_lo, p_hi)

    # --- SND-C-14/C-15 --------------------------------------------------------------------

    def check_open(self, fmt: int, rate: int, channels: int, buffer_sz: int,
                   period_sz: int) -> str | None:
        """Why OPEN's parameters are outside the space, or None when they are fine.
        buffer_sz and period_sz must be whole frames (C-07; positions are whole frames,
        E-03); period_sz 0 is allowed and means "no events" (E-02)."""
        if fmt >= 64 or not self.formats >> fmt & 1:
            return f"format {fmt} not supported"
        if not self.rate_min <= rate <= self.rate_max:
            return f"rate {rate} outside [{self.rate_min}, {self.rate_max}]"
        if not max(self.channels_min, 1) <= channels <= self.channels_max:
            return f"channels {channels} outside [{self.channels_min}, {self.channels_max}]"
        frame = PCM_FORMATS[PcmFormat(fmt)].frame_size(channels)
        if buffer_sz == 0 or buffer_sz % frame:
            return f"buffer_sz {buffer_sz} is not a positive number of {frame}-octet frames"
        if buffer_sz > self.buffer_bytes_max:
            return f"buffer_sz {buffer_sz} exceeds buffer-size {self.buffer_bytes_max}"
        if period_sz > buffer_sz:
            return f"period_sz {period_sz} exceeds buffer_sz {buffer_sz}"
        if period_sz % frame:
            return f"period_sz {period_sz} is not whole {frame}-octet frames"
        return None

    def full_query(self) -> HwParams:
        """The request a frontend knowing nothing would send (everything allowed)."""
        return HwParams((1 << 64) - 1, 0, U32_MAX, 0, U32_MAX, 0, U32_MAX, 0, U32_MAX)
