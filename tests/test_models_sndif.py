"""The Scapy models of sndif.h: building, dissecting, dispatch, display (clauses.md §2)."""

from __future__ import annotations

import struct

import pytest
from scapy.packet import Packet, Padding, Raw

from protocol_models.constants import (
    XENSND_IN_RING_LEN,
    XENSND_PAGE_DIR_GREFS,
    XENSND_RING_SIZE,
    Evt,
    Op,
    PcmFormat,
    Trigger,
)
from protocol_models.sndif import (
    CloseReq,
    CurPosEvt,
    EvtReserved,
    HwParamReq,
    HwParamResp,
    MutePayload,
    MutePayload32,
    OpenReq,
    PageDirectory,
    ReqReserved,
    RespReserved,
    RwReq,
    SndEventPage,
    SndRingPage,
    TriggerReq,
    VolumePayload,
    XenSndEvt,
    XenSndReq,
    XenSndResp,
)


def open_req() -> XenSndReq:
    return XenSndReq(id=7) / OpenReq(pcm_rate=48000, pcm_format="S16_LE", pcm_channels=6,
                                     buffer_sz=65536, gref_directory=0x1234, period_sz=4096)


def test_open_request_builds_by_keyword_to_the_c_layout() -> None:
    raw = bytes(open_req())
    assert len(raw) == 64
    # '<HB5xIBBHIII36x' of clauses.md 2.2, written independently of the model.
    assert raw == struct.pack("<HB5xIBBHIII36x", 7, Op.OPEN, 48000, PcmFormat.S16_LE, 6, 0,
                              65536, 0x1234, 4096)


@pytest.mark.parametrize("body", [OpenReq(), CloseReq(), RwReq(), TriggerReq(), HwParamReq(),
                                  ReqReserved()])
def test_every_request_body_pads_to_56(body: Packet) -> None:
    assert len(bytes(body)) == 56
    assert len(bytes(XenSndReq() / body)) == 64


def test_header_alone_is_a_whole_zero_padded_message() -> None:
    raw = bytes(XenSndReq(id=1, operation="CLOSE"))
    assert raw == b"\x01\x00\x01" + bytes(61)
    assert len(bytes(XenSndResp())) == len(bytes(XenSndEvt())) == 64


@pytest.mark.parametrize(("op", "body"), [
    (Op.OPEN, OpenReq), (Op.CLOSE, CloseReq), (Op.READ, RwReq), (Op.WRITE, RwReq),
    (Op.SET_VOLUME, RwReq), (Op.GET_VOLUME, RwReq), (Op.MUTE, RwReq), (Op.UNMUTE, RwReq),
    (Op.TRIGGER, TriggerReq), (Op.HW_PARAM_QUERY, HwParamReq), (10, ReqReserved),
    (0xFF, ReqReserved),
])
def test_requests_dissect_to_the_body_of_their_operation(op: int, body: type) -> None:
    raw = struct.pack("<HB", 3, op) + bytes(61)
    pkt = XenSndReq(raw)
    assert type(pkt.payload) is body
    assert bytes(pkt) == raw


def test_binding_sets_the_operation_when_building() -> None:
    assert (XenSndReq() / TriggerReq()).operation == Op.TRIGGER
    assert (XenSndReq() / HwParamReq()).operation == Op.HW_PARAM_QUERY
    assert (XenSndReq() / RwReq()).operation == Op.WRITE
    assert (XenSndReq(operation="MUTE") / RwReq()).operation == Op.MUTE
    assert (XenSndResp() / HwParamResp()).operation == Op.HW_PARAM_QUERY
    assert (XenSndEvt() / CurPosEvt()).type == Evt.CUR_POS


def test_responses_dispatch_hw_param_and_reserved() -> None:
    hw = XenSndResp(struct.pack("<HBxi", 1, Op.HW_PARAM_QUERY, 0) + bytes(56))
    assert isinstance(hw.payload, HwParamResp)
    other = XenSndResp(struct.pack("<HBxi", 1, Op.OPEN, -22) + bytes(56))
    assert isinstance(other.payload, RespReserved)
    assert other.status == -22


def test_events_dispatch_cur_pos_and_reserved() -> None:
    evt = XenSndEvt(struct.pack("<HB5xQ", 9, Evt.CUR_POS, 1 << 40) + bytes(48))
    assert isinstance(evt.payload, CurPosEvt)
    assert evt.position == 1 << 40
    assert isinstance(XenSndEvt(struct.pack("<HB", 9, 1) + bytes(61)).payload, EvtReserved)


def test_enumerations_display_by_name() -> None:
    shown = open_req().show(dump=True)
    assert "operation = OPEN" in shown
    assert "pcm_format= S16_LE" in shown
    trig = (XenSndReq() / TriggerReq(type="STOP")).show(dump=True)
    assert "type      = STOP" in trig
    assert (XenSndReq() / TriggerReq(type="STOP")).type == Trigger.STOP
    resp = XenSndResp(status="-EINVAL").show(dump=True)
    assert "-EINVAL" in resp


def test_enum_fields_take_their_names_from_constants() -> None:
    field = XenSndReq.fields_desc[1]
    assert field.i2s == {o.value: o.name for o in Op}
    assert OpenReq.fields_desc[1].i2s == {f.value: f.name for f in PcmFormat}


def test_reserved_fields_are_named_settable_and_in_place() -> None:
    raw = bytes(XenSndReq(reserved=b"\x01\x02\x03\x04\x05")
                / OpenReq(open_reserved=0xABCD, reserved_tail=b"\xff" * 36))
    assert raw[3:8] == b"\x01\x02\x03\x04\x05"
    assert raw[14:16] == b"\xcd\xab"
    assert raw[28:] == b"\xff" * 36
    assert bytes(XenSndResp(reserved=0x5A))[3] == 0x5A


