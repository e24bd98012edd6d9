"""Area D: triggers and the stream state machine (clauses.md §4 D), against the supervised
backend. Every trigger in every stream state, repeated and unknown triggers, CLOSE while
running or paused, transfers in every open state, drain, and two streams interleaved.

Clauses of the area NOT tested here, and why:

* SND-D-01 [MUST, FE]: the frontend's choice of trigger values; the backend side (an
  unknown type is rejected) is judged by ``test_unknown_trigger_type_is_rejected`` under
  D-07/G-05.
* SND-D-02 [REF, FE]: how Linux maps ALSA triggers: frontend behaviour only.
* SND-D-09 [REF]: "answered within 3000 ms" is judged on every request of every case by the
  supervisor (a request timeout is a HANG verdict), not by a case of its own.
"""

from __future__ import annotations

import time

import pytest

from harness.frontend.hostile import call, pick_open_params
from harness.frontend.stream import FrontendStream
from harness.frontend.violations import BUFFER_STILL_MAPPED
from harness.judge.streams import closed, stream_of
from protocol_models.constants import VSND_WAIT_BACK_MS, Op, Trigger

START, PAUSE, STOP, RESUME = Trigger.START, Trigger.PAUSE, Trigger.STOP, Trigger.RESUME


def open_(s: FrontendStream, **kw):
    p = pick_open_params(s.config.hw, **kw)
    r = s.open(*p.args())
    assert r.ok, f"SND-C-14: OPEN {p} inside the configured space: expected OK, got {r.status}"
    return p


def trig(s: FrontendStream, t: Trigger) -> int:
    return s.trigger(t).status_code


def expect_ok(s: FrontendStream, seq: list[Trigger], clause: str) -> None:
    done = []
    for t in seq:
        status = trig(s, t)
        done.append(t.name)
        assert status == 0, (f"{clause}: {' -> '.join(['OPEN', *done])}: expected status 0 "
                             f"for {t.name}, got {status}")


@pytest.mark.clause("SND-D-03", "SND-D-04")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_start_after_stop_without_new_open(backend_case, kind):
    """OPEN, START, STOP, START, STOP, CLOSE all succeed: a stopped stream is started again
    without a new OPEN, as Linux does after an xrun or re-prepare."""
    s = closed(stream_of(backend_case, kind))
    open_(s)
    expect_ok(s, [START, STOP, START, STOP], "SND-D-04")
    assert s.close().ok


@pytest.mark.clause("SND-D-03")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_pause_resume_stop(backend_case, kind):
    """The valid sequences START -> PAUSE -> RESUME and PAUSE -> STOP succeed."""
    s = closed(stream_of(backend_case, kind))
    open_(s)
    expect_ok(s, [START, PAUSE, RESUME, PAUSE, STOP], "SND-D-03")
    assert s.close().ok


@pytest.mark.clause("SND-D-09")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_every_trigger_is_answered_in_time(backend_case, kind):
    """Each TRIGGER of a full sequence is answered within Linux's 3000 ms request timeout
    (measured per request; a backend that never answers is a HANG)."""
    s = closed(stream_of(backend_case, kind))
    open_(s)
    slow = []
    for t in (START, PAUSE, RESUME, STOP, START, STOP):
        t0 = time.monotonic()
        s.trigger(t)
        ms = (time.monotonic() - t0) * 1000
        if ms > VSND_WAIT_BACK_MS:
            slow.append(f"{t.name} {ms:.0f} ms")
    assert not slow, f"expected every TRIGGER answered within {VSND_WAIT_BACK_MS} ms " \
        f"(SND-D-09); got {slow}"
    assert s.close().ok


@pytest.mark.clause("SND-D-05")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_start_while_paused(backend_case, kind):
    """START while PAUSED resumes the stream (Linux re-prepares after a suspend and then
    STARTs; it never sends RESUME)."""
    s = closed(stream_of(backend_case, kind))
    open_(s)
    expect_ok(s, [START, PAUSE, START, STOP], "SND-D-05")
    assert s.close().ok


