"""HW_PARAM_QUERY of the reference backend (SND-F-01..F-06), and its agreement with OPEN
(C-14): answers are subsets, deterministic fixpoints, -EINVAL when empty."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_backend_stream import FakeMemory, StreamCore, StreamInfo

from harness.backends.reference.hw_space import EINVAL, HwParams, StreamSpace
from harness.card_config import read_card_config
from protocol_models import codec
from protocol_models.constants import PCM_FORMATS, Op, PcmFormat

U32 = st.integers(0, 0xFFFF_FFFF)
SMALL = st.integers(0, 70000)
SPACES = st.builds(
    StreamSpace,
    formats=st.integers(0, (1 << 25) - 1),
    rate_min=st.integers(1, 48000), rate_max=st.integers(1, 192000),
    channels_min=st.integers(1, 4), channels_max=st.integers(1, 8),
    buffer_bytes_max=st.integers(0, 1 << 20))
REQUESTS = st.builds(HwParams, st.integers(0, (1 << 64) - 1), SMALL | U32, SMALL | U32,
                     st.integers(0, 10) | U32, st.integers(0, 10) | U32, SMALL | U32,
                     SMALL | U32, SMALL | U32, SMALL | U32)


def _within(a: HwParams, b: HwParams) -> bool:
    return (a.formats & ~b.formats == 0 and b.rates_min <= a.rates_min <= a.rates_max
            <= b.rates_max and b.channels_min <= a.channels_min <= a.channels_max
            <= b.channels_max and b.buffer_min <= a.buffer_min <= a.buffer_max
            <= b.buffer_max and b.period_min <= a.period_min <= a.period_max
            <= b.period_max)


@settings(max_examples=400, deadline=None)
@given(SPACES, REQUESTS)
def test_answer_is_a_nonempty_subset_and_a_fixpoint(space, req):
    ans = space.query(req)
    if ans == EINVAL:
        return
    assert isinstance(ans, HwParams)
    assert _within(ans, req)  # F-02 (AMBIG-12: we answer a subset)
    assert ans.formats and ans.formats & ~space.formats == 0
    assert space.query(ans) == ans  # F-05: idempotent
    assert space.query(req) == ans  # deterministic


@settings(max_examples=300, deadline=None)
@given(SPACES, REQUESTS, st.data())
def test_every_configuration_inside_an_answer_opens(space, req, data):
    """C-14: OPEN succeeds for anything inside the space a query agreed to."""
    ans = space.query(req)
    if not isinstance(ans, HwParams):
        return
    fmt = data.draw(st.sampled_from([f for f in PcmFormat if ans.formats & f.mask]))
    rate = data.draw(st.integers(ans.rates_min, ans.rates_max))
    ch = data.draw(st.integers(ans.channels_min, ans.channels_max))
    frames = data.draw(st.integers(ans.buffer_min, ans.buffer_max))
    period = data.draw(st.integers(ans.period_min, min(ans.period_max, frames)))
    frame = PCM_FORMATS[fmt].frame_size(ch)
    assert space.check_open(fmt, rate, ch, frames * frame, period * frame) is None


def test_empty_intersections_fail_with_einval():
    space = StreamSpace(PcmFormat.S16_LE.mask, 44100, 48000, 1, 2, 65536)
    full = space.full_query()
    assert space.query(full._replace(formats=PcmFormat.U8.mask)) == EINVAL
    assert space.query(full._replace(rates_min=8000, rates_max=11025)) == EINVAL
    assert space.query(full._replace(channels_min=3)) == EINVAL
    assert space.query(full._replace(rates_min=48000, rates_max=44100)) == EINVAL  # min>max
    assert space.query(full._replace(period_max=0)) == EINVAL
    assert space.query(full._replace(buffer_min=65536)) == EINVAL  # > 65536/4 frames


def test_full_query_answer():
    space = StreamSpace(PcmFormat.S16_LE.mask | PcmFormat.U8.mask, 8000, 48000, 1, 2, 65536)
    ans = space.query(space.full_query())
    # the largest frame (S16 stereo, 4 octets) bounds the buffer: 65536 / 4 frames
    assert ans == HwParams(PcmFormat.S16_LE.mask | PcmFormat.U8.mask, 8000, 48000, 1, 2, 1,
                           16384, 1, 16384)


def test_space_from_linux_card_defaults_and_rate_list():
    cfg = read_card_config({"0/0/type": b"p", "sample-rates": b"8000,44100,22050",
                            "channels-max": b"6"})
    space = StreamSpace.from_pcm_hw(cfg.streams[0].hw)  # type: ignore[union-attr]
    assert (space.rate_min, space.rate_max) == (8000, 44100)
    assert space.formats == PcmFormat.U8.mask | PcmFormat.S16_LE.mask
    assert (space.channels_min, space.channels_max, space.buffer_bytes_max) == (1, 6, 65536)


def test_compressed_formats_are_never_offered():
    space = StreamSpace(PcmFormat.MPEG.mask | PcmFormat.S16_LE.mask, 8000, 8000, 1, 1, 4096)
    assert space.formats == PcmFormat.S16_LE.mask
    assert space.query(space.full_query()._replace(formats=PcmFormat.MPEG.mask)) == EINVAL


def test_query_over_the_wire_has_no_side_effects_in_any_state():
    space = StreamSpace(PcmFormat.S16_LE.mask, 48000, 48000, 2, 2, 65536)
    core = StreamCore(StreamInfo("s", "p", space), FakeMemory(), None)  # type: ignore[arg-type]
    raw = codec.encode_req(Op.HW_PARAM_QUERY, id=3, formats=(1 << 64) - 1, rates_max=10**6,
                           channels_max=8, buffer_max=10**6, period_max=10**6,
                           reserved=b"\x01" * 5)
    resp = codec.decode_resp(core.handle(raw, 0))
    assert (resp.id, resp.operation, resp.status) == (3, Op.HW_PARAM_QUERY, 0)
    assert (resp.formats, resp.rates_min, resp.rates_max, resp.channels_min,
            resp.buffer_max, resp.period_max) == (PcmFormat.S16_LE.mask, 48000, 48000, 2,
                                                  16384, 16384)
    assert core.state.name == "CLOSED"
    bad = codec.encode_req(Op.HW_PARAM_QUERY, id=4, formats=PcmFormat.U8.mask)
    resp = codec.decode_resp(core.handle(bad, 0))
    assert resp.status == EINVAL and resp.formats == 0
