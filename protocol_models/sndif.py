"""Scapy models of every structure of Xen's ``io/sndif.h`` (clauses.md section 2).

These classes are the single source of truth for the sndif layouts: the fast codecs
(:mod:`protocol_models.codec`), the fuzz strategies and the CLI dissector are derived from
their ``fields_desc``. All multi-byte fields are little-endian.

* Requests: :class:`XenSndReq` (8-byte header) / one body of 56 bytes chosen by
  ``operation`` (:class:`OpenReq`, :class:`CloseReq`, :class:`RwReq`, :class:`TriggerReq`,
  :class:`HwParamReq`; unknown operations dissect to :class:`ReqReserved`).
* Responses: :class:`XenSndResp` / :class:`HwParamResp` (HW_PARAM_QUERY) or
  :class:`RespReserved`.
* Events: :class:`XenSndEvt` / :class:`CurPosEvt` (CUR_POS) or :class:`EvtReserved`.
* Shared pages: :class:`SndRingPage` (``struct xen_sndif_sring`` of one page),
  :class:`SndEventPage` (``struct xensnd_event_page`` + the event ring),
  :class:`PageDirectory` (``struct xensnd_page_directory``).
* Shared-buffer payloads: :class:`VolumePayload`, :class:`MutePayload` (AMBIG-9, see there).

Reserved fields are explicit named fields so that a fuzzer can set them. Field names are
unique across a header and its bodies (the codecs flatten them into one record): the C
``op.open.reserved`` is ``open_reserved`` and the unused rest of every union is
``reserved_tail``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scapy.fields import (
    ByteEnumField,
    ByteField,
    FieldListField,
    LEIntField,
    LELongField,
    LEShortField,
    LESignedIntField,
    PacketListField,
    XStrFixedLenField,
)
from scapy.packet import Packet, bind_bottom_up, bind_layers, bind_top_down

from protocol_models.constants import (
    XEN_PAGE_SIZE,
    XENSND_IN_RING_LEN,
    XENSND_IN_RING_OFFS,
    XENSND_MSG_SIZE,
    XENSND_PAGE_DIR_GREFS,
    XENSND_RING_SIZE,
    Evt,
    Op,
    PcmFormat,
    Trigger,
    pcm_format,
    status_name,
    status_value,
)

#: Size of the header shared by requests, responses and events, and of the body union.
HEADER_SIZE = 8
BODY_SIZE = XENSND_MSG_SIZE - HEADER_SIZE
#: Ring page header (``struct xen_sndif_sring`` up to ``ring[]``) and its slot array.
RING_HEADER_SIZE = 64
RING_UNUSED_SIZE = XEN_PAGE_SIZE - RING_HEADER_SIZE - XENSND_RING_SIZE * XENSND_MSG_SIZE

#: The operations whose body is ``struct xensnd_rw_req``.
RW_OPS = (Op.READ, Op.WRITE, Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE)


# --- fields with a friendlier display -------------------------------------------------------

class StatusField(LESignedIntField):
    """``int32_t status``: shown as ``OK`` / ``-EINVAL``; accepts those names when building."""

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        if isinstance(x, str):
            return status_value(x)
        return super().any2i(pkt, x)

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        if isinstance(x, int):
            name = status_name(x)
            return name if x == 0 or name == str(x) else f"{name} ({x})"
        return super().i2repr(pkt, x)


class PcmFormatMaskField(LELongField):
    """``uint64_t formats`` of HW_PARAM_QUERY: bit ``1 << XENSND_PCM_FORMAT_*``.

    Accepts an int or an iterable of formats (enums, values or names) when building.
    """

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        if isinstance(x, str):
            x = [s for s in x.replace("+", "|").split("|") if s]
        if isinstance(x, Iterable) and not isinstance(x, bytes | bytearray):
            return sum(1 << pcm_format(f) for f in set(map(pcm_format, x)))
        return super().any2i(pkt, x)

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        if not isinstance(x, int):
            return super().i2repr(pkt, x)
        names = [f.name for f in PcmFormat if x >> f & 1]
        unknown = x & ~sum(f.mask for f in PcmFormat)
        if unknown:
            names.append(hex(unknown))
        return f"{x:#x} ({'|'.join(names) or 'none'})"


class VolumeField(LESignedIntField):
    """One channel's volume in 0.001 dB (0 = 0 dB)."""

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        if isinstance(x, int):
            return f"{x} ({x / 1000:+.3f} dB)"
        return super().i2repr(pkt, x)


