"""The trace: JSONL written as it happens, readable back, torn lines tolerated."""

from __future__ import annotations

import json

import pytest

from harness.trace import Trace, TraceRecord, load, render


def test_records_are_written_as_they_happen(tmp_path):
    path = tmp_path / "run" / "trace.jsonl"
    trace = Trace(path)
    trace.record("state", 1, node="device/vsnd/0/state", value=3)
    # Visible on disk before close: a killed run still leaves its evidence.
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["value"] == 3
    trace.record("req", 1, raw=b"\x07\x00" + bytes(62), ring="0/0")
    trace.close()
    back = list(load(path))
    assert [r.kind for r in back] == ["state", "req"]
    assert back[1].fields["raw"] == ("0700" + "00" * 62)
    assert back[0].t_ns <= back[1].t_ns


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "t.jsonl"
    with Trace(path) as trace:
        trace.record("note", None, text="first")
    with open(path, "a") as fh:
        fh.write('{"t_ns": 5, "kind": "no')  # the writer died here
    assert [r.fields["text"] for r in load(path)] == ["first"]


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown trace record kind 'bogus'"):
        Trace().record("bogus")


def test_marks_slice_per_case():
    trace = Trace()
    trace.record("note", text="before")
    mark = trace.mark()
    trace.record("note", text="case")
    assert [r.fields["text"] for r in trace.since(mark)] == ["case"]
    assert [r.fields["text"] for r in trace.select("note")] == ["before", "case"]


def test_render_is_relative_to_first_record():
    recs = [TraceRecord(1_000_000, "state", 0, {"value": 2}),
            TraceRecord(3_500_000, "notify", 1, {"port": 5})]
    lines = render(recs).splitlines()
    assert lines[0].split()[0] == "0.000"
    assert lines[1].split()[0] == "2.500"
    assert "d1" in lines[1] and "port=5" in lines[1]


def test_render_dissects_ring_messages_with_the_models():
    from protocol_models.codec import encode_req
    from protocol_models.constants import Op

    raw = encode_req(Op.TRIGGER, id=3, type=2)
    line = render([TraceRecord(0, "req", 1, {"raw": raw.hex(), "stream": "0/0"})])
    assert "TRIGGER" in line and "STOP" in line and "stream=0/0" in line
