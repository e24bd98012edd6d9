"""The fast codecs agree with the Scapy models byte for byte (design.md: one source of truth)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.fields import BitField, StrField
from scapy.packet import Packet, Padding, Raw

from protocol_models import codec, sndif
from protocol_models.codec import (
    CODECS,
    CUR_POS_EVT,
    EVENT_PAGE_HEADER,
    HW_PARAM_RESP,
    OPEN_REQ,
    RESP,
    RING_HEADER,
    Codec,
    decode_evt,
    decode_req,
    decode_resp,
)
from protocol_models.constants import XENSND_PAGE_DIR_GREFS, Op

_INT_RANGES = {"B": (0, 0xFF), "H": (0, 0xFFFF), "I": (0, 0xFFFFFFFF),
               "i": (-(1 << 31), (1 << 31) - 1), "Q": (0, (1 << 64) - 1)}
# Fields that select the body: generating them would change the message kind.
_DISPATCH = {"operation", "type"}
MESSAGE_CODECS = [c for c in CODECS.values() if len(c.layers) == 2]
PAGE_HEADER_CODECS = [c for c in CODECS.values() if len(c.layers) == 1]


def field_values(c: Codec, keep_dispatch: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """Any value of every field, reserved ones included (derived from the codec)."""
    strategies = {}
    for spec in c.fields:
        if keep_dispatch and spec.name in _DISPATCH:
            continue
        if spec.code.endswith("s"):
            strategies[spec.name] = st.binary(min_size=spec.size, max_size=spec.size)
        else:
            lo, hi = _INT_RANGES[spec.code]
            strategies[spec.name] = st.integers(lo, hi)
    return st.fixed_dictionaries(strategies)


def scapy_fields(pkt: Packet) -> dict[str, Any]:
    """All fields of a dissected packet, layers flattened (the codec's record)."""
    out: dict[str, Any] = {}
    layer = pkt
    while layer and not isinstance(layer, Padding | Raw):
        out.update({f.name: layer.getfieldval(f.name) for f in layer.fields_desc})
        layer = layer.payload
    return out


@pytest.mark.parametrize("c", MESSAGE_CODECS + PAGE_HEADER_CODECS, ids=lambda c: c.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encode_equals_scapy_bytes_and_decode_equals_scapy_fields(c: Codec,
                                                                   data: st.DataObject) -> None:
    values = data.draw(field_values(c))
    raw = c.encode(**values)
    assert len(raw) == c.size
    assert raw == bytes(c.scapy(**values))[: c.size]
    record = c.decode(raw)
    assert record._asdict() == {**c.defaults, **values}
    dissected = scapy_fields(c.layers[0](raw))
    assert {n: dissected[n] for n in c.names} == record._asdict()
    assert c.pack_record(record) == raw


@pytest.mark.parametrize("c", MESSAGE_CODECS, ids=lambda c: c.name)
def test_missing_fields_default_to_the_model_and_reserved_zero(c: Codec) -> None:
    raw = c.encode()
    assert raw == bytes(c.scapy())
    for spec in c.fields:
        if "reserved" in spec.name:
            assert raw[spec.offset:spec.offset + spec.size] == bytes(spec.size)


def test_enum_names_are_accepted_and_bad_values_name_the_field() -> None:
    assert OPEN_REQ.encode(pcm_format="S16_LE") == OPEN_REQ.encode(pcm_format=2)
    assert RESP.encode(status="-EINVAL") == RESP.encode(status=-22)
    with pytest.raises(ValueError, match="pcm_rate"):
        OPEN_REQ.encode(pcm_rate=-1)
    with pytest.raises(ValueError, match="pcm_format"):
        OPEN_REQ.encode(pcm_format="NOT_A_FORMAT")
    with pytest.raises(TypeError):
        OPEN_REQ.encode(no_such_field=1)


def test_encode_into_writes_a_slot_in_place() -> None:
    page = bytearray(4096)
    OPEN_REQ.encode_into(page, 64 * 3, id=5, pcm_rate=44100)
    assert bytes(page[64 * 3:64 * 4]) == OPEN_REQ.encode(id=5, pcm_rate=44100)
    assert decode_req(memoryview(page), 64 * 3).pcm_rate == 44100


@pytest.mark.parametrize("op", list(Op))
def test_decode_req_dispatches_by_operation(op: Op) -> None:
    raw = codec.encode_req(op, id=1)
    record = decode_req(raw)
    assert record.operation == op
    body = sndif.REQ_BODIES[op]
    assert type(record).__name__ == body.__name__ + "Record"


def test_decode_resp_and_evt_dispatch() -> None:
    assert type(decode_resp(HW_PARAM_RESP.encode(formats=4))) is HW_PARAM_RESP.record
    assert type(decode_resp(RESP.encode(operation=Op.TRIGGER))) is RESP.record
    assert decode_resp(codec.encode_resp(operation="HW_PARAM_QUERY", rates_max=9)).rates_max == 9
    assert decode_evt(CUR_POS_EVT.encode(position=77)).position == 77
    assert type(decode_evt(bytes([0, 0, 5]) + bytes(61))) is codec.EVT.record


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=64, max_size=64))
def test_any_64_bytes_dissect_and_decode_alike(raw: bytes) -> None:
    kind = raw[2]
    resp_codec = HW_PARAM_RESP if kind == Op.HW_PARAM_QUERY else RESP
    evt_codec = CUR_POS_EVT if kind == 0 else codec.EVT
    for cls, decode, c in ((sndif.XenSndReq, decode_req, codec.req_codec(kind)),
                           (sndif.XenSndResp, decode_resp, resp_codec),
                           (sndif.XenSndEvt, decode_evt, evt_codec)):
        pkt = cls(raw)  # must not raise
        assert bytes(pkt) == raw
        record = decode(raw)
        assert type(record) is c.record
        assert record._asdict() == {n: v for n, v in scapy_fields(pkt).items()
                                    if n in record._fields}
        assert c.pack_record(record) == raw


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow])
@given(raw=st.binary(min_size=4096, max_size=4096))
def test_pages_round_trip_through_scapy_and_codec(raw: bytes) -> None:
    ring = sndif.SndRingPage(raw)
    assert bytes(ring) == raw
    assert len(ring.ring) == 32
    assert RING_HEADER.decode(raw)._asdict() == {
        n: ring.getfieldval(n) for n in RING_HEADER.names}
    events = sndif.SndEventPage(raw)
    assert bytes(events) == raw
    assert EVENT_PAGE_HEADER.decode(raw).in_prod == events.in_prod
    pd = sndif.PageDirectory(raw)
    assert bytes(pd) == raw
    next_page, grefs = codec.decode_page_directory(raw)
    assert (next_page, list(grefs)) == (pd.gref_dir_next_page, pd.gref)
    assert codec.encode_page_directory(next_page, grefs) == raw


