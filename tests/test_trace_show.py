"""``sndif-harness trace show``: a trace as a timeline: time, direction, stream, summary by
name; ``--stream`` and ``--since`` filter; bad input is one line and status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.trace import Trace
from protocol_models import codec, sndif
from protocol_models.constants import Op

T0 = 5_000_000_000


def _trace(path: Path) -> Path:
    tr = Trace(path)
    tr.record("xs", 1, t_ns=T0, op="publish_transport", path="/local/domain/1/device/vsnd/0",
              streams={"0/0": [8, 1, 9, 2], "0/1": [10, 3, 11, 4]})
    tr.record("state", 1, t_ns=T0 + 1_000_000, who="frontend", path="/x", state=4)
    tr.record("req", 1, t_ns=T0 + 2_000_000, stream="0/0",
              raw=codec.encode_req(Op.OPEN, id=7, pcm_rate=48000, pcm_format=2,
                                   pcm_channels=2, buffer_sz=65536, gref_directory=12,
                                   period_sz=4096))
    tr.record("resp", 1, t_ns=T0 + 2_500_000, stream="0/0", status=-22,
              raw=codec.encode_resp(id=7, operation=int(Op.OPEN), status=-22))
    tr.record("req", 1, t_ns=T0 + 1_500_000_000, stream="0/1",
              raw=codec.encode_req(Op.TRIGGER, id=3, type=0))
    tr.record("evt", 1, t_ns=T0 + 2_000_000_000, stream="0/1", index=0,
              raw=bytes(sndif.XenSndEvt(id=0) / sndif.CurPosEvt(position=4096)))
    tr.record("watch", 1, t_ns=T0 + 2_100_000_000, path="/be/state", token="t")
    tr.close()
    return path


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    status = main(["trace", "show", *args])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_timeline_names_times_directions_and_streams(tmp_path, capsys):
    status, lines, _ = _show(capsys, str(_trace(tmp_path / "t.jsonl")))
    assert status == 0
    assert len(lines) == 7
    opened = next(line for line in lines if "OPEN" in line and "req" in line)
    assert opened.split()[:3] == ["0.002000", "FE->BE", "0:0/0"]
    assert "rate=48000 S16_LE ch=2" in opened and "id=7" in opened
    resp = next(line for line in lines if "resp" in line)
    assert "BE->FE" in resp and "status=-EINVAL" in resp
    assert "frontend state Connected" in lines[1]
    evt = next(line for line in lines if "evt" in line)
    assert evt.split()[:3] == ["2.000000", "BE->FE", "1:0/1"]
    assert "CUR_POS" in evt and "position=4096" in evt
    assert "XS->d1" in lines[-1]


@pytest.mark.parametrize("key", ["1", "0/1"])
def test_stream_filter_by_index_or_path(tmp_path, capsys, key):
    status, lines, _ = _show(capsys, str(_trace(tmp_path / "t.jsonl")), "--stream", key)
    assert status == 0
    assert len(lines) == 2 and all(" 1:0/1 " in line for line in lines)


@pytest.mark.parametrize("since", ["1.5", "1.5s", "1500ms"])
def test_since_keeps_later_records_with_unshifted_times(tmp_path, capsys, since):
    status, lines, _ = _show(capsys, str(_trace(tmp_path / "t.jsonl")), "--since", since)
    assert status == 0
    assert [line.split()[0] for line in lines] == ["1.500000", "2.000000", "2.100000"]


@pytest.mark.parametrize("args", [["--stream", "7"], ["--stream", "x"], ["--since", "soon"]])
def test_bad_filters_are_one_line_status_2(tmp_path, capsys, args):
    status, lines, err = _show(capsys, str(_trace(tmp_path / "t.jsonl")), *args)
    assert status == 2 and not lines
    assert len(err.strip().splitlines()) == 1 and err.startswith("sndif-harness: ")


def test_missing_or_garbage_trace_is_status_2(tmp_path, capsys):
    assert _show(capsys, str(tmp_path / "none.jsonl"))[0] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"no": "t_ns"}\n')
    status, _, err = _show(capsys, str(bad))
    assert status == 2 and "not a trace" in err


def test_empty_trace_shows_nothing(tmp_path, capsys):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert _show(capsys, str(empty)) == (0, [], "")
