"""(H) Volume and mute: SND-H-01..H-05 against the backend under test.

Volume and mute are optional for a backend (SND-H-04, MAY; Linux never sends them): each
case that needs them first probes with a harmless SET_VOLUME of 0 dB on an open stream and
ends N/A when that is refused. Requests the typed frontend API would not build (no buffer,
regions outside it) are sent raw.

Not tested here:

* SND-H-01: a frontend clause (where the payload lives and keeping it free of audio); the
  backend side, "only meaningful while open", is SND-H-05's case.
* SND-H-02, its SHOULD part (length = 4 * N): a frontend obligation.
* SND-H-04 (MAY) is not judged: it only decides whether the volume cases run (probe).
  The mute flag width (AMBIG-9) is observed, not judged.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator

import pytest

from harness.certify.outcomes import not_applicable
from harness.frontend.stream import FrontendStream
from harness.judge.streams import (
    RAW_ID_BASE,
    OpenParams,
    ensure_closed,
    opened,
    raw_call,
    stream_and_params,
)
from protocol_models.constants import Op

KINDS = [pytest.param("p", id="playback"), pytest.param("c", id="capture")]
VOLUME_OPS = (Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE)
U32_MAX = 0xFFFF_FFFF
#: Where the payload goes in the buffer (away from offset 0, to see offsets honoured).
PAYLOAD_OFFSET = 256
#: A backend may quantise volume to its mixer's steps: 0.5 dB (in 0.001 dB units).
VOLUME_TOLERANCE = 500
SENTINEL = 0x5A


def _stream(case, kind: str, **params) -> tuple[FrontendStream, OpenParams]:
    return stream_and_params(case.dev, kind, **params)


@contextlib.contextmanager
def _open_with_volume(case, kind: str) -> Iterator[tuple[FrontendStream, OpenParams]]:
    """An open stream whose backend takes SET_VOLUME (probed with 0 dB), else N/A."""
    stream, p = _stream(case, kind)
    with opened(stream, p):
        probe = stream.set_volume([0] * p.channels, offset=PAYLOAD_OFFSET)
        if not probe.ok:
            not_applicable(f"volume not implemented: SET_VOLUME of 0 dB on an open stream "
                           f"answered {probe.status} (SND-H-04 allows it)")
        yield stream, p


@pytest.mark.clause("SND-H-05", "SND-H-01")
@pytest.mark.parametrize("kind", KINDS)
def test_volume_and_mute_need_an_open_stream(backend_case, kind):
    """SET_VOLUME, GET_VOLUME, MUTE and UNMUTE on a stream that is not open fail with a
    negative status (there is no shared buffer to carry the payload)."""
    stream, p = _stream(backend_case, kind)
    ensure_closed(stream)
    got = {}
    for i, op in enumerate(VOLUME_OPS):
        resp = raw_call(stream, op, id=RAW_ID_BASE + i, offset=0, length=4 * p.channels)
        got[op.name] = None if resp is None else resp.status_code
    bad = {k: v for k, v in got.items() if v is None or v >= 0}
    assert not bad, (f"stream {stream.path} not open: expected negative statuses "
                     f"(SND-H-05), got {bad} (None: no response)")


@pytest.mark.clause("SND-H-05")
@pytest.mark.parametrize("kind", KINDS)
def test_volume_regions_outside_the_buffer_are_refused(backend_case, kind):
    """Volume regions must lie inside the buffer of the current OPEN (offset + length <=
    buffer_sz, as for READ/WRITE): regions crossing or past its end, or wrapping around
    2^32, fail with a negative status."""
    with _open_with_volume(backend_case, kind) as (stream, p):
        n4 = 4 * p.channels
        regions = {"crossing the end": (p.buffer_sz - 4, n4), "at the end": (p.buffer_sz, n4),
                   "wrapping 2^32": (U32_MAX - 3, n4)}
        got = {}
        for i, op in enumerate((Op.SET_VOLUME, Op.GET_VOLUME)):
            for j, (what, (offset, length)) in enumerate(regions.items()):
                resp = raw_call(stream, op, id=RAW_ID_BASE + 8 * i + j, offset=offset,
                            length=length)
                got[f"{op.name} {what} ({offset}, {length})"] = \
                    None if resp is None else resp.status_code
    bad = {k: v for k, v in got.items() if v is None or v >= 0}
    assert not bad, (f"buffer_sz {p.buffer_sz}: expected negative statuses (SND-H-05), "
                     f"got {bad}")


@pytest.mark.clause("SND-H-03", "SND-H-02")
@pytest.mark.parametrize("kind", KINDS)
def test_get_volume_writes_n_values(backend_case, kind):
    """GET_VOLUME writes N = pcm_channels s32 values at offset + 4*i before answering,
    and nothing past them."""
    with _open_with_volume(backend_case, kind) as (stream, p):
        n4 = 4 * p.channels
        buf = stream.shbuf
        assert buf is not None
        buf.write(PAYLOAD_OFFSET, bytes([SENTINEL]) * (n4 + 8))
        resp = stream.get_volume(offset=PAYLOAD_OFFSET)
        region = buf.read(PAYLOAD_OFFSET, n4 + 8)
    assert resp.ok, f"GET_VOLUME after a successful SET_VOLUME answered {resp.status}"
    sentinel = struct.unpack("<i", bytes([SENTINEL]) * 4)[0]
    untouched = [i for i, v in enumerate(resp.values or ()) if v == sentinel]
    assert not untouched, (f"GET_VOLUME answered 0 but left channels {untouched} as the "
                           f"frontend's bytes {sentinel:#x}: values {resp.values} (SND-H-03)")
    assert region[n4:] == bytes([SENTINEL]) * 8, (
        f"GET_VOLUME of {p.channels} channels wrote past offset + {n4}: "
        f"{region[n4:].hex()} (SND-H-02)")


@pytest.mark.clause("SND-H-03")
@pytest.mark.parametrize("kind", KINDS)
def test_set_volume_is_read(backend_case, kind):
    """SET_VOLUME reads the N values: GET_VOLUME then returns them (within a mixer step
    of 0.5 dB)."""
    with _open_with_volume(backend_case, kind) as (stream, p):
        wanted = [-1000 * (i + 1) for i in range(p.channels)]  # -1 dB, -2 dB, ...
        set_resp = stream.set_volume(wanted, offset=PAYLOAD_OFFSET)
        got = stream.get_volume(offset=PAYLOAD_OFFSET + 4 * p.channels)
    assert set_resp.ok, f"SET_VOLUME {wanted} answered {set_resp.status}"
    assert got.ok, f"GET_VOLUME answered {got.status}"
    off = [(w, g) for w, g in zip(wanted, got.values or (), strict=False)
           if abs(w - g) > VOLUME_TOLERANCE]
    assert not off, (f"SET_VOLUME {wanted} (0.001 dB), then GET_VOLUME {list(got.values or ())}"
                     f": the values set were not read (SND-H-03)")


@pytest.mark.clause("AMBIG-9")
@pytest.mark.parametrize("kind", KINDS)
def test_mute_flag_width_observed(backend_case, kind, observe):
    """AMBIG-9: MUTE/UNMUTE flags are uint8 per the text, 4-octet rows per the drawing;
    which widths the backend takes (observed only)."""
    stream, p = _stream(backend_case, kind)
    seen = {}
    with opened(stream, p):
        for width, name in ((1, "u8"), (4, "u32")):
            flags = [1] * p.channels
            mute = stream.mute(flags, offset=PAYLOAD_OFFSET, width=width)
            unmute = stream.unmute(flags, offset=PAYLOAD_OFFSET, width=width)
            seen[name] = {"length": width * p.channels, "MUTE": mute.status,
                          "UNMUTE": unmute.status}
    observe("MUTE/UNMUTE status by flag width", seen)