@settings(max_examples=40, deadline=None)
@given(next_page=st.integers(0, 0xFFFFFFFF),
       grefs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=XENSND_PAGE_DIR_GREFS))
def test_page_directory_codec_equals_scapy(next_page: int, grefs: list[int]) -> None:
    raw = codec.encode_page_directory(next_page, grefs)
    assert raw == bytes(sndif.PageDirectory(gref_dir_next_page=next_page, gref=grefs))
    assert codec.decode_page_directory(raw, count=len(grefs)) == (next_page, tuple(grefs))


def test_page_directory_rejects_too_many_grefs() -> None:
    with pytest.raises(ValueError, match="1023"):
        codec.encode_page_directory(0, [1] * (XENSND_PAGE_DIR_GREFS + 1))


def test_unsupported_field_types_fail_loudly() -> None:
    with pytest.raises(TypeError, match="no struct mapping"):
        codec.struct_code(BitField("bits", 0, 3))
    with pytest.raises(TypeError, match="no struct mapping"):
        codec.struct_code(StrField("s", b""))

    class Weird(Packet):
        fields_desc = [BitField("bits", 0, 3)]

    with pytest.raises(TypeError):
        Codec("weird", (Weird,), [(Weird, f) for f in Weird.fields_desc])


def test_codec_layouts_match_scapy_layouts() -> None:
    for c in MESSAGE_CODECS:
        header, body = c.layers
        entries = codec.layout(header) + codec.layout(body, sndif.HEADER_SIZE)
        assert [(e.name, e.offset, e.size) for e in entries] == [
            (s.name, s.offset, s.size) for s in c.fields]
