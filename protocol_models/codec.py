"""Fast codecs derived from the Scapy models of :mod:`protocol_models.sndif`.

Scapy is the source of truth but costs ~100 us per message; ring I/O, event parsing and
fuzzing need ~1 us. So, at import, every fixed-size message is compiled from its Packet
classes' ``fields_desc`` into a ``struct.Struct``, a NamedTuple record type and generated
``encode``/``decode`` functions. Nothing here restates a layout: change a model and the
codec follows (``tests/test_codec_agreement.py`` proves they agree byte for byte).

A field class without a struct mapping makes the import fail (``TypeError``), so a new
model field can never be silently mis-encoded.
"""

from __future__ import annotations

import keyword
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

from scapy.fields import (
    AnyField,
    ByteEnumField,
    ByteField,
    Field,
    FieldListField,
    LEIntField,
    LELongField,
    LEShortField,
    LESignedIntField,
    StrFixedLenField,
)
from scapy.packet import Packet

from protocol_models import sndif
from protocol_models.constants import XENSND_MSG_SIZE, Evt, Op

#: Scapy field class -> struct code; looked up along the field's MRO (most specific first).
_STRUCT_CODES: dict[type, str] = {
    ByteField: "B",
    ByteEnumField: "B",
    LEShortField: "H",
    LEIntField: "I",
    LESignedIntField: "i",
    LELongField: "Q",
    StrFixedLenField: "s",
}


class FieldSpec(NamedTuple):
    """One field of a flattened message: where it is and how it is packed."""

    name: str
    offset: int
    size: int
    code: str  # struct code, e.g. "I" or "5s"
    default: Any
    field: Any  # the Scapy field (for enum names, display, any2i)
    layer: type[Packet]


def struct_code(fld: AnyField) -> str:
    """The struct code of a Scapy field; ``TypeError`` for a field the codecs can't pack
    (a field container such as ``ConditionalField`` included)."""
    for klass in type(fld).__mro__ if isinstance(fld, Field) else ():
        code = _STRUCT_CODES.get(klass)
        if code is None:
            continue
        if code == "s" and isinstance(fld, StrFixedLenField):  # "s" is StrFixedLenField's
            # a fixed length ignores the packet, which Scapy's Callable[[Packet], int] omits
            return f"{fld.length_from(None)}s"  # type: ignore[arg-type]
        # Guard against a subclass that changes width or byte order under the same class.
        if fld.sz != struct.calcsize(code) or (fld.sz > 1 and not fld.fmt.startswith("<")):
            break
        return code
    raise TypeError(f"no struct mapping for field {fld.name!r} ({type(fld).__name__})")


def _default(fld: Field[Any, Any]) -> Any:
    value = fld.default
    return int(value) if isinstance(value, int) else value