def test_summaries_name_header_and_body() -> None:
    assert open_req().summary() == (
        "sndif req id=7 OPEN / rate=48000 S16_LE ch=6 buf=65536 period=4096 dir=4660")
    resp = XenSndResp(id=2, operation="CLOSE", status=-22)
    assert resp.summary() == "sndif resp id=2 CLOSE status=-EINVAL (-22)"
    assert "reserved_tail!=0" in XenSndReq(b"\x00\x00\x01" + bytes(5) + b"\x01" * 56).summary()
    assert (XenSndEvt(id=4) / CurPosEvt(position=10)).summary() == (
        "sndif evt id=4 CUR_POS / position=10")


def test_hw_param_formats_mask_by_names() -> None:
    pkt = XenSndReq() / HwParamReq(formats=["S16_LE", PcmFormat.U8], rates_max=48000)
    assert pkt.formats == (1 << 2) | (1 << 1)
    assert "U8|S16_LE" in pkt.show(dump=True)
    assert HwParamReq(formats="S8|GSM").formats == 1 | (1 << 24)


def test_truncated_and_long_input_dissect_without_error() -> None:
    short = XenSndReq(bytes(open_req())[:10])  # whole header, truncated body: kept as Raw
    assert short.id == 7
    assert isinstance(short.payload, Raw)
    long = XenSndReq(bytes(open_req()) + b"tail")
    assert isinstance(long.lastlayer(), Padding)
    assert long.lastlayer().load == b"tail"


# --- shared pages ----------------------------------------------------------------------------

def test_ring_page_layout_and_slot_inference() -> None:
    slots = [XenSndResp(id=0, status=0), XenSndReq(id=1) / RwReq(length=64),
             XenSndReq(id=2) / TriggerReq()]
    page = SndRingPage(req_prod=3, rsp_prod=1, ring=slots)
    raw = bytes(page)
    assert len(raw) == 4096
    assert raw[:16] == struct.pack("<IIII", 3, 1, 1, 1)  # default events are 1 (SHARED_RING_INIT)
    assert raw[64 + 64 + 12:64 + 64 + 16] == struct.pack("<I", 64)
    again = SndRingPage(raw)
    assert len(again.ring) == XENSND_RING_SIZE
    # Requests 1 and 2 are unanswered (req_prod - rsp_prod = 2): slots 1, 2 are requests.
    assert [type(s) for s in again.ring[:3]] == [XenSndResp, XenSndReq, XenSndReq]
    assert isinstance(again.ring[2].payload, TriggerReq)
    assert all(type(s) is XenSndResp for s in again.ring[3:])
    assert bytes(again) == raw


def test_ring_slot_inference_across_u32_wrap() -> None:
    page = SndRingPage(SndRingPage(req_prod=1, rsp_prod=0xFFFFFFFF).build())
    # Unanswered: indices 0xFFFFFFFF (slot 31) and 0 (slot 0).
    kinds = {i: type(s) for i, s in enumerate(page.ring)}
    assert kinds[31] is XenSndReq and kinds[0] is XenSndReq
    assert kinds[1] is XenSndResp and kinds[30] is XenSndResp


def test_event_page_layout() -> None:
    page = SndEventPage(in_cons=1, in_prod=2,
                        events=[XenSndEvt(id=0) / CurPosEvt(position=100),
                                XenSndEvt(id=1) / CurPosEvt(position=200)])
    raw = bytes(page)
    assert len(raw) == 4096
    assert raw[64 + 64 + 8:64 + 64 + 16] == struct.pack("<Q", 200)
    again = SndEventPage(raw)
    assert len(again.events) == XENSND_IN_RING_LEN
    assert again.events[1].position == 200
    assert bytes(again) == raw


def test_page_directory_layout() -> None:
    pd = PageDirectory(gref_dir_next_page=5, gref=[10, 11, 12])
    raw = bytes(pd)
    assert len(raw) == 4096
    assert raw[:16] == struct.pack("<IIII", 5, 10, 11, 12)
    again = PageDirectory(raw)
    assert len(again.gref) == XENSND_PAGE_DIR_GREFS
    assert again.gref[:4] == [10, 11, 12, 0]
    assert "[10, 11, 12] + 1020 x 0" in again.show(dump=True)
    full = PageDirectory(gref=list(range(1, XENSND_PAGE_DIR_GREFS + 1)))
    assert bytes(full)[-4:] == struct.pack("<I", XENSND_PAGE_DIR_GREFS)


# --- shared-buffer payloads ------------------------------------------------------------------

def test_volume_payload() -> None:
    raw = bytes(VolumePayload(channel=[-3000, 0, 1500]))
    assert raw == struct.pack("<iii", -3000, 0, 1500)
    again = VolumePayload(raw + b"\x01")
    assert again.channel == [-3000, 0, 1500]
    assert isinstance(again.payload, Raw)
    assert "-3.000 dB" in again.show(dump=True)


def test_mute_payload_u8_and_the_four_octet_variant() -> None:
    assert bytes(MutePayload(channel=[1, 0])) == b"\x01\x00"
    assert MutePayload(b"\x00\x01\x01").channel == [0, 1, 1]
    assert bytes(MutePayload32(channel=[1, 0])) == struct.pack("<II", 1, 0)
    assert MutePayload32(struct.pack("<II", 0, 1)).channel == [0, 1]