class TrimmedListField(FieldListField):
    """A fixed-size array of ``count`` elements: short lists are zero-filled when built,
    and the display drops the trailing zero entries (a page directory is mostly zeros)."""

    __slots__ = ("count",)

    def __init__(self, name: str, field: Any, count: int) -> None:
        self.count = count
        super().__init__(name, [], field, count_from=lambda pkt: count, max_count=count)

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:
        val = list(val or [])[: self.count]
        val += [0] * (self.count - len(val))
        return super().addfield(pkt, s, val)

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        values = list(x or [])
        end = len(values)
        while end and values[end - 1] == 0:
            end -= 1
        shown = ", ".join(self.field.i2repr(pkt, v) for v in values[:end])
        zeros = self.count - end
        return f"[{shown}]" + (f" + {zeros} x 0" if zeros else "")


class SlotListField(PacketListField):
    """``count`` fixed-size ring slots. Building pads every slot (and missing slots) with
    zeros so the page keeps its layout; ``next_cls_cb`` picks each slot's class."""

    __slots__ = ("count", "slot_size")

    def __init__(self, name: str, count: int, slot_size: int, next_cls_cb: Any,
                 pkt_cls: Any) -> None:
        self.count = count
        self.slot_size = slot_size
        super().__init__(name, [], pkt_cls, next_cls_cb=next_cls_cb, max_count=count)

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:
        out = bytearray()
        for p in list(val or [])[: self.count]:
            raw = bytes(p)[: self.slot_size]
            out += raw + bytes(self.slot_size - len(raw))
        out += bytes(self.count * self.slot_size - len(out))
        return s + bytes(out)


def _reserved(name: str, size: int) -> XStrFixedLenField:
    return XStrFixedLenField(name, b"\x00" * size, length=size)


class _Body(Packet):
    """A 56-byte union member: nothing follows it, extra bytes are padding (so that a list
    of messages, e.g. ring slots, dissects slot by slot)."""

    show_summary = False

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def body_summary(self) -> str:
        return ""

    # Scapy annotates mysummary as -> str, but documents and handles (text, [layers]).
    def mysummary(self) -> tuple[str, list[type[Packet]]]:  # type: ignore[override]
        # Ask the header for its summary too: "sndif req id=7 OPEN / rate=48000 ...".
        text = self.body_summary()
        if any(self.getfieldval("reserved_tail") or b""):
            text += " reserved_tail!=0"
        return text.strip(), [XenSndReq, XenSndResp, XenSndEvt]


class _Header(Packet):
    """A 64-byte message header: a header alone is padded to 64 bytes with zeros."""

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        out = pkt + pay
        if len(out) < XENSND_MSG_SIZE:
            out += bytes(XENSND_MSG_SIZE - len(out))
        return out


# --- requests --------------------------------------------------------------------------------

class XenSndReq(_Header):
    """``struct xensnd_req`` header: id, operation, reserved[5]; the body follows."""

    name = "xensnd_req"
    fields_desc = [
        LEShortField("id", 0),
        ByteEnumField("operation", Op.OPEN, Op),
        _reserved("reserved", 5),
    ]

    def default_payload_class(self, payload: bytes) -> type[Packet]:
        return ReqReserved

    def mysummary(self) -> str:
        return self.sprintf("sndif req id=%id% %operation%")


class OpenReq(_Body):
    """``struct xensnd_open_req`` (XENSND_OP_OPEN)."""

    name = "open"
    fields_desc = [
        LEIntField("pcm_rate", 0),
        ByteEnumField("pcm_format", PcmFormat.S8, PcmFormat),
        ByteField("pcm_channels", 0),
        LEShortField("open_reserved", 0),
        LEIntField("buffer_sz", 0),
        LEIntField("gref_directory", 0),
        LEIntField("period_sz", 0),
        _reserved("reserved_tail", BODY_SIZE - 20),
    ]

    def body_summary(self) -> str:
        return self.sprintf("rate=%pcm_rate% %pcm_format% ch=%pcm_channels% "
                            "buf=%buffer_sz% period=%period_sz% dir=%gref_directory%")


