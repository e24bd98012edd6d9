"""Pacing arithmetic and CUR_POS events of the reference backend (SND-E-01..E-07)."""

from __future__ import annotations

import itertools

from test_backend_stream import SPACE, FakeAudio, FakeMemory, StreamCore, StreamInfo, open_

from harness.backends.reference.channel import StreamChannel
from harness.backends.reference.pacing import NS, Pacer
from harness.rings import BackRing, EventConsumer, EventProducer, FrontRing
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, Op, Trigger

MS = 1_000_000

# 48 kHz stereo S16: 4 octets a frame, 192 octets a millisecond.


def test_position_is_whole_frames_at_the_stream_rate():
    p = Pacer(rate=48000, frame=4, period=0, playback=False)
    p.start(1000)
    assert p.position_at(1000) == 0
    assert p.position_at(1000 + NS) == 48000 * 4
    assert p.position_at(1000 + NS // 48000) == 0  # 20833 ns < one frame (20833.3)
    assert p.position_at(1000 + NS // 48000 + 1) == 4
    assert p.position_at(1000 + 10 * MS) % 4 == 0


def test_position_freezes_when_stopped_and_continues_after_start():
    p = Pacer(rate=48000, frame=4, period=0, playback=False)
    p.start(0)
    p.stop(10 * MS)
    assert p.position_at(10 * MS) == 1920
    assert p.position_at(50 * MS) == 1920  # stopped: not advancing (E-06)
    p.start(100 * MS)  # AMBIG-3: cumulative since OPEN, no reset on STOP -> START
    assert p.position_at(110 * MS) == 3840


def test_deadlines_land_on_exact_period_boundaries():
    p = Pacer(rate=44100, frame=4, period=441 * 4, playback=False)  # 10 ms periods
    p.start(5)
    d = p.next_deadline(5)
    assert d == 5 + 10 * MS
    assert p.due_boundaries(d - 1) == []
    assert p.due_boundaries(d) == [1764]
    p.reported = 1764
    d2 = p.next_deadline(d)
    assert d2 == 5 + 20 * MS and p.due_boundaries(d2) == [3528]
    # an awkward rate: the deadline is the first ns at which the boundary is reached
    q = Pacer(rate=22050, frame=2, period=2 * 7, playback=False)
    q.start(0)
    t = q.next_deadline(0)
    assert q.position_at(t) >= 14 and q.position_at(t - 1) < 14


def test_no_events_with_period_zero_or_before_start():
    p = Pacer(rate=48000, frame=4, period=0, playback=False)
    p.start(0)
    assert p.due_boundaries(NS) == [] and p.next_deadline(0) is None
    q = Pacer(rate=48000, frame=4, period=192, playback=False)
    assert q.due_boundaries(NS) == [] and q.next_deadline(0) is None


def test_playback_position_never_passes_the_written_octets():
    p = Pacer(rate=48000, frame=4, period=192, playback=True)
    p.start(0)
    assert p.position_at(10 * MS) == 0  # nothing written yet (E-07)
    p.add_written(1000 + 2, 10 * MS)  # 2 octets of a partial frame
    assert p.position_at(20 * MS) == 1000  # whole frames only
    assert p.next_deadline(20 * MS) == 20 * MS  # 1000 >= 192: due now
    p.reported = 960
    # 1152 > 1000: the next boundary waits for a WRITE, but the end of what was written is
    # reported first, so a draining frontend sees its last partial period played (D-06).
    assert p.next_deadline(20 * MS) == 20 * MS
    assert p.due_boundaries(20 * MS) == [1000]
    p.reported = 1000
    assert p.next_deadline(20 * MS) is None  # stalled and reported: until a WRITE
    assert p.due_boundaries(25 * MS) == []
    p.add_written(4000, 30 * MS)  # data arrives: playing resumes from now, not before
    assert p.position_at(30 * MS) == 1000
    assert p.position_at(31 * MS) == 1000 + 192


def make_channel(kind: str = "p"):
    mem, audio = FakeMemory(), FakeAudio()
    core = StreamCore(StreamInfo("s", kind, SPACE), mem, audio)
    ring_page = memoryview(bytearray(XEN_PAGE_SIZE))
    evt_page = memoryview(bytearray(XEN_PAGE_SIZE))
    front = FrontRing(ring_page)
    front.init_shared()
    consumer = EventConsumer(evt_page)
    back = BackRing(ring_page)
    back.attach()
    events = EventProducer(evt_page)
    events.attach()
    return StreamChannel(core, back, events), mem, front, consumer


def send(ch: StreamChannel, front: FrontRing, now: int, op: int, **fields) -> int:
    front.put_request(codec.encode_req(op, **fields))
    front.push_requests()
    ch.service(now)
    return codec.decode_resp(front.get_response()).status


def positions(consumer: EventConsumer) -> list[tuple[int, int]]:
    return [(e.id, e.position) for e in map(codec.decode_evt, consumer.take_all())]


def test_events_at_each_period_ids_continuous_across_open_close():
    ch, mem, front, consumer = make_channel("c")
    assert open_(ch.core, mem, buffer_sz=8192, period_sz=192) == 0  # 1 ms periods
    assert ch.flush_events(10 * MS) == 0  # before START: none (E-06)
    assert send(ch, front, 0, Op.TRIGGER, type=Trigger.START) == 0
    assert ch.flush_events(3 * MS) == 3
    assert positions(consumer) == [(0, 192), (1, 384), (2, 576)]
    assert send(ch, front, 3 * MS + MS // 2, Op.TRIGGER, type=Trigger.PAUSE) == 0
    assert ch.flush_events(50 * MS) == 0  # paused: none
    assert send(ch, front, 50 * MS, Op.TRIGGER, type=Trigger.START) == 0
    ch.flush_events(50 * MS + MS // 2)
    assert positions(consumer) == [(3, 768)]  # 3.5 ms played: boundary 4 at 768
    assert send(ch, front, 51 * MS, Op.TRIGGER, type=Trigger.STOP) == 0
    assert ch.flush_events(99 * MS) == 0  # stopped: none
    assert send(ch, front, 100 * MS, Op.CLOSE) == 0
    assert ch.flush_events(200 * MS) == 0  # closed: none
    # a new OPEN: positions restart (since OPEN), ids do not (E-04)
    assert open_(ch.core, mem, buffer_sz=8192, period_sz=384) == 0
    assert send(ch, front, 300 * MS, Op.TRIGGER, type=Trigger.START) == 0
    ch.flush_events(304 * MS)  # 2 ms periods
    assert positions(consumer) == [(4, 384), (5, 768)]


def test_no_events_when_period_is_zero():
    ch, mem, front, _ = make_channel("c")
    assert open_(ch.core, mem, buffer_sz=8192, period_sz=0) == 0
    assert send(ch, front, 0, Op.TRIGGER, type=Trigger.START) == 0
    assert ch.flush_events(NS) == 0 and ch.core.next_deadline(NS) is None


def test_playback_events_follow_written_data():
    ch, mem, front, consumer = make_channel("p")
    assert open_(ch.core, mem, buffer_sz=8192, period_sz=192) == 0
    assert send(ch, front, 0, Op.TRIGGER, type=Trigger.START) == 0
    assert ch.flush_events(5 * MS) == 0  # nothing written: position stays 0 (E-07)
    assert send(ch, front, 5 * MS, Op.WRITE, offset=0, length=400) == 0
    ch.flush_events(10 * MS)
    # capped at the 400 octets written; 400 itself is reported as the drain point (D-06)
    assert positions(consumer) == [(0, 192), (1, 384), (2, 400)]
    assert ch.flush_events(20 * MS) == 0  # stalled and reported: nothing more until a WRITE
    assert send(ch, front, 20 * MS, Op.WRITE, offset=400, length=400) == 0
    ch.flush_events(40 * MS)
    assert positions(consumer) == [(3, 576), (4, 768), (5, 800)]  # boundaries resume


def test_full_event_ring_coalesces_and_keeps_ids_gap_free():
    ch, mem, front, consumer = make_channel("c")
    assert open_(ch.core, mem, buffer_sz=8192, period_sz=4) == 0  # one frame a period
    assert send(ch, front, 0, Op.TRIGGER, type=Trigger.START) == 0
    assert ch.flush_events(NS // 48000 * 100) == 63  # ring full, never overwritten (B-13)
    assert ch.flush_events(NS) == 0 and ch.blocked(NS)
    first = positions(consumer)
    assert [i for i, _ in first] == list(range(63))
    assert ch.flush_events(NS) == 63  # room again: the last one carries the newest position
    later = positions(consumer)
    assert [i for i, _ in later] == list(range(63, 126))
    assert later[-1][1] == 48000 * 4
    assert all(b > a for (_, a), (_, b) in itertools.pairwise(later))
