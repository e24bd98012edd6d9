"""HW_PARAM_QUERY answer judgement (harness.judge.hw_query) on hand-made spaces, and the
query arguments it builds round-trip through the frontend's request encoding."""

from __future__ import annotations

from harness.frontend.stream_core import HW_PARAM_FIELDS, StreamCore
from harness.judge import hw_query as hq
from protocol_models import codec
from protocol_models.constants import Op, PcmFormat

S16, U8, S32 = PcmFormat.S16_LE.mask, PcmFormat.U8.mask, PcmFormat.S32_LE.mask
REQUEST = {"formats": S16 | U8, "rates_min": 8000, "rates_max": 48000, "channels_min": 1,
           "channels_max": 2, "buffer_min": 64, "buffer_max": 16384, "period_min": 32,
           "period_max": 8192}


def test_intervals_come_from_the_model_fields():
    assert hq.INTERVALS == ("rates", "channels", "buffer", "period")
    assert set(REQUEST) == set(HW_PARAM_FIELDS)


def test_an_answer_inside_the_request_has_no_problems():
    answer = {**REQUEST, "formats": S16, "rates_min": 48000, "buffer_max": 4096}
    assert hq.empty_problems(answer) == []
    assert hq.subset_problems(answer, REQUEST, card_formats=S16) == []


def test_an_answer_wider_than_the_request_is_named_per_interval():
    answer = {**REQUEST, "formats": S16 | S32, "rates_max": 96000, "buffer_min": 1}
    problems = hq.subset_problems(answer, REQUEST, card_formats=S16 | U8)
    assert any("S32_LE" in p and "not asked for" in p for p in problems)
    assert any(p.startswith("rates [8000, 96000]") for p in problems)
    assert any(p.startswith("buffer [1, 16384]") for p in problems)
    assert len(problems) == 3


def test_formats_beyond_the_card_are_named():
    problems = hq.subset_problems({**REQUEST, "formats": U8}, REQUEST, card_formats=S16)
    assert problems == ["formats ['U8'] are not the card's"]


def test_empty_answers():
    assert hq.empty_problems({**REQUEST, "formats": 0}) == ["formats mask is 0"]
    assert hq.empty_problems({**REQUEST, "buffer_min": 2, "buffer_max": 1}) == \
        ["buffer min 2 > max 1"]


def test_query_kwargs_round_trip_through_the_request_encoding():
    kwargs = hq.query_kwargs(REQUEST)
    assert kwargs["rates"] == (8000, 48000) and kwargs["formats"] == S16 | U8
    fields = {"formats": kwargs["formats"]}
    for name in hq.INTERVALS:
        fields[f"{name}_min"], fields[f"{name}_max"] = kwargs[name]
    raw = StreamCore().build(Op.HW_PARAM_QUERY, **fields)
    req = codec.decode_req(raw)
    assert {f: getattr(req, f) for f in HW_PARAM_FIELDS} == REQUEST


def test_format_names_show_unknown_bits():
    assert hq.format_names(S16 | 1 << 40) == ["S16_LE", f"bits {1 << 40:#x}"]
    assert "rates [8000, 48000]" in hq.describe(REQUEST)
