"""Field tables for fuzzing, derived from the compiled codecs (themselves derived from the
Scapy models): which fields each request operation has, their widths and maxima, which are
reserved, where ``gref_directory`` sits, and which operation, trigger and format values
sndif does not define. Nothing here restates a layout."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocol_models import codec
from protocol_models.codec import Codec, FieldSpec
from protocol_models.constants import Op, PcmFormat, Trigger

#: Header fields every request has: set by the driver, never fuzzed as body values.
HEADER_FIELDS = frozenset(f.name for f in codec.UNKNOWN_REQ.fields
                          if f.layer is codec.UNKNOWN_REQ.layers[0])


@dataclass(frozen=True)
class IntField:
    """An integer field of a request: its name and largest value."""

    name: str
    size: int
    maximum: int


def is_reserved(spec: FieldSpec) -> bool:
    """Reserved bytes (``reserved``, ``open_reserved``, ``reserved_tail``): named so by
    the models so that a fuzzer can set them."""
    return "reserved" in spec.name


def int_fields(c: Codec) -> tuple[IntField, ...]:
    """The integer body fields of a request codec, reserved ones excluded."""
    out = []
    for spec in c.fields:
        if spec.name in HEADER_FIELDS or spec.code.endswith("s") or is_reserved(spec):
            continue
        size = struct.calcsize("<" + spec.code)
        out.append(IntField(spec.name, size, (1 << (8 * size)) - 1))
    return tuple(out)


def reserved_fields(c: Codec) -> tuple[FieldSpec, ...]:
    return tuple(s for s in c.fields if is_reserved(s))


def field_offset(c: Codec, name: str) -> int:
    return next(s.offset for s in c.fields if s.name == name)


def field_size(c: Codec, name: str) -> int:
    return next(s.size for s in c.fields if s.name == name)


#: Per operation (every defined one): its integer fields and its reserved fields.
INT_FIELDS: dict[int, tuple[IntField, ...]] = {op: int_fields(c)
                                               for op, c in codec.REQ_CODECS.items()}
RESERVED_FIELDS: dict[int, tuple[FieldSpec, ...]] = {
    op: reserved_fields(c) for op, c in codec.REQ_CODECS.items()}
#: Where an OPEN carries its page directory (patched when a reproducer rebuilds buffers).
GREF_DIRECTORY_OFFSET = field_offset(codec.OPEN_REQ, "gref_directory")
GREF_DIRECTORY_SIZE = field_size(codec.OPEN_REQ, "gref_directory")
ID_OFFSET = field_offset(codec.UNKNOWN_REQ, "id")
OP_OFFSET = field_offset(codec.UNKNOWN_REQ, "operation")

_OP_MAX = (1 << (8 * field_size(codec.UNKNOWN_REQ, "operation"))) - 1
_TRIGGER_MAX = (1 << (8 * field_size(codec.TRIGGER_REQ, "type"))) - 1
_FORMAT_MAX = (1 << (8 * field_size(codec.OPEN_REQ, "pcm_format"))) - 1
UNKNOWN_OPS = tuple(v for v in range(_OP_MAX + 1) if v not in set(Op))
UNKNOWN_TRIGGERS = tuple(v for v in range(_TRIGGER_MAX + 1) if v not in set(Trigger))
UNKNOWN_FORMATS = tuple(v for v in range(_FORMAT_MAX + 1) if v not in set(PcmFormat))
ID_MAX = (1 << (8 * field_size(codec.UNKNOWN_REQ, "id"))) - 1


def request_id(raw: bytes) -> int:
    return int.from_bytes(raw[ID_OFFSET:ID_OFFSET + 2], "little")


def request_op(raw: bytes) -> int:
    return raw[OP_OFFSET]


def with_id(raw: bytes, rid: int) -> bytes:
    return raw[:ID_OFFSET] + (rid & ID_MAX).to_bytes(2, "little") + raw[ID_OFFSET + 2:]


def with_gref_directory(raw: bytes, gref: int) -> bytes:
    end = GREF_DIRECTORY_OFFSET + GREF_DIRECTORY_SIZE
    return raw[:GREF_DIRECTORY_OFFSET] + gref.to_bytes(GREF_DIRECTORY_SIZE, "little") \
        + raw[end:]