class CloseReq(_Body):
    """XENSND_OP_CLOSE: no payload, the whole union is reserved."""

    name = "close"
    fields_desc = [_reserved("reserved_tail", BODY_SIZE)]


class RwReq(_Body):
    """``struct xensnd_rw_req``: READ, WRITE, SET_VOLUME, GET_VOLUME, MUTE, UNMUTE."""

    name = "rw"
    fields_desc = [
        LEIntField("offset", 0),
        LEIntField("length", 0),
        _reserved("reserved_tail", BODY_SIZE - 8),
    ]

    def body_summary(self) -> str:
        return self.sprintf("offset=%offset% length=%length%")


class TriggerReq(_Body):
    """``struct xensnd_trigger_req`` (XENSND_OP_TRIGGER)."""

    name = "trigger"
    fields_desc = [
        ByteEnumField("type", Trigger.START, Trigger),
        _reserved("reserved_tail", BODY_SIZE - 1),
    ]

    def body_summary(self) -> str:
        return self.sprintf("%type%")


def _hw_param_fields() -> list[Any]:
    """``struct xensnd_query_hw_param`` (40 bytes) + the rest of the union."""
    fields: list[Any] = [PcmFormatMaskField("formats", 0)]
    for group in ("rates", "channels", "buffer", "period"):
        fields += [LEIntField(f"{group}_min", 0), LEIntField(f"{group}_max", 0)]
    return [*fields, _reserved("reserved_tail", BODY_SIZE - 40)]


def _hw_param_summary(pkt: Packet) -> str:
    return pkt.sprintf("formats=%formats% rates=%rates_min%..%rates_max% "
                       "ch=%channels_min%..%channels_max% buf=%buffer_min%..%buffer_max% "
                       "period=%period_min%..%period_max%")


class HwParamReq(_Body):
    """``struct xensnd_query_hw_param`` in a request (XENSND_OP_HW_PARAM_QUERY)."""

    name = "hw_param"
    fields_desc = _hw_param_fields()

    def body_summary(self) -> str:
        return _hw_param_summary(self)


class ReqReserved(_Body):
    """Body of a request with an unknown operation: 56 opaque bytes."""

    name = "req_reserved"
    fields_desc = [_reserved("reserved_tail", BODY_SIZE)]


# --- responses -------------------------------------------------------------------------------

class XenSndResp(_Header):
    """``struct xensnd_resp`` header: id and operation (echoed), reserved, status."""

    name = "xensnd_resp"
    fields_desc = [
        LEShortField("id", 0),
        ByteEnumField("operation", Op.OPEN, Op),
        ByteField("reserved", 0),
        StatusField("status", 0),
    ]

    def default_payload_class(self, payload: bytes) -> type[Packet]:
        return RespReserved

    def mysummary(self) -> str:
        return self.sprintf("sndif resp id=%id% %operation% status=%status%")


class HwParamResp(_Body):
    """``resp.hw_param``: the backend's answer to HW_PARAM_QUERY (same layout)."""

    name = "hw_param"
    fields_desc = _hw_param_fields()

    def body_summary(self) -> str:
        return _hw_param_summary(self)


class RespReserved(_Body):
    """``resp.reserved1[56]``: the body of every response but HW_PARAM_QUERY."""

    name = "resp_reserved"
    fields_desc = [_reserved("reserved_tail", BODY_SIZE)]


# --- events ----------------------------------------------------------------------------------

class XenSndEvt(_Header):
    """``struct xensnd_evt`` header: id, type, reserved[5]."""

    name = "xensnd_evt"
    fields_desc = [
        LEShortField("id", 0),
        ByteEnumField("type", Evt.CUR_POS, Evt),
        _reserved("reserved", 5),
    ]

    def default_payload_class(self, payload: bytes) -> type[Packet]:
        return EvtReserved

    def mysummary(self) -> str:
        return self.sprintf("sndif evt id=%id% %type%")


