"""Hypothesis strategies for sndif requests, derived from the models (:mod:`.fields`) and
from the card the frontend read (``StreamConfig.hw``): valid OPEN configurations of the
stream, and malformed ones; regions inside and outside a buffer; trigger types and
operations, defined or not; raw requests with any field and reserved bytes set; hostile
page directories (:class:`~harness.frontend.hostile.DirShape`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from harness.card_config import PcmHw
from harness.frontend.hostile import DirShape
from protocol_models import codec
from protocol_models.constants import PCM_FORMATS, XEN_PAGE_SIZE, Op, Trigger

from . import fields as F

U32_MAX = 0xFFFF_FFFF


def boundary(maximum: int, *anchors: int) -> st.SearchStrategy[int]:
    """Integers in ``[0, maximum]``, favouring the edges: 0, 1, the maximum, and each
    anchor (e.g. a buffer size) and its neighbours."""
    edges = {0, 1, maximum - 1, maximum, maximum // 2 + 1}
    for a in anchors:
        edges |= {a - 1, a, a + 1}
    picks = sorted(v for v in edges if 0 <= v <= maximum)
    return st.one_of(st.sampled_from(picks), st.integers(0, maximum))


@dataclass(frozen=True)
class OpenChoice:
    """An OPEN to send: its fields (without ``gref_directory`` unless forced), the buffer
    to build for it, and whether it is valid (inside the card's space, valid buffer)."""

    fields: dict[str, int]
    shape: DirShape
    buffer_pages: int  # pages to share (the directory lists them per ``shape``)
    readonly: bool = False
    foreign: bool = False  # granted to another domain than the backend
    valid: bool = True

    @property
    def buffer_sz(self) -> int:
        return self.fields["buffer_sz"]


def _fixed_formats(hw: PcmHw) -> list[Any]:
    return sorted(f for f in hw.formats if PCM_FORMATS[f].width)


@st.composite
def valid_open(draw: Any, hw: PcmHw) -> OpenChoice:
    """A configuration inside the stream's space (SND-C-14): a fixed-width format, a rate
    it lists, channels in range, a period of whole frames, 2 or more periods that fit
    ``buffer-size``."""
    fmt = draw(st.sampled_from(_fixed_formats(hw)))
    rates = [r for r in hw.rate_list if hw.rate_min <= r <= hw.rate_max] or [hw.rate_max]
    rate = draw(st.sampled_from(rates))
    channels = draw(st.integers(hw.channels_min, hw.channels_max))
    frame = PCM_FORMATS[fmt].frame_size(channels)
    lo = -(-hw.period_bytes_min // frame)
    hi = max(lo, min(hw.period_bytes_max, hw.buffer_bytes_max // max(2, hw.periods_min))
             // frame)
    period_frames = draw(st.integers(lo, hi))
    period = period_frames * frame
    most = max(hw.periods_min, min(hw.periods_max, hw.buffer_bytes_max // period))
    periods = draw(st.integers(hw.periods_min, most))
    buffer_sz = periods * period
    return OpenChoice({"pcm_rate": rate, "pcm_format": int(fmt), "pcm_channels": channels,
                       "buffer_sz": buffer_sz, "period_sz": period},
                      DirShape.VALID, -(-buffer_sz // XEN_PAGE_SIZE))


def _hostile_value(name: str, maximum: int, valid: dict[str, int]) -> st.SearchStrategy[int]:
    if name == "pcm_format":
        return st.one_of(st.sampled_from(F.UNKNOWN_FORMATS), boundary(maximum))
    if name == "period_sz":  # larger than the buffer, 0, maxima
        return boundary(maximum, valid["buffer_sz"], valid["buffer_sz"] + 1)
    return boundary(maximum, valid.get(name, 0))


@st.composite
def malformed_open(draw: Any, hw: PcmHw) -> OpenChoice:
    """A valid OPEN with one or more fields hostile (unknown format, 0 or huge rate,
    channels, sizes, period larger than the buffer, a forced ``gref_directory``), reserved
    bytes set, and/or a hostile buffer (cyclic, short, long, gref 0, revoked, read-only,
    granted to another domain)."""
    base = draw(valid_open(hw))
    fields = dict(base.fields)
    names = [f for f in F.INT_FIELDS[Op.OPEN]]
    chosen = draw(st.lists(st.sampled_from(names), max_size=3, unique_by=lambda f: f.name))
    for f in chosen:
        fields[f.name] = draw(_hostile_value(f.name, f.maximum, base.fields))
    shape = draw(st.sampled_from(list(DirShape)))
    readonly = draw(st.booleans())
    foreign = draw(st.booleans()) if shape is DirShape.VALID else False
    pages = -(-min(fields["buffer_sz"], base.buffer_sz) // XEN_PAGE_SIZE)
    hostile = bool(chosen) or shape is not DirShape.VALID or readonly or foreign
    return OpenChoice(fields, shape, max(1, pages), readonly, foreign, valid=not hostile)


def region(buffer_sz: int, inside: bool) -> st.SearchStrategy[tuple[int, int]]:
    """``(offset, length)`` inside a ``buffer_sz`` buffer (length ≥ 1), or not: offset at
    or past the end, offset + length crossing it or wrapping 32 bits, huge lengths."""
    if inside and buffer_sz > 0:
        return st.integers(0, buffer_sz - 1).flatmap(
            lambda off: st.tuples(st.just(off), st.integers(1, buffer_sz - off)))
    past = st.tuples(boundary(U32_MAX, buffer_sz).filter(lambda o: o >= buffer_sz),
                     boundary(U32_MAX, buffer_sz))
    crossing = st.integers(0, max(0, buffer_sz - 1)).flatmap(
        lambda off: st.tuples(st.just(off), st.one_of(
            st.integers(buffer_sz - off + 1, U32_MAX),
            st.just(U32_MAX - off + 1 if off else U32_MAX))))  # offset + length wraps
    return st.one_of(past, crossing)


def trigger_type() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([int(t) for t in Trigger]),
                     st.sampled_from(F.UNKNOWN_TRIGGERS))


def reserved_bytes(op: int) -> st.SearchStrategy[dict[str, Any]]:
    """Values for the reserved fields of ``op`` (SND-B-12: a backend must ignore them)."""
    specs = F.RESERVED_FIELDS.get(op, F.reserved_fields(codec.UNKNOWN_REQ))
    optional: dict[str, st.SearchStrategy[Any]] = {
        s.name: (st.binary(min_size=s.size, max_size=s.size) if s.code.endswith("s")
                 else st.integers(0, (1 << (8 * s.size)) - 1))
        for s in specs}
    return st.fixed_dictionaries({}, optional=optional)


@st.composite
def raw_request(draw: Any) -> bytes:
    """Any request: a defined or unknown operation, every integer field drawn near its
    edges, reserved bytes possibly set (the id is the driver's)."""
    op = draw(st.one_of(st.sampled_from([int(o) for o in Op]),
                        st.sampled_from(F.UNKNOWN_OPS)))
    values: dict[str, Any] = {}
    for f in F.INT_FIELDS.get(op, ()):
        if draw(st.booleans()):
            values[f.name] = draw(boundary(f.maximum))
    values.update(draw(reserved_bytes(op)))
    return codec.encode_req(op, id=0, **values)


@st.composite
def playable_open(draw: Any, hw: PcmHw, period_zero: bool = False) -> OpenChoice:
    """A valid OPEN that plays in short periods (4-20 ms, at most 8 of them), so that
    CUR_POS events come within the few hundred milliseconds an example lasts; with
    ``period_zero`` its period_sz is 0 (E-02: then no event at all)."""
    fmt = draw(st.sampled_from(_fixed_formats(hw)))
    rates = [r for r in hw.rate_list if hw.rate_min <= r <= hw.rate_max] or [hw.rate_max]
    rate = draw(st.sampled_from(rates))
    channels = draw(st.integers(hw.channels_min, hw.channels_max))
    frame = PCM_FORMATS[fmt].frame_size(channels)
    ms = draw(st.integers(4, 20))
    lo = -(-hw.period_bytes_min // frame)
    hi = max(lo, min(hw.period_bytes_max, hw.buffer_bytes_max // max(2, hw.periods_min))
             // frame)
    period = min(hi, max(lo, rate * ms // 1000)) * frame
    most = max(hw.periods_min, min(hw.periods_max, 8, hw.buffer_bytes_max // period))
    periods = draw(st.integers(hw.periods_min, most))
    buffer_sz = periods * period
    return OpenChoice({"pcm_rate": rate, "pcm_format": int(fmt), "pcm_channels": channels,
                       "buffer_sz": buffer_sz, "period_sz": 0 if period_zero else period},
                      DirShape.VALID, -(-buffer_sz // XEN_PAGE_SIZE))


@st.composite
def narrowed_space(draw: Any, space: dict[str, int]) -> dict[str, int]:
    """A HW_PARAM_QUERY space inside ``space`` (the stream's whole one): a non-empty
    subset of its formats and a sub-interval of each interval."""
    bits = [b for b in range(64) if space["formats"] >> b & 1]
    chosen = draw(st.lists(st.sampled_from(bits), min_size=1, unique=True)) if bits else []
    out = {"formats": sum(1 << b for b in chosen) or space["formats"]}
    for name in ("rates", "channels", "buffer", "period"):
        lo, hi = space[f"{name}_min"], space[f"{name}_max"]
        a = draw(st.integers(lo, max(lo, hi)))
        b = draw(st.integers(a, max(a, hi)))
        out[f"{name}_min"], out[f"{name}_max"] = a, b
    return out


@st.composite
def empty_space(draw: Any, space: dict[str, int], hw: PcmHw) -> dict[str, int]:
    """A space with nothing in common with the stream's: formats it lacks, or rates or
    channels beyond its range (F-06)."""
    out = dict(space)
    how = draw(st.sampled_from(["formats", "rates", "channels"]))
    if how == "formats":
        others = ~hw.formats_mask & ((1 << 64) - 1)
        out["formats"] = draw(st.integers(1, others).map(lambda m: m & others)
                              .filter(bool))
    elif how == "rates":
        lo = draw(st.integers(hw.rate_max + 1, U32_MAX))
        out["rates_min"], out["rates_max"] = lo, draw(st.integers(lo, U32_MAX))
    else:
        lo = draw(st.integers(hw.channels_max + 1, 255))
        out["channels_min"], out["channels_max"] = lo, draw(st.integers(lo, 255))
    return out


def volume_values(channels: int) -> st.SearchStrategy[list[int]]:
    """Per-channel volumes (0.001 dB): a sane range, where a sound server keeps them."""
    return st.lists(st.integers(-40_000, 0), min_size=channels, max_size=channels)
