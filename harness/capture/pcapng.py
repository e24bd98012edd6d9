"""A minimal pcapng writer and reader: one section, one interface of our link type,
Enhanced Packet Blocks with nanosecond timestamps and an optional comment.

Our own rather than Scapy's PcapNgWriter: it is 60 lines, and the bytes it writes (block
layout, the if_tsresol option) are exactly what the tests and tshark check.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from typing import IO

from harness.capture.packets import LINKTYPE, CapturePacket

_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT, _IF_TSRESOL = 0, 1, 9


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def write_pcapng(out: IO[bytes], packets: Iterable[CapturePacket], *,
                 comment: str | None = None, app: str = "sndif-harness") -> int:
    """Write ``packets`` as one pcapng section; returns how many were written. Times are
    the trace's CLOCK_MONOTONIC nanoseconds (a trace has no wall clock): what matters in
    Wireshark is the relative time."""
    shb_opts = _option(4, app.encode())  # shb_userappl
    if comment:
        shb_opts += _option(_OPT_COMMENT, comment.encode())
    out.write(_block(_SHB, struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
                     + shb_opts + _option(_OPT_END, b"")))
    idb_opts = _option(2, b"sndif")  # if_name
    idb_opts += _option(_IF_TSRESOL, bytes([9]))  # 10^-9 s: nanoseconds
    out.write(_block(_IDB, struct.pack("<HHI", LINKTYPE, 0, 0) + idb_opts
                     + _option(_OPT_END, b"")))
    n = 0
    for pkt in packets:
        data = pkt.to_bytes()
        body = struct.pack("<IIIII", 0, pkt.t_ns >> 32, pkt.t_ns & 0xFFFFFFFF, len(data),
                           len(data)) + _pad4(data)
        out.write(_block(_EPB, body))
        n += 1
    return n


def read_pcapng(path: str | os.PathLike[str]) -> Iterator[CapturePacket]:
    """The packets of a file :func:`write_pcapng` wrote (little-endian, one interface of
    our link type, nanosecond resolution); other blocks are skipped."""
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    while pos + 12 <= len(data):
        kind, total = struct.unpack_from("<II", data, pos)
        if total < 12 or pos + total > len(data):
            raise ValueError(f"{path}: truncated block at offset {pos}")
        if kind == _IDB:
            linktype = struct.unpack_from("<H", data, pos + 8)[0]
            if linktype != LINKTYPE:
                raise ValueError(f"{path}: link type {linktype}, not {LINKTYPE}")
        elif kind == _EPB:
            _, hi, lo, caplen, _ = struct.unpack_from("<IIIII", data, pos + 8)
            start = pos + 28
            yield CapturePacket.from_bytes(data[start:start + caplen], hi << 32 | lo)
        pos += total