class CurPosEvt(_Body):
    """``struct xensnd_cur_pos_evt``: stream position in octets."""

    name = "cur_pos"
    fields_desc = [
        LELongField("position", 0),
        _reserved("reserved_tail", BODY_SIZE - 8),
    ]

    def body_summary(self) -> str:
        return self.sprintf("position=%position%")


class EvtReserved(_Body):
    """Body of an event with an unknown type: 56 opaque bytes."""

    name = "evt_reserved"
    fields_desc = [_reserved("reserved_tail", BODY_SIZE)]


bind_layers(XenSndReq, OpenReq, operation=Op.OPEN)
bind_layers(XenSndReq, CloseReq, operation=Op.CLOSE)
for _op in RW_OPS:
    bind_bottom_up(XenSndReq, RwReq, operation=_op)
# ``XenSndReq()/RwReq()`` means WRITE unless the operation is given.
bind_top_down(XenSndReq, RwReq, operation=Op.WRITE)
bind_layers(XenSndReq, TriggerReq, operation=Op.TRIGGER)
bind_layers(XenSndReq, HwParamReq, operation=Op.HW_PARAM_QUERY)
bind_layers(XenSndResp, HwParamResp, operation=Op.HW_PARAM_QUERY)
bind_layers(XenSndEvt, CurPosEvt, type=Evt.CUR_POS)

#: Request body class per operation (unknown operations: :class:`ReqReserved`).
REQ_BODIES: dict[Op, type[Packet]] = {
    Op.OPEN: OpenReq, Op.CLOSE: CloseReq, **dict.fromkeys(RW_OPS, RwReq),
    Op.TRIGGER: TriggerReq, Op.HW_PARAM_QUERY: HwParamReq,
}


# --- shared pages ----------------------------------------------------------------------------

def _ring_slot_class(pkt: Packet, lst: list[Packet], cur: Packet | None,
                     remain: bytes) -> type[Packet] | None:
    """Whether ring slot k holds a request or a response follows from the indices: the
    ``req_prod - rsp_prod`` most recently produced requests are unanswered and still in
    their slots; every other slot was last written with a response. An inconsistent
    distance (more than the ring holds) shows all slots as requests."""
    k = 0 if cur is None else len(lst) + 1
    if k >= XENSND_RING_SIZE:
        return None
    req_prod = pkt.getfieldval("req_prod") or 0
    unanswered = (req_prod - (pkt.getfieldval("rsp_prod") or 0)) & 0xFFFFFFFF
    back = (req_prod - 1 - k) % XENSND_RING_SIZE
    if unanswered > XENSND_RING_SIZE or back < unanswered:
        return XenSndReq
    return XenSndResp


def _event_slot_class(pkt: Packet, lst: list[Packet], cur: Packet | None,
                      remain: bytes) -> type[Packet] | None:
    k = 0 if cur is None else len(lst) + 1
    return XenSndEvt if k < XENSND_IN_RING_LEN else None


class SndRingPage(Packet):
    """One request ring page: ``struct xen_sndif_sring`` with 32 slots of 64 bytes.

    ``ring`` holds ``XenSndReq`` or ``XenSndResp`` per slot, inferred from the indices (see
    :func:`_ring_slot_class`); ``unused`` is the rest of the 4096-byte page.
    """

    name = "xen_sndif_sring"
    fields_desc = [
        LEIntField("req_prod", 0),
        LEIntField("req_event", 1),
        LEIntField("rsp_prod", 0),
        LEIntField("rsp_event", 1),
        _reserved("pvt", 4),
        _reserved("pad", 44),
        SlotListField("ring", XENSND_RING_SIZE, XENSND_MSG_SIZE, _ring_slot_class, XenSndReq),
        _reserved("unused", RING_UNUSED_SIZE),
    ]

    def mysummary(self) -> str:
        return self.sprintf("sndif ring req_prod=%req_prod% req_event=%req_event% "
                            "rsp_prod=%rsp_prod% rsp_event=%rsp_event%")


