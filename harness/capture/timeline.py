"""``sndif-harness trace show``: a trace as a readable timeline, one line per record:
time since the first record, who talks to whom, the stream, and a summary by name
(ring messages through the Scapy models)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from harness.capture.packets import stream_indices
from harness.trace import TraceRecord

_DIRECTION = {"req": "FE->BE", "resp": "BE->FE", "evt": "BE->FE"}
_SINCE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*")


def parse_since(text: str) -> float:
    """``--since``: seconds from the first record; ``250ms`` and ``1.5s`` work too."""
    m = _SINCE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a time: {text!r} (e.g. 1.5, 1.5s or 250ms)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value


def stream_path(key: str, index: dict[str, int]) -> str:
    """``--stream``: a stream's index in the card (``1``) or its path (``0/1``)."""
    if "/" in key:
        return key
    try:
        n = int(key)
    except ValueError:
        raise ValueError(f"not a stream: {key!r} (an index such as 1, or a path such as "
                         "0/1)") from None
    for path, i in index.items():
        if i == n:
            return path
    known = ", ".join(f"{i} ({p})" for p, i in sorted(index.items(), key=lambda x: x[1]))
    raise ValueError(f"no stream {n} in this trace (streams: {known or 'none'})")


def _message(kind: str, raw: Any) -> str:
    from protocol_models import sndif  # lazy: Scapy only when there is a message to show

    data = bytes.fromhex(raw) if isinstance(raw, str) else bytes(raw)
    cls = {"req": sndif.XenSndReq, "resp": sndif.XenSndResp, "evt": sndif.XenSndEvt}[kind]
    text = cls(data).summary()
    return text.removeprefix("sndif ")


def _state_name(value: Any) -> str:
    from protocol_models.xenbus import XenbusState

    try:
        return XenbusState(int(value)).name
    except (TypeError, ValueError):
        return str(value)


def _rest(fields: dict[str, Any], *skip: str) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items() if k not in skip)


def describe(rec: TraceRecord) -> tuple[str, str]:
    """(who -> whom, one-line summary) of a record."""
    f = rec.fields
    dom = "--" if rec.domid is None else f"d{rec.domid}"
    if rec.kind in _DIRECTION:
        text = _message(rec.kind, f["raw"]) if "raw" in f else _rest(f, "stream")
        if rec.kind == "evt" and f.get("linux_skips"):
            text += " (Linux drops it: id mismatch)"
        return _DIRECTION[rec.kind], text
    if rec.kind == "xs":
        head = f"{f.get('op', '?')} {f.get('path', '')}".rstrip()
        return f"{dom}->XS", " ".join(p for p in (head, _rest(f, "op", "path", "tx", "streams"))
                                      if p)
    if rec.kind == "watch":
        return f"XS->{dom}", f"watch fired {f.get('path', '')} token={f.get('token', '')}"
    if rec.kind == "state":
        return dom, f"{f.get('who', '?')} state {_state_name(f.get('state'))}"
    if rec.kind in ("map", "unmap"):
        mode = " (read-only)" if f.get("readonly") else ""
        return dom, (f"{rec.kind} of d{f.get('granter')}'s grant ref {f.get('ref')}{mode}")
    if rec.kind == "notify":
        return f"{dom}->", f"notify port {f.get('port')}"
    if rec.kind == "violation":
        return "!!", "VIOLATION " + _rest(f, "stream")
    if rec.kind == "note":
        return dom, str(f.get("text", _rest(f, "stream")))
    return dom, f"{rec.kind} {_rest(f, 'stream')}"


def timeline(records: Iterable[TraceRecord], *, stream: str | None = None,
             since: float | None = None) -> Iterator[str]:
    """The lines of ``trace show``: records in time order (times from the first record
    of the whole trace, so filtering does not shift them); ``stream`` (an index or a
    path) keeps only that stream's records, ``since`` those at or after that many
    seconds. ``ValueError`` names a bad filter."""
    recs = sorted(records, key=lambda r: r.t_ns)
    if not recs:
        return
    index = stream_indices(recs)
    path = stream_path(stream, index) if stream is not None else None
    t0 = recs[0].t_ns
    for rec in recs:
        t = (rec.t_ns - t0) / 1e9
        if since is not None and t < since:
            continue
        rec_path = rec.fields.get("stream")
        if path is not None and rec_path != path:
            continue
        where = "-" if not isinstance(rec_path, str) else (
            f"{index.get(rec_path, '?')}:{rec_path}")
        who, text = describe(rec)
        yield f"{t:10.6f}  {who:<7} {where:<6} {text}"
