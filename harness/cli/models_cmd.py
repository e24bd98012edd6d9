"""``sndif-harness ls`` and ``dissect``: the sndif models from the shell (``bench codec`` is
in :mod:`harness.cli.bench_cmd`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from scapy.packet import Packet

from harness.cli import UsageError
from protocol_models import codec, sndif
from protocol_models.constants import XEN_PAGE_SIZE, XENSND_MSG_SIZE


@dataclass(frozen=True)
class _Kind:
    cls: type[Packet]
    size: int


#: ``dissect --as`` kinds: the class to dissect with and the exact input size.
DISSECT_KINDS: dict[str, _Kind] = {
    "req": _Kind(sndif.XenSndReq, XENSND_MSG_SIZE),
    "resp": _Kind(sndif.XenSndResp, XENSND_MSG_SIZE),
    "evt": _Kind(sndif.XenSndEvt, XENSND_MSG_SIZE),
    "ring": _Kind(sndif.SndRingPage, XEN_PAGE_SIZE),
    "event-page": _Kind(sndif.SndEventPage, XEN_PAGE_SIZE),
    "page-dir": _Kind(sndif.PageDirectory, XEN_PAGE_SIZE),
}

#: Bodies sit after the 8-byte header; ``ls`` shows offsets within the whole message.
_BODY_CLASSES = frozenset(sndif.BODY_CLASSES)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("ls", help="list the sndif message types and their fields")
    p.add_argument("name", nargs="?", help="one type (case-insensitive), e.g. OpenReq")
    p.set_defaults(handler=cmd_ls)

    p = commands.add_parser("dissect", help="dissect hex bytes as an sndif structure")
    p.add_argument("--as", dest="kind", choices=sorted(DISSECT_KINDS), default="req",
                   help="structure to dissect as (default: req)")
    p.add_argument("hex", nargs="+", metavar="HEX|-",
                   help="hex digits (whitespace allowed), or - to read them from stdin")
    p.set_defaults(handler=cmd_dissect)


# --- ls --------------------------------------------------------------------------------------

def _find_class(name: str) -> type[Packet]:
    by_name = {c.__name__.lower(): c for c in sndif.MESSAGE_CLASSES}
    cls = by_name.get(name.lower())
    if cls is None:
        known = ", ".join(c.__name__ for c in sndif.MESSAGE_CLASSES)
        raise UsageError(f"unknown message type {name!r} (known: {known})")
    return cls


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return f"00 x {len(value)}" if not any(value) else value.hex()
    return repr(value)


def describe(cls: type[Packet]) -> str:
    """One type's layout: name, size, description, then offset/size/name/type/default."""
    base = sndif.HEADER_SIZE if cls in _BODY_CLASSES else 0
    entries = codec.layout(cls, base)
    sizes = [e.size for e in entries]
    size = "variable" if None in sizes else f"{sum(s or 0 for s in sizes)} bytes"
    doc = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
    where = f", at offset {base} of the 64-byte message" if base else ""
    lines = [f"{cls.__name__} ({size}{where}): {doc}"]
    for e in entries:
        off = f"@{e.offset}" if e.offset >= 0 else "@?"
        width = "var" if e.size is None else str(e.size)
        lines.append(f"  {off:>6} {width:>5}  {e.name:<20} {e.type_name:<20} = "
                     f"{_short(e.default)}")
    return "\n".join(lines)


def cmd_ls(args: argparse.Namespace) -> int:
    if args.name is not None and not args.name.strip():
        raise UsageError("no message type named '' (give none to list them all)")
    classes = [_find_class(args.name)] if args.name else list(sndif.MESSAGE_CLASSES)
    print("\n\n".join(describe(c) for c in classes))
    return 0


# --- dissect ---------------------------------------------------------------------------------

def parse_hex(parts: list[str], read_stdin: Callable[[], str] | None = None) -> bytes:
    """Hex digits from the arguments (or stdin for ``-``); whitespace is ignored."""
    if parts == ["-"]:
        if read_stdin is None and sys.stdin is None:  # started with stdin closed
            raise UsageError("-: there is no standard input to read the hex digits from")
        try:
            text = (read_stdin or sys.stdin.read)()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"-: cannot read the hex digits from standard input ({exc})"
                             ) from None
    else:
        text = " ".join(parts)
    digits = "".join(text.split())
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if not digits:
        raise UsageError("no hex digits given")
    bad = next((c for c in digits if c not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        raise UsageError(f"not a hex digit: {bad!r}")
    if len(digits) % 2:
        raise UsageError(f"odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits)


def cmd_dissect(args: argparse.Namespace) -> int:
    kind = DISSECT_KINDS[args.kind]
    data = parse_hex(args.hex)
    if len(data) != kind.size:
        raise UsageError(f"--as {args.kind} needs exactly {kind.size} bytes, got {len(data)}")
    pkt = kind.cls(data)
    print(pkt.summary())
    print(pkt.show(dump=True), end="")
    return 0