class SndEventPage(Packet):
    """``struct xensnd_event_page`` followed by XENSND_IN_RING_LEN (63) event slots."""

    name = "xensnd_event_page"
    fields_desc = [
        LEIntField("in_cons", 0),
        LEIntField("in_prod", 0),
        _reserved("reserved", XENSND_IN_RING_OFFS - 8),
        SlotListField("events", XENSND_IN_RING_LEN, XENSND_MSG_SIZE, _event_slot_class,
                      XenSndEvt),
    ]

    def mysummary(self) -> str:
        return self.sprintf("sndif event page in_cons=%in_cons% in_prod=%in_prod%")


class PageDirectory(Packet):
    """``struct xensnd_page_directory`` filling one page: next-page gref + 1023 grefs.

    The number of used grefs is not on the wire (it is ``ceil(buffer_sz / 4096)``); unused
    entries are zero.
    """

    name = "xensnd_page_directory"
    fields_desc = [
        LEIntField("gref_dir_next_page", 0),
        TrimmedListField("gref", LEIntField("", 0), XENSND_PAGE_DIR_GREFS),
    ]

    def mysummary(self) -> str:
        used = sum(1 for g in self.gref if g)
        return f"sndif page dir next={self.gref_dir_next_page} grefs={used}"


# --- shared-buffer payloads ------------------------------------------------------------------

#: pcm_channels is a u8, but a fuzzer may hand over a whole page of payload.
_MAX_CHANNELS = XEN_PAGE_SIZE


def _dissect_whole_items(pkt: Packet, s: bytes, size: int) -> bytes:
    """Dissect a list of ``size``-byte items; a partial trailing item is left as payload
    rather than making the dissection fail."""
    whole = len(s) // size * size
    return Packet.do_dissect(pkt, s[:whole]) + s[whole:]


class VolumePayload(Packet):
    """SET_VOLUME / GET_VOLUME: ``channel[i]`` s32 in 0.001 dB, one per pcm_channels."""

    name = "xensnd_volume"
    fields_desc = [
        FieldListField("channel", [], VolumeField("", 0), max_count=_MAX_CHANNELS),
    ]

    def do_dissect(self, s: bytes) -> bytes:
        return _dissect_whole_items(self, s, 4)

    def mysummary(self) -> str:
        return f"volume {list(self.channel)}"


class MutePayload(Packet):
    """MUTE / UNMUTE: ``channel[i]`` flag, non-zero = applies to channel i.

    AMBIG-9: sndif.h's text says ``uint8_t`` per channel (this class), its drawing shows
    4-octet rows; :class:`MutePayload32` is that variant.
    """

    name = "xensnd_mute"
    fields_desc = [
        FieldListField("channel", [], ByteField("", 0), max_count=_MAX_CHANNELS),
    ]

    def mysummary(self) -> str:
        return f"mute {list(self.channel)}"


class MutePayload32(Packet):
    """The 4-octet-per-channel reading of MUTE / UNMUTE (AMBIG-9, sndif.h's drawing)."""

    name = "xensnd_mute32"
    fields_desc = [
        FieldListField("channel", [], LEIntField("", 0), max_count=_MAX_CHANNELS),
    ]

    def do_dissect(self, s: bytes) -> bytes:
        return _dissect_whole_items(self, s, 4)

    def mysummary(self) -> str:
        return f"mute32 {list(self.channel)}"


#: Every model class, in the order of sndif.h (used by ``ls`` and the header check).
MESSAGE_CLASSES: tuple[type[Packet], ...] = (
    XenSndReq, OpenReq, CloseReq, RwReq, TriggerReq, HwParamReq, ReqReserved,
    XenSndResp, HwParamResp, RespReserved,
    XenSndEvt, CurPosEvt, EvtReserved,
    SndRingPage, SndEventPage, PageDirectory,
    VolumePayload, MutePayload, MutePayload32,
)
#: The 56-byte bodies (their fields sit at offset HEADER_SIZE of a message).
BODY_CLASSES: tuple[type[Packet], ...] = tuple(
    c for c in MESSAGE_CLASSES if issubclass(c, _Body))
