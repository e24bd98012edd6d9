"""A trace read as what ``sndif-harness replay`` needs: the frontend's requests in the
order it sent them, each with the response recorded for it (or none), the position events
each stream received, and the world the trace was recorded in when its run says so.

The trace (``harness/trace.py``) holds every ring message as its 64 raw bytes with the
stream's path and the recording domain; responses are paired with requests here by
stream and id, first come first served, as the frontend's own matching does.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.trace import TraceRecord
from harness.world.options import add_world_options, option_args
from protocol_models import codec
from protocol_models.constants import XENSND_MSG_SIZE, Op

#: The frontend's typed OPEN notes the buffer it granted (``FrontendStream.open``).
_BUFFER_NOTE = re.compile(r"stream (\S+): buffer (\d+) octets.* gref_directory (\d+)")
#: A buffer larger than this is a hostile size, not one to grant again.
MAX_REMADE_BUFFER = 16 << 20


class RecordingError(ValueError):
    """A trace that cannot be replayed; the message says why (one line)."""


@dataclass(frozen=True)
class Exchange:
    """One recorded request and the response recorded for it."""

    n: int  # 1-based, in the order the frontend sent its requests
    t_ns: int
    stream: str
    request: bytes
    response: bytes | None  # None: the recording has no response to it
    response_t_ns: int | None
    remake_buffer: bool  # an OPEN of a buffer the frontend granted: grant a new one

    @property
    def id(self) -> int:
        return int(codec.decode_req(self.request).id)

    @property
    def operation(self) -> int:
        return int(codec.decode_req(self.request).operation)


@dataclass(frozen=True)
class RecordedEvent:
    t_ns: int
    stream: str
    raw: bytes
    linux_skips: bool


@dataclass(frozen=True)
class Recording:
    t0_ns: int  # the trace's first record: times are shown from it
    end_ns: int  # its last record
    exchanges: tuple[Exchange, ...]
    events: tuple[RecordedEvent, ...]
    not_replayed: int  # XenStore operations and watch events, which replay does not redo

    @property
    def streams(self) -> list[str]:
        """The streams the requests went to, in order of first use."""
        return list(dict.fromkeys(e.stream for e in self.exchanges))

    def seconds(self, t_ns: int) -> float:
        return (t_ns - self.t0_ns) / 1e9


def _raw(rec: TraceRecord) -> bytes | None:
    raw = rec.fields.get("raw")
    try:
        data = bytes.fromhex(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    return data if data is not None and len(data) == XENSND_MSG_SIZE else None


def recording_of(records: Iterable[TraceRecord]) -> Recording:
    """The replayable part of a trace; :class:`RecordingError` when it holds no request."""
    recs = sorted(records, key=lambda r: r.t_ns)
    if not recs:
        raise RecordingError("holds no record")
    granted: dict[str, set[int]] = defaultdict(set)  # stream -> directories it granted
    requests: list[tuple[TraceRecord, bytes, bool]] = []
    answers: dict[int, tuple[bytes, int]] = {}
    waiting: dict[tuple[str, int], deque[int]] = defaultdict(deque)
    events: list[RecordedEvent] = []
    not_replayed = 0
    for rec in recs:
        path = rec.fields.get("stream")
        if rec.kind == "note" and (m := _BUFFER_NOTE.match(str(rec.fields.get("text", "")))):
            granted[m.group(1)].add(int(m.group(3)))
        elif rec.kind in ("xs", "watch"):
            not_replayed += 1
        if not isinstance(path, str) or rec.kind not in ("req", "resp", "evt"):
            continue
        raw = _raw(rec)
        if raw is None:
            raise RecordingError(f"a {rec.kind} record at t_ns {rec.t_ns} holds no 64-octet "
                                 "message (raw)")
        key = (path, int(codec.decode_resp(raw).id))  # the id: the same place in all three
        if rec.kind == "req":
            req = codec.decode_req(raw)
            waiting[key].append(len(requests))
            requests.append((rec, raw, req.operation == Op.OPEN
                             and req.gref_directory in granted[path]))
        elif rec.kind == "resp" and waiting[key]:
            answers[waiting[key].popleft()] = (raw, rec.t_ns)
        elif rec.kind == "evt":
            events.append(RecordedEvent(rec.t_ns, path, raw,
                                        bool(rec.fields.get("linux_skips"))))
    if not requests:
        raise RecordingError("holds no frontend request to replay")
    exchanges = []
    for i, (rec, raw, noted) in enumerate(requests):
        resp, resp_t = answers.get(i, (None, None))
        req = codec.decode_req(raw)
        ok_open = (req.operation == Op.OPEN and resp is not None
                   and codec.decode_resp(resp).status == 0)
        remake = ((noted or ok_open) and 0 < req.buffer_sz <= MAX_REMADE_BUFFER)
        exchanges.append(Exchange(i + 1, rec.t_ns, str(rec.fields["stream"]), raw, resp,
                                  resp_t, remake))
    return Recording(recs[0].t_ns, recs[-1].t_ns, tuple(exchanges), tuple(events),
                     not_replayed)


def check_trace_file(path: Path) -> None:
    """What ``harness.trace.load`` forgives but a replay must not: an empty file, and a
    last line cut short (the writer killed mid-record: the end of the recording is
    missing). :class:`RecordingError` says which."""
    if not path.is_file():
        raise RecordingError("no such trace file")
    size = path.stat().st_size
    if size == 0:
        raise RecordingError("empty file: not a trace")
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            raise RecordingError("its last line is cut short (no newline at the end): the "
                                 "recording is incomplete")


def recorded_world(trace: Path) -> tuple[list[str], Path] | None:
    """The world options of the certify run a case trace belongs to
    (``REPORT_DIR/<backend dir>/cases/<case>.jsonl``, the run's ``REPORT_DIR/results.json``
    holding its pytest arguments), with that ``results.json``; None for a trace without
    one (``demo``, ``shell``)."""
    cases = trace.resolve().parent
    if cases.name != "cases":
        return None
    results = cases.parent.parent / "results.json"
    try:
        doc = json.loads(results.read_text())
        args: Sequence[str] = doc["run"]["pytest_args"]
        out_dir = Path(str(doc["backend"]["out_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if out_dir.name != cases.parent.name:
        return None  # a results.json of another run
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_world_options(parser.add_argument)
    ns, _ = parser.parse_known_args([str(a) for a in args])
    return option_args(lambda name: getattr(ns, name)), results