@pytest.mark.clause("SND-D-08")
@pytest.mark.parametrize("state", ["running", "paused"])
def test_close_while_active(backend_case, state):
    """CLOSE is accepted while RUNNING or PAUSED, stops the stream and releases its buffer:
    afterwards a WRITE fails and a new OPEN succeeds."""
    s = closed(stream_of(backend_case, "p"))
    open_(s)
    expect_ok(s, [START] + ([PAUSE] if state == "paused" else []), "SND-D-03")
    before = len(s.violations)
    r = s.close()
    assert r is not None and r.ok, f"SND-D-08: CLOSE while {state}: expected 0, got {r.status}"
    mapped = [v for v in s.violations[before:] if v.kind is BUFFER_STILL_MAPPED]
    assert not mapped, f"SND-D-08: CLOSE while {state} left the buffer mapped: {mapped[0]}"
    w = call(s, Op.WRITE, offset=0, length=64)
    assert w is not None and w.status_code < 0, (
        f"SND-D-08: WRITE after CLOSE while {state}: expected a negative status, got "
        f"{None if w is None else w.status}")
    open_(s)
    assert s.close().ok


@pytest.mark.clause("SND-D-07")
@pytest.mark.parametrize("when", ["after-close", "after-failed-open"])
def test_trigger_without_open_is_rejected(backend_case, when):
    """Every trigger type on a stream that is not open (after CLOSE, or after an OPEN the
    backend rejected) gets a negative status."""
    s = closed(stream_of(backend_case, "p"))
    if when == "after-failed-open":
        p = pick_open_params(s.config.hw)
        r = call(s, Op.OPEN, **p.fields(buffer_sz=0, gref_directory=0))
        assert r is not None and r.status_code < 0, (
            f"SND-C-15: OPEN with buffer_sz 0 and gref_directory 0: expected a negative "
            f"status, got {None if r is None else r.status}")
    for t in (START, PAUSE, STOP, RESUME):
        status = trig(s, t)
        assert status < 0, f"SND-D-07: {t.name} {when}: expected a negative status, got {status}"


@pytest.mark.clause("SND-D-07", "SND-G-05")
@pytest.mark.parametrize("value", [4, 0x7F, 0xFF])
def test_unknown_trigger_type_is_rejected(backend_case, value):
    """A TRIGGER type outside START/PAUSE/STOP/RESUME is rejected with a negative status,
    and the open stream stays usable (START then succeeds)."""
    s = closed(stream_of(backend_case, "p"))
    open_(s)
    status = trig(s, value)
    assert status < 0, f"SND-D-07: TRIGGER type {value}: expected a negative status, got {status}"
    expect_ok(s, [START, STOP], "SND-D-07")
    assert s.close().ok


REPEATS = {
    "start-start": [START, START], "pause-pause": [START, PAUSE, PAUSE],
    "stop-stop": [START, STOP, STOP], "resume-running": [START, RESUME],
    "pause-opened": [PAUSE], "resume-opened": [RESUME], "stop-opened": [STOP],
}


def _repeat(s: FrontendStream, seq: list[Trigger]) -> list[int]:
    open_(s)
    return [trig(s, t) for t in seq]


@pytest.mark.clause("SND-D-07", "SND-G-01")
@pytest.mark.parametrize("name", sorted(REPEATS))
def test_repeated_or_misplaced_trigger_keeps_stream_usable(backend_case, name):
    """A trigger repeated or out of place (AMBIG-7) is answered with 0 or a negative status,
    and the stream stays usable: STOP, START, STOP and CLOSE then succeed."""
    s = closed(stream_of(backend_case, "p"))
    statuses = _repeat(s, REPEATS[name])
    assert all(x <= 0 for x in statuses), f"SND-G-01: statuses {statuses}: expected 0 or < 0"
    trig(s, STOP)  # whatever state it is in now: the status is AMBIG-7
    expect_ok(s, [START, STOP], "SND-D-07")
    assert s.close().ok