class Codec:
    """A compiled fixed-size message: the fields of ``layers`` laid end to end.

    ``encode(**fields) -> bytes`` (missing fields take the model's default, reserved zero;
    enum names such as ``pcm_format="S16_LE"`` are accepted), ``encode_into(buf, offset,
    **fields)``, ``decode(buf, offset=0) -> record`` and ``pack_record(record) -> bytes``.
    """

    def __init__(self, name: str, layers: Sequence[type[Packet]], fields: Sequence[Any],
                 overrides: dict[str, Any] | None = None,
                 record: type[tuple[Any, ...]] | None = None,
                 record_name: str | None = None) -> None:
        self.name = name
        self.layers = tuple(layers)
        overrides = overrides or {}
        specs: list[FieldSpec] = []
        offset = 0
        for layer, fld in fields:
            code = struct_code(fld)
            size = struct.calcsize("<" + code)
            default = overrides.get(fld.name, _default(fld))
            specs.append(FieldSpec(fld.name, offset, size, code, default, fld, layer))
            offset += size
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise TypeError(f"{name}: duplicate field names in {names}")
        for n in names:
            if not n.isidentifier() or keyword.iskeyword(n):
                raise TypeError(f"{name}: field name {n!r} is not a Python identifier")
        self.fields: tuple[FieldSpec, ...] = tuple(specs)
        self.names: tuple[str, ...] = tuple(names)
        self.defaults: dict[str, Any] = {s.name: s.default for s in specs}
        self.struct = struct.Struct("<" + "".join(s.code for s in specs))
        self.size = self.struct.size
        # The functional NamedTuple call makes a class; typeshed types it as an instance.
        self.record: type[Any] = record or cast("type[tuple[Any, ...]]", NamedTuple(
            record_name or layers[-1].__name__ + "Record",
            [(s.name, bytes if s.code.endswith("s") else int) for s in specs]))
        self.encode: Callable[..., bytes]
        self.encode_into: Callable[..., None]
        self.encode, self.encode_into = self._compile_encoders()
        self.decode: Callable[..., Any] = self._compile_decoder()

    def _compile_encoders(self) -> tuple[Callable[..., bytes], Callable[..., None]]:
        # Generated so the hot path is one call with keyword defaults: no dict walking.
        params = ", ".join(f"{n}=_d[{i}]" for i, n in enumerate(self.names))
        args = ", ".join(self.names)
        kwargs = ", ".join(f"{n}={n}" for n in self.names)
        src = (
            f"def encode(*, {params}):\n"
            f"    try:\n"
            f"        return _pack({args})\n"
            f"    except _error:\n"
            f"        return _pack(*_coerce(dict({kwargs})))\n"
            f"def encode_into(_buf, _offset, *, {params}):\n"
            f"    try:\n"
            f"        _pack_into(_buf, _offset, {args})\n"
            f"    except _error:\n"
            f"        _pack_into(_buf, _offset, *_coerce(dict({kwargs})))\n"
        )
        namespace: dict[str, Any] = {
            "_d": tuple(s.default for s in self.fields),
            "_pack": self.struct.pack,
            "_pack_into": self.struct.pack_into,
            "_error": struct.error,
            "_coerce": self._coerce,
        }
        exec(compile(src, f"<codec {self.name}>", "exec"), namespace)
        return namespace["encode"], namespace["encode_into"]

    def _compile_decoder(self) -> Callable[..., Any]:
        unpack_from = self.struct.unpack_from
        new = tuple.__new__
        record = self.record

        def decode(buf: Any, offset: int = 0) -> Any:
            return new(record, unpack_from(buf, offset))

        decode.__qualname__ = decode.__name__ = f"decode_{self.name}"
        return decode

    def _coerce(self, values: dict[str, Any]) -> list[Any]:
        """Slow path: convert names (``"S16_LE"``, ``"-EINVAL"``) with the model's own
        ``any2i``, then say which field does not fit instead of a bare struct.error."""
        out = []
        for spec in self.fields:
            value = values[spec.name]
            try:
                value = spec.field.any2i(None, value)
                struct.pack("<" + spec.code, value)
            except (struct.error, KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"{self.name}: {spec.name}={value!r} does not fit "
                                 f"{spec.code!r}: {exc}") from None
            out.append(value)
        return out

    def pack_record(self, record: Sequence[Any]) -> bytes:
        """Bytes of a decoded record (or any sequence in field order)."""
        return self.struct.pack(*record)

    def scapy(self, **fields: Any) -> Packet:
        """The equivalent Scapy packet (for display; slow)."""
        pkt: Packet | None = None
        for layer in self.layers:
            own = {f.name: fields.get(f.name, self.defaults[f.name])
                   for f in layer.fields_desc if f.name in self.defaults}
            part = layer(**own)
            pkt = part if pkt is None else pkt / part
        assert pkt is not None
        return pkt

    def __repr__(self) -> str:
        return f"<Codec {self.name} {self.size} bytes {self.struct.format!r}>"


def _message_codec(name: str, header: type[Packet], body: type[Packet],
                   records: dict[tuple[type[Packet], ...], type[Any]],
                   **overrides: Any) -> Codec:
    fields = [(header, f) for f in header.fields_desc] + [(body, f) for f in body.fields_desc]
    codec = Codec(name, (header, body), fields, overrides, records.get((header, body)))
    records.setdefault((header, body), codec.record)
    if codec.size != XENSND_MSG_SIZE:
        raise TypeError(f"{name}: {codec.size} bytes, every sndif message is "
                        f"{XENSND_MSG_SIZE}")
    return codec


def _leading_codec(name: str, record_name: str, cls: type[Packet], upto: str) -> Codec:
    """The fixed fields of ``cls`` before the field ``upto`` (a page's header)."""
    fields = []
    for f in cls.fields_desc:
        if f.name == upto:
            break
        fields.append((cls, f))
    else:
        raise TypeError(f"{cls.__name__} has no field {upto!r}")
    return Codec(name, (cls,), fields, record_name=record_name)


