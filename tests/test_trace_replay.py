"""``sndif-harness replay TRACE``: a certify case's trace replayed against the backend it
was recorded with shows no difference; against a catalogued defect (a wrong status, a
wider HW_PARAM_QUERY answer, a crash, events while stopped) the first difference names the
field; against snd_be it runs to the end; bad files are one-line usage errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.capture.recording import RecordingError, recording_of
from harness.capture.replay import compare_events, compare_response
from harness.trace import TraceRecord
from protocol_models import codec, sndif
from protocol_models.constants import Op

HARNESS = [sys.executable, "-m", "harness"]
CASES = {
    "hw": "suites/test_f_hw_query.py::test_answers_lie_inside_the_request",
    "pause": "suites/test_d_triggers.py::test_pause_resume_stop[p]",
    "no-open": "suites/test_d_triggers.py::test_trigger_without_open_is_rejected[after-close]",
    "stop": "suites/test_e_positions.py::test_no_events_while_paused_or_stopped[STOP-playback]",
}


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HARNESS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A certify run of the reference backend on a handful of cases: their traces."""
    report = tmp_path_factory.mktemp("certify")
    expr = ("test_answers_lie_inside_the_request or test_pause_resume_stop or "
            "test_trigger_without_open_is_rejected or test_no_events_while_paused_or_stopped")
    res = harness("certify", "-k", expr, "--report-dir", str(report), timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads((report / "results.json").read_text())
    out = Path(doc["backend"]["out_dir"])
    found = {}
    for key, nodeid in CASES.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid)
        found[key] = out / "cases" / f"{safe}.jsonl"
        assert found[key].is_file(), sorted(p.name for p in (out / "cases").iterdir())
    return found


def _first_difference(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("first difference:"))
    return lines[start:]


@pytest.mark.parametrize("case", ["hw", "pause", "stop"])
def test_same_backend_shows_no_difference(traces, case):
    res = harness("replay", str(traces[case]))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "(as recorded in " in res.stdout.splitlines()[0], "the run's world is used"
    assert "no difference:" in res.stdout and "first difference" not in res.stdout


def test_wider_hw_query_answer_names_its_fields(traces):
    res = harness("replay", str(traces["hw"]), "--defect", "hw-query-wider-than-asked")
    assert res.returncode == 1, res.stdout + res.stderr
    block = _first_difference(res.stdout)
    assert "the response to #1 HW_PARAM_QUERY" in block[0] and "s into the trace" in block[0]
    assert block[1].startswith("  (sndif req id=") and "HW_PARAM_QUERY" in block[1]
    named = {line.split()[0] for line in block[2:-1] if "recorded" in line}
    assert named and named <= {f.name for f in sndif.HwParamResp.fields_desc}, block
    assert block[-1].startswith(f"{len(res.stdout.splitlines()) - len(block) - 1} "
                                "difference(s)"), "one line per difference, then the count"


def test_wrong_status_is_the_first_difference(traces):
    res = harness("replay", str(traces["pause"]), "--defect", "reject-close-when-not-open")
    assert res.returncode == 1, res.stdout + res.stderr
    block = _first_difference(res.stdout)
    assert "the response to #1 CLOSE id=" in block[0], block
    assert block[2].split() == ["status", "recorded", "OK"], block
    assert block[3].split()[:2] == ["now", "-EBADF"], block


def test_crash_is_a_difference_with_its_timeout(traces):
    res = harness("replay", str(traces["no-open"]), "--defect",
                  "abort-on-trigger-before-open", "--timeout", "1.5")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "now no response within 1.5 s" in res.stdout
    assert "replay stopped at" in res.stdout and "the backend exited (killed by SIGABRT)" \
        in res.stdout


def test_events_while_stopped_are_a_difference(traces):
    res = harness("replay", str(traces["stop"]), "--defect", "events-while-stopped")
    assert res.returncode == 1, res.stdout + res.stderr
    block = _first_difference(res.stdout)
    assert "position events after" in block[0] and "TRIGGER" in block[0], block
    assert block[1].split() == ["events", "recorded", "0"], block


@pytest.mark.slow
def test_against_snd_be_runs_to_the_end(traces, snd_be_binary, tmp_path):
    res = harness("replay", str(traces["hw"]), "--backend", f"exec:{snd_be_binary} -v *:Debug",
                  "--audio", "pulse", "--unique-id", "pulse<{device}>", "--out", str(tmp_path),
                  timeout=180)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "12 of 12 request(s) sent" in res.stdout or "no difference" in res.stdout
    assert (tmp_path / "trace.jsonl").read_text().count('"kind":"resp"') == 12


# --- bad input ---------------------------------------------------------------------------

def _cut(traces: dict[str, Path], tmp: Path) -> Path:
    data = traces["hw"].read_bytes()
    (tmp / "cut.jsonl").write_bytes(data[:-10])
    return tmp / "cut.jsonl"