@pytest.mark.clause("AMBIG-7")
def test_repeated_or_misplaced_trigger_statuses(backend_case, observe):
    """What the backend answers to repeated and misplaced triggers (AMBIG-7: unspecified)."""
    s = closed(stream_of(backend_case, "p"))
    for name, seq in sorted(REPEATS.items()):
        statuses = _repeat(s, seq)
        observe(f"{name}: statuses of OPEN, {' '.join(t.name for t in seq)}", statuses)
        s.close()


@pytest.mark.clause("SND-D-04", "SND-D-05", "SND-C-10")
def test_write_in_every_open_state(backend_case):
    """Playback WRITE succeeds in every open state: before START (prefill), RUNNING,
    PAUSED, and STOPPED (Linux writes before re-STARTing after STOP or suspend)."""
    s = closed(stream_of(backend_case, "p"))
    p = open_(s)
    chunk = bytes(p.period_sz)
    offset = 0
    for label, triggers in (("opened", []), ("running", [START]), ("paused", [PAUSE]),
                            ("stopped", [STOP])):
        expect_ok(s, triggers, "SND-D-03")
        r = s.write(offset, chunk)
        assert r.ok, f"SND-C-10: WRITE while {label}: expected status 0, got {r.status}"
        offset = (offset + len(chunk)) % p.buffer_sz
    assert s.close().ok


@pytest.mark.clause("SND-D-03", "SND-G-01")
def test_write_more_than_the_buffer_before_start(backend_case):
    """Writing three times the buffer before START (AMBIG-10 leaves the data model open)
    gets statuses 0 or negative, and START, STOP, CLOSE then succeed."""
    s = closed(stream_of(backend_case, "p"))
    p = open_(s)
    statuses = [s.write(0, bytes(p.buffer_sz)).status_code for _ in range(3)]
    assert all(x <= 0 for x in statuses), f"SND-G-01: WRITE statuses {statuses}"
    expect_ok(s, [START, STOP], "SND-D-03")
    assert s.close().ok


@pytest.mark.clause("SND-D-06")
def test_drain_reports_the_last_partial_period(backend_case):
    """After 2.5 periods are written and the stream STARTed, CUR_POS reaches the end of the
    written data (ALSA's drain waits for it), not just the last period boundary."""
    s = closed(stream_of(backend_case, "p"))
    p = open_(s)
    written = (p.period_sz * 5 // 2) // p.frame * p.frame
    assert s.write(0, bytes(written)).ok
    expect_ok(s, [START], "SND-D-03")
    budget = written / p.bytes_per_second + 1.5
    reached = s.wait_for(lambda: (s.position or 0) >= written, budget)
    last = s.position
    s.trigger(STOP)
    assert s.close().ok
    assert reached, (f"SND-D-06: {written} octets written ({written / p.period_sz:g} "
                     f"periods): expected CUR_POS to reach {written} within {budget:.2f} s, "
                     f"last position {last}")


@pytest.mark.clause("SND-D-03", "SND-D-07")
def test_streams_are_independent(backend_case):
    """Triggers and CLOSE on one stream leave another open stream alone: after the
    capture stream is stopped and closed, the playback stream still PAUSEs, STARTs and
    takes WRITEs, and a trigger on the closed stream is still rejected."""
    pb, cap = closed(stream_of(backend_case, "p")), closed(stream_of(backend_case, "c"))
    p = open_(pb)
    open_(cap)
    expect_ok(pb, [START], "SND-D-03")
    expect_ok(cap, [START, STOP], "SND-D-03")
    assert cap.close().ok
    assert pb.write(0, bytes(p.period_sz)).ok, "SND-D-03: WRITE on the other stream failed"
    expect_ok(pb, [PAUSE, START], "SND-D-05")
    status = trig(cap, START)
    assert status < 0, f"SND-D-07: START on the closed stream: expected < 0, got {status}"
    expect_ok(pb, [STOP], "SND-D-03")
    assert pb.close().ok