#: Operation / event type used by default for the unknown-kind codecs.
UNKNOWN_CODE = 0xFF


def _build() -> tuple[dict[int, Codec], Codec, Codec, Codec, Codec, Codec]:
    records: dict[tuple[type[Packet], ...], type[Any]] = {}
    reqs = {
        int(op): _message_codec(f"{op.name.lower()}_req", sndif.XenSndReq, body, records,
                                operation=int(op))
        for op, body in sndif.REQ_BODIES.items()
    }
    # The catch-all codecs default to a value no body is bound to, so that their bytes
    # dissect back to the same (reserved) body.
    unknown = _message_codec("unknown_req", sndif.XenSndReq, sndif.ReqReserved, records,
                             operation=UNKNOWN_CODE)
    resp = _message_codec("resp", sndif.XenSndResp, sndif.RespReserved, records)
    hw_resp = _message_codec("hw_param_resp", sndif.XenSndResp, sndif.HwParamResp, records,
                             operation=int(Op.HW_PARAM_QUERY))
    evt = _message_codec("evt", sndif.XenSndEvt, sndif.EvtReserved, records,
                         type=UNKNOWN_CODE)
    cur_pos = _message_codec("cur_pos_evt", sndif.XenSndEvt, sndif.CurPosEvt, records,
                             type=int(Evt.CUR_POS))
    return reqs, unknown, resp, hw_resp, evt, cur_pos


REQ_CODECS, UNKNOWN_REQ, RESP, HW_PARAM_RESP, EVT, CUR_POS_EVT = _build()
OPEN_REQ = REQ_CODECS[Op.OPEN]
CLOSE_REQ = REQ_CODECS[Op.CLOSE]
READ_REQ = REQ_CODECS[Op.READ]
WRITE_REQ = REQ_CODECS[Op.WRITE]
SET_VOLUME_REQ = REQ_CODECS[Op.SET_VOLUME]
GET_VOLUME_REQ = REQ_CODECS[Op.GET_VOLUME]
MUTE_REQ = REQ_CODECS[Op.MUTE]
UNMUTE_REQ = REQ_CODECS[Op.UNMUTE]
TRIGGER_REQ = REQ_CODECS[Op.TRIGGER]
HW_PARAM_REQ = REQ_CODECS[Op.HW_PARAM_QUERY]

RING_HEADER = _leading_codec("ring_header", "RingHeaderRecord", sndif.SndRingPage, "ring")
EVENT_PAGE_HEADER = _leading_codec("event_page_header", "EventPageHeaderRecord",
                                   sndif.SndEventPage, "events")
PAGE_DIR_HEADER = _leading_codec("page_dir_header", "PageDirHeaderRecord",
                                 sndif.PageDirectory, "gref")

#: Every compiled codec by name.
CODECS: dict[str, Codec] = {
    c.name: c for c in (*REQ_CODECS.values(), UNKNOWN_REQ, RESP, HW_PARAM_RESP, EVT,
                        CUR_POS_EVT, RING_HEADER, EVENT_PAGE_HEADER, PAGE_DIR_HEADER)
}

# Byte offsets of the dispatching field, from the models.
_OP_OFFSET = next(s.offset for s in UNKNOWN_REQ.fields if s.name == "operation")
_RESP_OP_OFFSET = next(s.offset for s in RESP.fields if s.name == "operation")
_EVT_TYPE_OFFSET = next(s.offset for s in EVT.fields if s.name == "type")

# 256-entry tables indexed by the u8 operation/type: one list lookup per message.
_REQ_DECODERS = [REQ_CODECS.get(i, UNKNOWN_REQ).decode for i in range(256)]
_RESP_DECODERS = [RESP.decode] * 256
_RESP_DECODERS[Op.HW_PARAM_QUERY] = HW_PARAM_RESP.decode
_EVT_DECODERS = [EVT.decode] * 256
_EVT_DECODERS[Evt.CUR_POS] = CUR_POS_EVT.decode


