"""The XenStore wire protocol (``io/xs_wire.h``): message header, types, errors, payloads.

``struct xsd_sockmsg`` is four host-endian u32 (little-endian on every platform the harness
runs on) followed by ``len`` payload bytes. The Scapy packet is for display and fuzzing; the
``HEADER`` struct is what servers and clients use on the hot path.
"""

from __future__ import annotations

import enum
import struct

from scapy.fields import LEIntEnumField, LEIntField, StrLenField
from scapy.packet import Packet

XENSTORE_PAYLOAD_MAX = 4096
XENSTORE_ABS_PATH_MAX = 3072
XENSTORE_REL_PATH_MAX = 2048
XENSTORE_RING_SIZE = 1024
HEADER = struct.Struct("<IIII")
HEADER_SIZE = HEADER.size


class XsType(enum.IntEnum):
    """``enum xsd_sockmsg_type`` (4.17), plus the newer 23-26 for completeness."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    RESTRICT = 20
    RESET_WATCHES = 21
    DIRECTORY_PART = 22
    GET_FEATURE = 23
    SET_FEATURE = 24
    GET_QUOTA = 25
    SET_QUOTA = 26
    INVALID = 0xFFFF


#: ``xsd_errors[]`` in order: the only error names that go on the wire.
XS_ERRORS: tuple[str, ...] = (
    "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
    "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM",
)


class XsError(Exception):
    """An ERROR reply (or a local refusal) carrying one of :data:`XS_ERRORS`."""

    def __init__(self, name: str, detail: str = "") -> None:
        if name not in XS_ERRORS:
            raise ValueError(f"{name!r} is not a XenStore error name")
        self.name = name
        self.detail = detail
        super().__init__(f"{name}: {detail}" if detail else name)


class XsdSockMsg(Packet):
    """``struct xsd_sockmsg`` + payload."""

    name = "xsd_sockmsg"
    fields_desc = [
        LEIntEnumField("type", 0, {int(t): t.name for t in XsType}),
        LEIntField("req_id", 0),
        LEIntField("tx_id", 0),
        LEIntField("len", None),
        StrLenField("payload_data", b"", length_from=lambda p: p.len),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.len is None:
            pkt = pkt[:12] + struct.pack("<I", len(pkt) - HEADER_SIZE) + pkt[16:]
        return pkt + pay

    def mysummary(self) -> str:
        return self.sprintf("XS %type% req=%req_id% tx=%tx_id% ") + repr(
            bytes(self.payload_data)[:60]
        )


def pack(type_: int, payload: bytes, req_id: int = 0, tx_id: int = 0) -> bytes:
    """One wire message (fast path; same bytes as ``bytes(XsdSockMsg(...))``)."""
    return HEADER.pack(int(type_), req_id, tx_id, len(payload)) + payload


def join(*parts: bytes | str, trailing: bool = True) -> bytes:
    """Nul-separate ``parts``: ``join("a", "b")`` -> ``b"a\\0b\\0"``."""
    raw = [p.encode() if isinstance(p, str) else p for p in parts]
    out = b"\0".join(raw)
    return out + b"\0" if trailing else out


def split(payload: bytes) -> list[bytes]:
    """Split a nul-separated payload; one trailing nul ends the list, it adds no element."""
    if not payload:
        return []
    if payload.endswith(b"\0"):
        payload = payload[:-1]
    return payload.split(b"\0")


def error_payload(name: str) -> bytes:
    if name not in XS_ERRORS:
        raise ValueError(f"{name!r} is not a XenStore error name")
    return name.encode() + b"\0"


def parse_error(payload: bytes) -> str:
    """The error name of an ERROR reply payload (unknown names come back as EINVAL, as
    libxenstore maps them)."""
    name = payload.split(b"\0", 1)[0].decode(errors="replace")
    return name if name in XS_ERRORS else "EINVAL"
