"""Trace records as capture packets: our pseudo-header, then the message bytes.

The pseudo-header (12 octets, little-endian like sndif itself)::

    0  u8   version        1
    1  u8   kind           Kind: 1 req, 2 resp, 3 evt, 4 xenstore, 5 watch, 6 violation
    2  u8   direction      Direction: 0 frontend->backend, 1 backend->frontend,
                           2 domain->xenstored, 3 xenstored->domain, 255 none
    3  u8   reserved       0
    4  u16  domid          the domain that recorded it (0xffff: unknown)
    6  u8   pcm            pcm index of the stream path "<pcm>/<stream>" (0xff: none)
    7  u8   stream         stream index within the pcm (0xff: none)
    8  u16  channel        the stream's index in the card, as the frontend numbers it
                           (0xffff: none)
    10 u16  length         octets that follow (the 64-byte message, or UTF-8 text)

It travels as link type DLT_USER0 (147): Wireshark hands such packets to whatever
dissector claims ``wtap_encap`` USER0, which the generated Lua dissector does.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from harness.trace import TraceRecord

#: pcap/pcapng link type DLT_USER0: "private use", no registry entry needed.
LINKTYPE = 147
VERSION = 1
HEADER = struct.Struct("<BBBBHBBHH")
NONE8, NONE16 = 0xFF, 0xFFFF
#: Text payloads (a XenStore value may be large) are cut to fit the u16 length.
_MAX_TEXT = 4096


class Kind(enum.IntEnum):
    REQ = 1
    RESP = 2
    EVT = 3
    XENSTORE = 4
    WATCH = 5
    VIOLATION = 6


class Direction(enum.IntEnum):
    FRONT_TO_BACK = 0
    BACK_TO_FRONT = 1
    TO_XENSTORE = 2
    FROM_XENSTORE = 3
    NONE = 255


_MESSAGE_KINDS = {"req": (Kind.REQ, Direction.FRONT_TO_BACK),
                  "resp": (Kind.RESP, Direction.BACK_TO_FRONT),
                  "evt": (Kind.EVT, Direction.BACK_TO_FRONT)}


@dataclass(frozen=True)
class CapturePacket:
    t_ns: int
    kind: Kind
    direction: Direction
    domid: int | None
    path: str | None  # "<pcm>/<stream>"
    channel: int | None
    payload: bytes

    def to_bytes(self) -> bytes:
        pcm, stream = _split_path(self.path)
        return HEADER.pack(VERSION, self.kind, self.direction, 0,
                           NONE16 if self.domid is None else self.domid,
                           NONE8 if pcm is None else pcm,
                           NONE8 if stream is None else stream,
                           NONE16 if self.channel is None else self.channel,
                           len(self.payload)) + self.payload

    @classmethod
    def from_bytes(cls, data: bytes, t_ns: int = 0) -> CapturePacket:
        (_, kind, direction, _, domid, pcm, stream, channel,
         length) = HEADER.unpack_from(data)
        path = None if NONE8 in (pcm, stream) else f"{pcm}/{stream}"
        return cls(t_ns, Kind(kind), Direction(direction),
                   None if domid == NONE16 else domid, path,
                   None if channel == NONE16 else channel,
                   bytes(data[HEADER.size:HEADER.size + length]))


def _split_path(path: str | None) -> tuple[int | None, int | None]:
    if path is None:
        return None, None
    try:
        pcm, stream = (int(p) for p in path.split("/"))
    except ValueError:
        return None, None
    if not (0 <= pcm < NONE8 and 0 <= stream < NONE8):
        return None, None
    return pcm, stream


def stream_indices(records: Iterable[TraceRecord]) -> dict[str, int]:
    """``"<pcm>/<stream>"`` -> the stream's index in the card. The frontend records its
    streams in card order when it publishes the transport; paths seen only in messages
    (a trace without that record) follow in sorted order."""
    out: dict[str, int] = {}
    seen: set[str] = set()
    for rec in records:
        streams = rec.fields.get("streams")
        if rec.kind == "xs" and isinstance(streams, dict) and not out:
            out = {str(p): i for i, p in enumerate(streams)}
        path = rec.fields.get("stream")
        if isinstance(path, str):
            seen.add(path)
    for path in sorted(seen - set(out), key=lambda p: _split_path(p)):
        out[path] = len(out)
    return out


def _xs_text(rec: TraceRecord) -> str:
    f = dict(rec.fields)
    op = str(f.pop("op", "?"))
    path = str(f.pop("path", ""))
    rest = " ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                    for k, v in f.items() if not (k == "tx" and v == 0))
    return " ".join(p for p in (op, path, rest) if p)


def packets_from_trace(records: Iterable[TraceRecord]) -> Iterator[CapturePacket]:
    """The packets of a trace, in time order: ring messages, XenStore operations and
    watch events, violations. Other records (notifications, grant maps, notes) are not
    messages and are left out."""
    recs = sorted(records, key=lambda r: r.t_ns)
    index = stream_indices(recs)
    for rec in recs:
        path = rec.fields.get("stream")
        path = path if isinstance(path, str) else None
        channel = index.get(path) if path is not None else None
        if rec.kind in _MESSAGE_KINDS:
            raw = rec.fields.get("raw")
            if raw is None:
                continue
            kind, direction = _MESSAGE_KINDS[rec.kind]
            data = bytes.fromhex(raw) if isinstance(raw, str) else bytes(raw)
            yield CapturePacket(rec.t_ns, kind, direction, rec.domid, path, channel, data)
        elif rec.kind == "xs":
            yield CapturePacket(rec.t_ns, Kind.XENSTORE, Direction.TO_XENSTORE, rec.domid,
                                None, None, _xs_text(rec).encode()[:_MAX_TEXT])
        elif rec.kind == "watch":
            text = f"{rec.fields.get('path', '')} token={rec.fields.get('token', '')}"
            yield CapturePacket(rec.t_ns, Kind.WATCH, Direction.FROM_XENSTORE, rec.domid,
                                None, None, text.encode())
        elif rec.kind == "violation":
            text = " ".join(f"{k}={v}" for k, v in rec.fields.items() if k != "stream")
            yield CapturePacket(rec.t_ns, Kind.VIOLATION, Direction.NONE, rec.domid, path,
                                channel, text.encode())