def decode_req(buf: Any, offset: int = 0) -> Any:
    """Decode the 64-byte request at ``buf[offset:]`` into its operation's record."""
    return _REQ_DECODERS[buf[offset + _OP_OFFSET]](buf, offset)


def decode_resp(buf: Any, offset: int = 0) -> Any:
    """Decode a 64-byte response (``HwParamRespRecord`` for HW_PARAM_QUERY)."""
    return _RESP_DECODERS[buf[offset + _RESP_OP_OFFSET]](buf, offset)


def decode_evt(buf: Any, offset: int = 0) -> Any:
    """Decode a 64-byte event (``CurPosEvtRecord`` for CUR_POS)."""
    return _EVT_DECODERS[buf[offset + _EVT_TYPE_OFFSET]](buf, offset)


def req_codec(operation: int) -> Codec:
    """The request codec of ``operation`` (``UNKNOWN_REQ`` for unknown values)."""
    return REQ_CODECS.get(operation, UNKNOWN_REQ)


def encode_req(operation: Op | int | str, **fields: Any) -> bytes:
    """Encode a request of ``operation`` (enum, value or name)."""
    op = Op[operation] if isinstance(operation, str) else int(operation)
    return req_codec(op).encode(operation=op, **fields)


def encode_resp(**fields: Any) -> bytes:
    """Encode a response; HW_PARAM_QUERY responses carry the hw_param fields."""
    op = fields.get("operation", RESP.defaults["operation"])
    if isinstance(op, str):
        op = Op[op]
    return (HW_PARAM_RESP if op == Op.HW_PARAM_QUERY else RESP).encode(**fields)


# --- page directory --------------------------------------------------------------------------

def _gref_list_field() -> sndif.TrimmedListField:
    fld = next(f for f in sndif.PageDirectory.fields_desc if f.name == "gref")
    if not isinstance(fld, sndif.TrimmedListField):
        raise TypeError(f"PageDirectory.gref is a {type(fld).__name__}, not a fixed-size list")
    return fld


_GREF_FIELD = _gref_list_field()
PAGE_DIR_GREFS: int = _GREF_FIELD.count
_PAGE_DIR = struct.Struct(
    "<" + PAGE_DIR_HEADER.struct.format.lstrip("<") + f"{PAGE_DIR_GREFS}"
    + struct_code(_GREF_FIELD.field))
PAGE_DIR_SIZE: int = _PAGE_DIR.size


def encode_page_directory(gref_dir_next_page: int, grefs: Sequence[int]) -> bytes:
    """One page-directory page; unused gref entries are zero."""
    if len(grefs) > PAGE_DIR_GREFS:
        raise ValueError(f"{len(grefs)} grefs do not fit one directory page "
                         f"({PAGE_DIR_GREFS})")
    return _PAGE_DIR.pack(gref_dir_next_page, *grefs, *([0] * (PAGE_DIR_GREFS - len(grefs))))


def decode_page_directory(buf: Any, offset: int = 0,
                          count: int | None = None) -> tuple[int, tuple[int, ...]]:
    """``(gref_dir_next_page, grefs)``; ``count`` keeps only the first ``count`` grefs (the
    page does not say how many are used: ``ceil(buffer_sz / 4096)`` in total)."""
    values = _PAGE_DIR.unpack_from(buf, offset)
    grefs = values[1:] if count is None else values[1:1 + count]
    return values[0], grefs


# --- layouts for display and cross-checks ----------------------------------------------------

class LayoutEntry(NamedTuple):
    name: str
    offset: int
    size: int | None  # None: variable length
    type_name: str
    default: Any


def layout(cls: type[Packet], base: int = 0) -> list[LayoutEntry]:
    """Offsets and sizes of every field of ``cls`` (lists included), from ``base``."""
    entries = []
    offset: int | None = base
    for fld in cls.fields_desc:
        size: int | None
        if isinstance(fld, sndif.SlotListField):
            size = fld.count * fld.slot_size
        elif isinstance(fld, sndif.TrimmedListField):
            size = fld.count * struct.calcsize("<" + struct_code(fld.field))
        elif isinstance(fld, FieldListField):
            size = None
        else:
            size = struct.calcsize("<" + struct_code(fld))
        entries.append(LayoutEntry(fld.name, offset if offset is not None else -1, size,
                                   type(fld).__name__, fld.default))
        offset = None if offset is None or size is None else offset + size
    return entries
