"""Wire format of the simulated hypervisor socket (see PROTOCOL.md next to this file).

Every message is one SOCK_SEQPACKET datagram: a 16-byte little-endian header
``op u32, seq u32, status i32, len u32`` followed by ``len`` payload bytes. Requests carry
``status = 0``; replies echo ``op`` and ``seq`` and carry 0 or a negative errno. File
descriptors travel as SCM_RIGHTS on the message. Replies that carry many items (pages, fds,
accounting records) come as one or more *chunks*, each starting with
``total u32, first u32, count u32, extra u32``.
"""

from __future__ import annotations

import array
import enum
import os
import socket
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<IIiI")
CHUNK = struct.Struct("<IIII")
U32 = struct.Struct("<I")
MAX_MSG = 65536  # largest datagram either side sends or accepts
MAX_FDS = 250  # fds per message (the kernel's SCM_MAX_FD is 253)
CHUNK_PAYLOAD_MAX = 32768  # entry bytes per chunk
ANY = 0xFFFFFFFF  # "any domain" in accounting filters
NAME_LEN = 32


class Op(enum.IntEnum):
    # event channels (any domain)
    EVTCHN_ALLOC_UNBOUND = 0x01
    EVTCHN_BIND_INTERDOMAIN = 0x02
    EVTCHN_UNBIND = 0x03
    EVTCHN_STATUS = 0x04
    EVTCHN_RESET = 0x05
    EVTCHN_NOTIFY_CHECK = 0x06
    # grant tables (any domain)
    GNT_ALLOC = 0x10
    GNT_GRANT = 0x11
    GNT_REVOKE = 0x12
    GNT_FREE = 0x13
    GNT_MAP = 0x14
    GNT_UNMAP = 0x15
    GNT_MAP_NOTIFY = 0x16
    GNT_PAGE_NOTIFY = 0x17
    # identity
    WHOAMI = 0x20
    FAULT_PAGE = 0x21
    # control (domain 0's socket only)
    CTL_CREATE_DOMAIN = 0x40
    CTL_DESTROY_DOMAIN = 0x41
    CTL_LIST_DOMAINS = 0x42
    CTL_MAPPINGS = 0x43
    CTL_PORTS = 0x44
    CTL_GRANTS = 0x45
    CTL_BUSY_REVOKES = 0x46
    CTL_SHUTDOWN = 0x47
    CTL_MAP_COUNTERS = 0x48
    CTL_FAULT_INJECT = 0x49
    CTL_FAULT_CLEAR = 0x4A
    CTL_FAULT_LIST = 0x4B
    CTL_XS_WRITES = 0x4C
    CTL_RENAME_DOMAIN = 0x4D
    # asynchronous, daemon -> client, seq 0
    ASYNC_EVTCHN_BOUND = 0x80  # retired: no longer sent (channel ends come with the port)


class PortState(enum.IntEnum):
    CLOSED = 0
    UNBOUND = 1
    INTERDOMAIN = 2


GRANT_READONLY = 0x1  # GNT_GRANT / GNT_MAP flags
MAP_FLAG_READONLY = 0x1  # mapping record flags
MAP_FLAG_MAPPED = 0x2
GRANT_FLAG_READONLY = 0x1  # grant record flags
GRANT_FLAG_BUSY = 0x2
DOMAIN_FLAG_PRIVILEGED = 0x1

# accounting record layouts (entries of chunked replies)
DOMAIN_REC = struct.Struct(f"<II{NAME_LEN}s")  # domid, flags, name
MAPPING_REC = struct.Struct("<IIIIQQII")  # granter, mapper, ref, flags, since, until, map_id, pad
PORT_REC = struct.Struct("<IIIII")  # domid, port, state, remote_domid, remote_port
GRANT_REC = struct.Struct("<IIIII")  # domid, ref, grantee, flags, nmaps
REVOKE_REC = struct.Struct("<IIIIQQ")  # granter, ref, grantee, pad, at, released (0: busy)
COUNTER_REC = struct.Struct("<IIQQ")  # granter, mapper, pages mapped, pages unmapped
# id, domid, mode, n, errno, calls, fired, flags (bit0 spent), op name
FAULT_REC = struct.Struct(f"<IIIIiIII{NAME_LEN}s")
XS_WRITES_REC = struct.Struct("<IIQQ")  # domid, pad, total writes, writes since `since`
NOTIFY_CLEAR_BYTE = 0x1  # GNT_*_NOTIFY flags, as Linux's UNMAP_NOTIFY_*
NOTIFY_SEND_EVENT = 0x2


@dataclass(frozen=True)
class Message:
    op: int
    seq: int
    status: int
    payload: bytes
    fds: tuple[int, ...] = ()


def pack(op: int, seq: int, payload: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(op, seq, status, len(payload)) + payload


def u32s(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def unpack_u32s(payload: bytes, n: int, offset: int = 0) -> tuple[int, ...]:
    if len(payload) < offset + 4 * n:
        raise ValueError("payload too short")
    return struct.unpack_from(f"<{n}I", payload, offset)


def send(sock: socket.socket, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> None:
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        sock.sendmsg([data], anc)
    else:
        sock.send(data)


_ANC_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)


def recv(sock: socket.socket, flags: int = 0) -> Message | None:
    """One message, or None at EOF. Malformed datagrams raise ValueError (fds closed)."""
    data, anc, flags, _ = sock.recvmsg(MAX_MSG, _ANC_SPACE, flags | socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(cdata[: len(cdata) - len(cdata) % arr.itemsize])
            fds.extend(arr)
    if not data and not fds:
        return None
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) < HEADER.size:
        _close_all(fds)
        raise ValueError("truncated or short message")
    op, seq, status, length = HEADER.unpack_from(data)
    if length != len(data) - HEADER.size:
        _close_all(fds)
        raise ValueError("length field does not match datagram size")
    return Message(op, seq, status, bytes(data[HEADER.size:]), tuple(fds))


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def chunks(entries: list[bytes], fds: list[int] | None = None, extra: int = 0,
           entry_size: int = 0) -> list[tuple[bytes, list[int]]]:
    """Split ``entries`` (and one fd per entry when ``fds`` is given) into chunk payloads."""
    size = entry_size or (len(entries[0]) if entries else 1)
    per = max(1, CHUNK_PAYLOAD_MAX // max(size, 1))
    if fds is not None:
        per = min(per, MAX_FDS)
    total = len(entries)
    out: list[tuple[bytes, list[int]]] = []
    first = 0
    while True:
        part = entries[first:first + per]
        payload = CHUNK.pack(total, first, len(part), extra) + b"".join(part)
        out.append((payload, list(fds[first:first + len(part)]) if fds is not None else []))
        first += len(part)
        if first >= total:
            return out
