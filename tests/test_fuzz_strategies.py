"""The fuzz strategies and the stream model, without a backend: tables derived from the
codecs, valid OPENs inside the card's space, regions inside and outside a buffer judged as
the model expects, malformed requests that still are 64-octet requests."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.card_config import DEFAULT_PCM_HW
from harness.fuzz import fields as F
from harness.fuzz import strategies as S
from harness.fuzz.model import Expect, State, StreamModel
from harness.fuzz.requests_loop import draw_request
from protocol_models import codec
from protocol_models.constants import PCM_FORMATS, XENSND_MSG_SIZE, Op, PcmFormat, Trigger

HW = DEFAULT_PCM_HW


def test_tables_follow_the_codecs() -> None:
    open_fields = {f.name for f in F.INT_FIELDS[Op.OPEN]}
    assert open_fields == {"pcm_rate", "pcm_format", "pcm_channels", "buffer_sz",
                           "gref_directory", "period_sz"}
    assert {f.name for f in F.INT_FIELDS[Op.WRITE]} == {"offset", "length"}
    assert {s.name for s in F.RESERVED_FIELDS[Op.OPEN]} == {"reserved", "open_reserved",
                                                             "reserved_tail"}
    raw = codec.encode_req(Op.OPEN, gref_directory=0x1234_5678)
    assert int.from_bytes(raw[F.GREF_DIRECTORY_OFFSET:F.GREF_DIRECTORY_OFFSET + 4],
                          "little") == 0x1234_5678
    patched = F.with_gref_directory(F.with_id(raw, 0xBEEF), 7)
    rec = codec.decode_req(patched)
    assert (rec.id, rec.gref_directory, rec.operation) == (0xBEEF, 7, Op.OPEN)
    assert not set(F.UNKNOWN_OPS) & set(Op) and len(F.UNKNOWN_OPS) == 256 - len(Op)
    assert not set(F.UNKNOWN_TRIGGERS) & set(Trigger)
    assert not set(F.UNKNOWN_FORMATS) & set(PcmFormat)


@settings(max_examples=200, deadline=None)
@given(S.valid_open(HW))
def test_valid_open_is_inside_the_space(choice: S.OpenChoice) -> None:
    f = choice.fields
    fmt = PcmFormat(f["pcm_format"])
    assert fmt in HW.formats and choice.valid
    assert HW.channels_min <= f["pcm_channels"] <= HW.channels_max
    assert HW.rate_min <= f["pcm_rate"] <= HW.rate_max
    frame = PCM_FORMATS[fmt].frame_size(f["pcm_channels"])
    assert f["period_sz"] % frame == 0 and f["period_sz"] >= HW.period_bytes_min
    assert f["buffer_sz"] % f["period_sz"] == 0
    assert 2 * f["period_sz"] <= f["buffer_sz"] <= HW.buffer_bytes_max
    assert choice.buffer_pages * 4096 >= f["buffer_sz"]


@settings(max_examples=200, deadline=None)
@given(S.malformed_open(HW))
def test_malformed_open_is_called_valid_only_when_nothing_was_changed(
        choice: S.OpenChoice) -> None:
    raw = codec.encode_req(Op.OPEN, **choice.fields)
    assert len(raw) == XENSND_MSG_SIZE
    if choice.valid:
        assert choice.shape.value == "valid" and not choice.readonly and not choice.foreign


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 1 << 20), st.booleans(), st.data())
def test_regions_are_judged_as_the_model_expects(size: int, inside: bool,
                                                 data: st.DataObject) -> None:
    offset, length = data.draw(S.region(size, inside))
    assert 0 <= offset <= S.U32_MAX and 0 <= length <= S.U32_MAX
    model = StreamModel(playback=True, state=State.OPENED, buffer_sz=size)
    exp = model.expect(Op.WRITE, offset=offset, length=length).expect
    assert exp is (Expect.SUCCESS if inside else Expect.FAILURE)


@settings(max_examples=200, deadline=None)
@given(S.raw_request())
def test_raw_requests_are_requests(raw: bytes) -> None:
    assert len(raw) == XENSND_MSG_SIZE
    assert codec.decode_req(raw).operation == F.request_op(raw)


def test_the_model_expects_what_the_clauses_make_firm() -> None:
    m = StreamModel(playback=True)
    assert m.expect(Op.WRITE, offset=0, length=4).expect is Expect.FAILURE  # C-09
    assert m.expect(F.UNKNOWN_OPS[0]).expect is Expect.FAILURE  # G-04
    assert m.expect(Op.TRIGGER, trigger=Trigger.START).expect is Expect.EITHER  # D-07
    m.after(Op.OPEN, True, buffer_sz=4096, valid_open=True)
    assert m.state is State.OPENED
    assert m.expect(Op.TRIGGER, trigger=Trigger.START).expect is Expect.SUCCESS
    assert m.expect(Op.TRIGGER, trigger=Trigger.PAUSE).expect is Expect.EITHER  # AMBIG-7
    assert m.expect(Op.TRIGGER, trigger=F.UNKNOWN_TRIGGERS[0]).expect is Expect.FAILURE
    m.after(Op.TRIGGER, True, trigger=Trigger.START)
    assert m.state is State.RUNNING
    m.after(Op.OPEN, False)
    assert m.state is State.UNKNOWN  # C-13: what a failed OPEN left is not said
    assert m.expect(Op.WRITE, offset=0, length=4).expect is Expect.EITHER
    m.after(Op.CLOSE, True)
    assert m.state is State.CLOSED


def test_fast_requests_never_open_and_are_reproducible() -> None:
    rng1, rng2 = random.Random(9), random.Random(9)
    seq1 = [draw_request(rng1) for _ in range(500)]
    assert seq1 == [draw_request(rng2) for _ in range(500)]
    assert all(len(r) == XENSND_MSG_SIZE and F.request_op(r) != Op.OPEN for r in seq1)
    assert any(F.request_op(r) in F.UNKNOWN_OPS for r in seq1)
