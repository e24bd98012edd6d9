"""``sndif-harness trace show|export|dissector``: a recorded trace (``trace.jsonl``) as a
readable timeline, as a pcapng capture for Wireshark, and the Lua dissector that decodes
those captures (generated from the models)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.cli import UsageError
from harness.trace import TraceRecord, load


def read_records(path: str) -> list[TraceRecord]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{path}: no such trace file")
    try:
        return list(load(p))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path}: not a trace (JSON lines of records): {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a trace (not UTF-8 text)") from None


def _show(args: argparse.Namespace) -> int:
    from harness.capture.timeline import parse_since, timeline

    try:
        since = parse_since(args.since) if args.since is not None else None
        lines = timeline(read_records(args.trace), stream=args.stream, since=since)
        for line in lines:
            print(line)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def _export(args: argparse.Namespace) -> int:
    from harness.capture import packets_from_trace, write_pcapng

    records = read_records(args.trace)
    out = Path(args.output)
    if out.suffix != ".pcapng":
        raise UsageError(f"-o {args.output}: the capture is pcapng: name it *.pcapng")
    with open(out, "wb") as fh:
        n = write_pcapng(fh, packets_from_trace(records),
                         comment=f"sndif-harness trace {Path(args.trace).name}")
    print(f"{out}: {n} packets (open with: wireshark -X lua_script:sndif.lua {out}; "
          "sndif.lua from `sndif-harness trace dissector -o sndif.lua`)", file=sys.stderr)
    return 0


def _dissector(args: argparse.Namespace) -> int:
    from harness.capture.lua import generate

    text = generate()
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"{args.output}: Wireshark dissector for sndif captures", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser],
             benches: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("trace", help="show a trace, export it as pcapng, or write the "
                                          "Wireshark dissector")
    sub = p.add_subparsers(dest="trace_command", metavar="ACTION")
    sub.required = True

    s = sub.add_parser("show", help="a trace as a readable timeline",
                       description="One line per record: seconds since the first record, "
                                   "who -> whom, stream (index:path), summary by name.")
    s.add_argument("trace", metavar="TRACE", help="a trace.jsonl")
    s.add_argument("--stream", metavar="N", default=None,
                   help="only this stream: its index in the card (0, 1, ...) or path (0/1)")
    s.add_argument("--since", metavar="T", default=None,
                   help="only records from T seconds after the first (1.5, 1.5s, 250ms)")
    s.set_defaults(handler=_show)

    e = sub.add_parser("export", help="a trace as a pcapng capture for Wireshark/tshark",
                       description="Every ring message, XenStore operation, watch event "
                                   "and violation as a packet (link type DLT_USER0 with "
                                   "a header of direction, domain, stream and kind); "
                                   "decode with the dissector of `trace dissector`.")
    e.add_argument("trace", metavar="TRACE", help="a trace.jsonl")
    e.add_argument("-o", "--output", required=True, metavar="FILE.pcapng")
    e.set_defaults(handler=_export)

    d = sub.add_parser("dissector", help="write the Wireshark Lua dissector (generated "
                                         "from the models)")
    d.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="where to write it (default: stdout)")
    d.set_defaults(handler=_dissector)