@pytest.mark.parametrize(("make", "says"), [
    (lambda t, tmp: (tmp / "x.txt").write_text("hello\n") and tmp / "x.txt", "not a trace"),
    (lambda t, tmp: (tmp / "e.jsonl").write_text("") == 0 and tmp / "e.jsonl", "empty file"),
    (_cut, "last line is cut short"),
    (lambda t, tmp: tmp / "missing.jsonl", "no such trace file"),
    (lambda t, tmp: (tmp / "o.jsonl").write_text('{"a": 1}\n') and tmp / "o.jsonl",
     "not a trace"),
])
def test_bad_files_are_one_line_usage_errors(traces, tmp_path, make, says):
    path = make(traces, tmp_path)
    res = harness("replay", str(path))
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sndif-harness: {path}: "), res.stderr
    assert says in lines[0]


def test_a_card_without_the_traces_streams_is_a_usage_error(traces):
    res = harness("replay", str(traces["hw"]), "--vsnd",
                  "[['card, sample-rates=48000', 'pcm, name=p', 'stream, type=p']]")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines() == [
        "sndif-harness: the trace's stream(s) 0/1 are not in the card (streams 0/0): give "
        "the card it was recorded with (--vsnd or --config)"]


# --- reading a recording, comparing ------------------------------------------------------

def _rec(t: int, kind: str, raw: bytes | None = None, **fields: object) -> TraceRecord:
    f = dict(fields)
    if raw is not None:
        f["raw"] = raw.hex()
    return TraceRecord(t, kind, 1, f)


def _open(id_: int, gref: int) -> bytes:
    return codec.encode_req(Op.OPEN, id=id_, pcm_rate=48000, pcm_format=2, pcm_channels=2,
                            buffer_sz=16384, gref_directory=gref, period_sz=4096)


def test_recording_pairs_responses_and_knows_which_buffers_to_grant_again():
    ok = codec.encode_resp(id=1, operation=Op.OPEN, status=0)
    bad = codec.encode_resp(id=2, operation=Op.OPEN, status=-22)
    rec = recording_of([
        _rec(1, "note", text="stream 0/0: buffer 16384 octets, 4 pages, 1 directory pages, "
                             "gref_directory 12"),
        _rec(2, "req", _open(2, 12), stream="0/0"),  # the frontend's own buffer, refused
        _rec(3, "req", _open(1, 99), stream="0/0"),  # pipelined; accepted
        _rec(4, "resp", ok, stream="0/0"),
        _rec(5, "resp", bad, stream="0/0"),
        _rec(6, "req", _open(3, 77), stream="0/0"),  # a hostile directory, never answered
        _rec(7, "xs", op="read", path="/x"),
    ])
    a, b, c = rec.exchanges
    assert (a.response, a.response_t_ns, a.remake_buffer) == (bad, 5, True)
    assert (b.response, b.response_t_ns, b.remake_buffer) == (ok, 4, True)
    assert (c.response, c.remake_buffer) == (None, False)
    assert rec.not_replayed == 1 and rec.streams == ["0/0"]
    with pytest.raises(RecordingError, match="no frontend request"):
        recording_of([_rec(1, "xs", op="read", path="/x")])


def test_responses_compare_every_field_by_name():
    rec = codec.encode_resp(id=1, operation=Op.HW_PARAM_QUERY, status=0, rates_min=8000,
                            rates_max=48000)
    now = codec.encode_resp(id=1, operation=Op.HW_PARAM_QUERY, status=0, rates_min=8000,
                            rates_max=44100)
    assert compare_response(rec, rec, 1) == []
    assert compare_response(rec, now, 1) == [("rates_max", "48000", "44100")]
    stray = bytearray(rec)
    stray[63] = 1  # a byte of the reserved tail
    assert [f for f, _, _ in compare_response(rec, bytes(stray), 1)] == ["reserved_tail"]
    assert compare_response(rec, None, 2)[0][2] == "no response within 2 s"


def _evt(pos: int) -> tuple[int, bytes, bool]:
    return (0, codec.CUR_POS_EVT.encode(position=pos), False)


def test_events_compare_with_the_documented_tolerance():
    rec = [_evt(p) for p in (4096, 8192, 12288, 16384)]
    assert compare_events(rec, rec[1:], 4096) == []  # one fewer: one period off each
    assert compare_events(rec, rec[2:], 4096) == []  # 2 fewer: 1 + 4 // 4 allowed
    assert compare_events(rec[:3], rec[2:3], 4096)[0] == ("events", "3",
                                                          "1 (tolerance ±1)")
    wrapped = [*rec[:3], _evt(0)]  # a position modulo the buffer
    assert compare_events(rec, wrapped, 4096) == [("event 4 position", "16384",
                                                   "0 (tolerance ±4096)")]
    assert compare_events([_evt(64)], [_evt(65)], 0)[0][0] == "event 1 position"
    skipped = [(0, rec[0][1], True)]
    assert compare_events(rec[:1], skipped, 4096)[0][0] == "event 1"


def test_sigterm_mid_replay_leaves_nothing_running(traces):
    """Killed while it waits for a hung backend: the world is torn down on the way out."""
    from test_shell import alive, descendants

    proc = subprocess.Popen([*HARNESS, "replay", str(traces["hw"]), "--defect",
                             "hang-on-hw-query", "--timeout", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("replay of "), proc.stderr
        deadline = time.monotonic() + 30
        while len(descendants(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the simulated Xen and the backend are up
        kids = descendants(proc.pid)
        assert len(kids) >= 2, kids
        time.sleep(0.5)  # the first query is now waiting for its answer
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [k for k in kids if alive(k)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
