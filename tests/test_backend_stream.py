"""Sans-IO tests of the reference backend's stream core: every operation, error path,
trigger sequence and page-directory chain (SND-B-08/B-12, C-*, D-*, G-04, H-*)."""

from __future__ import annotations

import struct

import pytest

from harness.backends.reference.audio_io import sine_bytes
from harness.backends.reference.buffers import MapError
from harness.backends.reference.hw_space import StreamSpace
from harness.backends.reference.stream import (
    UNKNOWN_OP_STATUS,
    StreamCore,
    StreamInfo,
    StreamState,
)
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, Op, PcmFormat, Trigger, XenErrno

EINVAL, EBADF = -XenErrno.EINVAL, -XenErrno.EBADF
S16 = PcmFormat.S16_LE
SPACE = StreamSpace(formats=PcmFormat.U8.mask | S16.mask, rate_min=8000, rate_max=48000,
                    channels_min=1, channels_max=2, buffer_bytes_max=16 * 1024 * 1024)


# --- fakes ---------------------------------------------------------------------------------

class FakeBuffer:
    def __init__(self, memory: FakeMemory, grefs: list[int]) -> None:
        self.memory, self.grefs = memory, grefs
        self.data = bytearray(b"".join(memory.pages[g] for g in grefs))
        self.mapped = True

    @property
    def view(self) -> memoryview:
        assert self.mapped, "buffer used after unmap"
        return memoryview(self.data)

    def unmap(self) -> None:
        assert self.mapped, "double unmap"
        self.mapped = False
        self.memory.events.append(("unmap", tuple(self.grefs)))


class FakeMemory:
    """Grant refs -> pages of the 'frontend'. Directory pages are read, buffers mapped."""

    def __init__(self) -> None:
        self.pages: dict[int, bytes] = {}
        self.next_ref = 8
        self.buffers: list[FakeBuffer] = []
        self.events: list[tuple[str, tuple[int, ...]]] = []
        self.dir_reads: list[int] = []

    def add(self, data: bytes = b"") -> int:
        ref, self.next_ref = self.next_ref, self.next_ref + 1
        self.pages[ref] = data.ljust(XEN_PAGE_SIZE, b"\0")
        return ref

    def read_page(self, gref: int) -> bytes:
        self.dir_reads.append(gref)
        if gref not in self.pages:
            raise MapError(f"no grant {gref}")
        return self.pages[gref]

    def map_buffer(self, grefs):
        missing = [g for g in grefs if g not in self.pages]
        if missing:
            raise MapError(f"no grant {missing[0]}")
        buf = FakeBuffer(self, list(grefs))
        self.buffers.append(buf)
        self.events.append(("map", tuple(grefs)))
        return buf

    @property
    def live(self) -> list[FakeBuffer]:
        return [b for b in self.buffers if b.mapped]

    def directory(self, buffer_sz: int, fill: bytes = b"") -> tuple[int, list[int]]:
        """The Linux layout (C-03): directory pages chained, then the buffer pages."""
        n = -(-buffer_sz // XEN_PAGE_SIZE)
        data = [self.add(fill[i * XEN_PAGE_SIZE:(i + 1) * XEN_PAGE_SIZE]) for i in range(n)]
        chunks = [data[i:i + 1023] for i in range(0, n, 1023)] or [[]]
        refs = [self.next_ref + i for i in range(len(chunks))]
        for i, chunk in enumerate(chunks):
            nxt = refs[i + 1] if i + 1 < len(chunks) else 0
            assert self.add(codec.encode_page_directory(nxt, chunk)) == refs[i]
        return refs[0], data


class FakeSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.data += data

    def close(self) -> None:
        self.closed = True


class FakeAudio:
    def __init__(self, freq: float = 1000.0) -> None:
        self.sinks: list[FakeSink] = []
        self.freq = freq

    def open_sink(self, name, fmt, rate, channels):
        self.sinks.append(FakeSink())
        return self.sinks[-1]

    def open_source(self, name, fmt, rate, channels):
        from harness.backends.reference.audio_io import SineSource
        return SineSource(fmt, rate, channels, self.freq)


def make(kind: str = "p", space: StreamSpace = SPACE) -> tuple[StreamCore, FakeMemory,
                                                                  FakeAudio]:
    mem, audio = FakeMemory(), FakeAudio()
    return StreamCore(StreamInfo("s", kind, space), mem, audio), mem, audio


def req(core: StreamCore, op: int, now: int = 0, **fields) -> tuple[int, object]:
    raw = codec.encode_req(op, **fields) if op in codec.REQ_CODECS else \
        codec.UNKNOWN_REQ.encode(operation=op, **fields)
    resp = codec.decode_resp(core.handle(raw, now))
    assert resp.id == fields.get("id", 0) and resp.operation == op  # B-08: echoed
    return resp.status, resp


def open_(core: StreamCore, mem: FakeMemory, buffer_sz: int = 8192, period_sz: int = 1024,
          fmt: int = S16, rate: int = 48000, channels: int = 2, fill: bytes = b"",
          **kw) -> int:
    gref, _ = mem.directory(buffer_sz, fill)
    status, _ = req(core, Op.OPEN, pcm_rate=rate, pcm_format=fmt, pcm_channels=channels,
                    buffer_sz=buffer_sz, gref_directory=kw.pop("gref_directory", gref),
                    period_sz=period_sz, **kw)
    return status


# --- OPEN / CLOSE ------------------------------------------------------------------------

def test_open_maps_exactly_the_buffer_pages_and_close_unmaps_before_answering():
    core, mem, _ = make()
    assert open_(core, mem, buffer_sz=3 * 4096 + 4) == 0
    assert core.state == StreamState.OPENED
    (buf,) = mem.live
    assert len(buf.grefs) == 4  # ceil(buffer_sz / 4096), C-02
    status, _ = req(core, Op.CLOSE, id=7)
    assert status == 0 and mem.live == [] and core.state == StreamState.CLOSED  # C-12


def test_close_when_not_open_is_ok_and_idempotent():
    core, mem, _ = make()
    assert req(core, Op.CLOSE)[0] == 0
    assert open_(core, mem) == 0
    assert req(core, Op.CLOSE)[0] == 0
    assert req(core, Op.CLOSE)[0] == 0
    assert mem.events == [("map", tuple(mem.buffers[0].grefs)),
                          ("unmap", tuple(mem.buffers[0].grefs))]


def test_open_while_open_is_implicit_close_then_open():
    core, mem, audio = make()
    assert open_(core, mem) == 0
    first = mem.live[0]
    assert open_(core, mem, buffer_sz=4096, period_sz=0) == 0  # C-13
    assert not first.mapped and len(mem.live) == 1 and mem.live[0] is not first
    assert audio.sinks[0].closed and not audio.sinks[1].closed


def test_failed_open_while_open_leaves_the_stream_closed():
    core, mem, _ = make()
    assert open_(core, mem) == 0
    assert open_(core, mem, rate=1) == EINVAL
    assert core.state == StreamState.CLOSED and mem.live == []


@pytest.mark.parametrize("kw, why", [
    ({"fmt": PcmFormat.S32_LE}, "format not configured"),
    ({"fmt": 200}, "unknown format"),
    ({"fmt": PcmFormat.MPEG}, "no frame size"),
    ({"rate": 7999}, "rate below"),
    ({"rate": 48001}, "rate above"),
    ({"channels": 0}, "zero channels"),
    ({"channels": 3}, "too many channels"),
    ({"buffer_sz": 0}, "empty buffer"),
    ({"buffer_sz": 4097}, "buffer not whole frames"),
    ({"period_sz": 8192 + 4}, "period > buffer"),
    ({"period_sz": 1026}, "period not whole frames"),
    ({"gref_directory": 0}, "gref 0 (C-05)"),
    ({"gref_directory": 4242}, "directory not granted"),
])
def test_invalid_open_is_rejected(kw, why):
    core, mem, _ = make()
    expected = -XenErrno.EFAULT if why == "directory not granted" else EINVAL
    assert open_(core, mem, **kw) == expected, why
    assert core.state == StreamState.CLOSED and mem.live == []


def test_buffer_size_limit_is_enforced():
    space = StreamSpace(S16.mask, 48000, 48000, 2, 2, 65536)
    core, mem, _ = make(space=space)
    assert open_(core, mem, buffer_sz=65536 + 4) == EINVAL  # AMBIG-21: enforced
    assert open_(core, mem, buffer_sz=65536) == 0


def test_reserved_fields_are_ignored():
    core, mem, _ = make()
    assert open_(core, mem, reserved=b"\xff" * 5, open_reserved=0xFFFF,
                 reserved_tail=b"\xee" * 36) == 0  # B-12 / AMBIG-4
    st, _ = req(core, Op.TRIGGER, type=Trigger.START, reserved=b"\x01" * 5,
                reserved_tail=b"\x55" * 55)
    assert st == 0


def test_unknown_operation_echoes_id_and_op_with_enosys():
    core, _, _ = make()
    for op in (10, 0x7F, 0xFF):
        status, _ = req(core, op, id=0xBEEF)
        assert status == UNKNOWN_OP_STATUS == -XenErrno.ENOSYS  # G-04, AMBIG-8


# --- page directory chains (C-02..C-05) ----------------------------------------------

def _chain(mem: FakeMemory, pages: list[list[int]], nexts: list[int]) -> list[int]:
    refs = [mem.add(codec.encode_page_directory(n, p)) for p, n in zip(pages, nexts,
                                                                         strict=True)]
    return refs


def test_short_chain_is_rejected():
    core, mem, _ = make()
    data = [mem.add() for _ in range(3)]
    (d,) = _chain(mem, [data[:2]], [0])  # 3 pages needed, 2 listed, next = 0
    assert open_(core, mem, buffer_sz=3 * 4096, gref_directory=d) == EINVAL


def test_chain_continuing_after_the_last_gref_is_rejected():
    core, mem, _ = make()
    data = [mem.add() for _ in range(2)]
    extra = mem.add(codec.encode_page_directory(0, []))
    (d,) = _chain(mem, [data], [extra])
    assert open_(core, mem, buffer_sz=2 * 4096, gref_directory=d) == EINVAL
    assert mem.live == []


def test_cyclic_chain_is_rejected_without_looping():
    core, mem, _ = make()
    data = [mem.add() for _ in range(1023)]
    a = mem.next_ref
    b = a + 1
    _chain(mem, [data, data], [b, a])  # a -> b -> a, never enough grefs
    assert open_(core, mem, buffer_sz=3000 * 4096, gref_directory=a) == EINVAL
    assert len(mem.dir_reads) == 2  # each page read once


def test_gref_zero_inside_the_directory_is_rejected():
    core, mem, _ = make()
    (d,) = _chain(mem, [[mem.add(), 0]], [0])
    assert open_(core, mem, buffer_sz=2 * 4096, gref_directory=d) == EINVAL


def test_multi_page_directory_over_1023_grefs():
    space = StreamSpace(S16.mask, 48000, 48000, 2, 2, 16 * 1024 * 1024)
    core, mem, _ = make(space=space)
    buffer_sz = 2100 * 4096  # 3 directory pages: 1023 + 1023 + 54
    gref, data = mem.directory(buffer_sz)
    st, _ = req(core, Op.OPEN, pcm_rate=48000, pcm_format=S16, pcm_channels=2,
                buffer_sz=buffer_sz, gref_directory=gref, period_sz=0)
    assert st == 0
    assert mem.live[0].grefs == data
    assert len(mem.dir_reads) == 3


def test_unused_slots_of_the_last_directory_page_are_ignored():
    core, mem, _ = make()
    data = [mem.add() for _ in range(2)]
    page = bytearray(codec.encode_page_directory(0, data))
    struct.pack_into("<I", page, 4 + 4 * 2, 0xDEAD)  # garbage after the needed grefs
    d = mem.add(bytes(page))
    assert open_(core, mem, buffer_sz=2 * 4096, gref_directory=d) == 0
    assert mem.live[0].grefs == data


# --- READ / WRITE (C-08..C-11, AMBIG-10) -------------------------------------------------

def test_write_appends_the_exact_region_to_the_sink():
    core, mem, audio = make()
    assert open_(core, mem) == 0
    mem.live[0].data[100:108] = b"ABCDEFGH"
    mem.live[0].data[0:4] = b"wxyz"
    assert req(core, Op.WRITE, offset=100, length=8)[0] == 0
    assert req(core, Op.WRITE, offset=0, length=4)[0] == 0
    mem.live[0].data[0:4] = b"late"  # changed after the answer: not taken (C-10)
    assert bytes(audio.sinks[0].data) == b"ABCDEFGHwxyz"


def test_read_fills_the_region_with_the_next_capture_octets():
    core, mem, _ = make("c")
    assert open_(core, mem, rate=48000, channels=2) == 0
    assert req(core, Op.READ, offset=4000, length=96)[0] == 0
    assert req(core, Op.READ, offset=0, length=50)[0] == 0
    data = mem.live[0].data
    assert bytes(data[4000:4096]) == sine_bytes(S16, 2, 48000, 1000.0, 0, 96)
    assert bytes(data[0:50]) == sine_bytes(S16, 2, 48000, 1000.0, 96, 50)
    # frame 12 by hand: 0.5 * 32767 * sin(2 pi 1000 * 12 / 48000) in both channels
    v = round(0.5 * 32767 * 1.0)  # 12/48 of a 1 kHz period at 48 kHz is a quarter turn
    assert bytes(data[4000 + 48:4000 + 52]) == struct.pack("<hh", v, v)


@pytest.mark.parametrize("offset, length", [(8192, 0), (8191, 2), (0, 8193),
                                            (0xFFFFFFFF, 1), (1, 0xFFFFFFFF)])
def test_out_of_bounds_rw_is_rejected(offset, length):
    core, mem, audio = make()
    assert open_(core, mem) == 0
    assert req(core, Op.WRITE, offset=offset, length=length)[0] == EINVAL
    assert audio.sinks[0].data == b""


def test_rw_up_to_the_last_octet_is_fine():
    core, mem, audio = make()
    assert open_(core, mem) == 0
    assert req(core, Op.WRITE, offset=8190, length=2)[0] == 0
    assert req(core, Op.WRITE, offset=0, length=8192)[0] == 0
    assert len(audio.sinks[0].data) == 8194


@pytest.mark.parametrize("op", [Op.READ, Op.WRITE, Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE,
                                Op.UNMUTE])
def test_rw_without_open_fails(op):
    core, mem, _ = make()
    assert req(core, op, offset=0, length=4)[0] == EBADF
    assert open_(core, mem) == 0 and req(core, Op.CLOSE)[0] == 0
    assert req(core, op, offset=0, length=4)[0] == EBADF


def test_direction_mismatch_is_rejected():
    core, mem, _ = make("c")
    assert open_(core, mem) == 0
    assert req(core, Op.WRITE, offset=0, length=4)[0] == EINVAL
    core, mem, _ = make("p")
    assert open_(core, mem) == 0
    assert req(core, Op.READ, offset=0, length=4)[0] == EINVAL


# --- volume / mute (H-01..H-05, AMBIG-9) ---------------------------------------------

def test_set_then_get_volume_round_trips_per_channel():
    core, mem, _ = make()
    assert open_(core, mem, channels=2) == 0
    buf = mem.live[0].data
    struct.pack_into("<ii", buf, 64, -6000, 1500)
    assert req(core, Op.SET_VOLUME, offset=64, length=8)[0] == 0
    buf[128:136] = b"\xaa" * 8
    assert req(core, Op.GET_VOLUME, offset=128, length=8)[0] == 0
    assert struct.unpack_from("<ii", buf, 128) == (-6000, 1500)


def test_volume_starts_at_0db_and_short_length_is_rejected():
    core, mem, _ = make()
    assert open_(core, mem, channels=2) == 0
    buf = mem.live[0].data
    buf[0:8] = b"\xff" * 8
    assert req(core, Op.GET_VOLUME, offset=0, length=8)[0] == 0
    assert bytes(buf[0:8]) == bytes(8)
    assert req(core, Op.SET_VOLUME, offset=0, length=4)[0] == EINVAL
    assert req(core, Op.GET_VOLUME, offset=8190, length=8)[0] == EINVAL


@pytest.mark.parametrize("width", [1, 4])
def test_mute_flags_in_either_width(width):
    core, mem, _ = make()
    assert open_(core, mem, channels=2) == 0
    buf = mem.live[0].data
    buf[0:2 * width] = (b"\x00" * width) + (b"\x01" + b"\x00" * (width - 1))
    assert req(core, Op.MUTE, offset=0, length=2 * width)[0] == 0
    assert core.opened is not None and core.opened.muted == [False, True]
    buf[0:2 * width] = b"\x01" * (2 * width)
    assert req(core, Op.UNMUTE, offset=0, length=2 * width)[0] == 0
    assert core.opened.muted == [False, False]


def test_mute_with_an_ambiguous_length_is_rejected():
    core, mem, _ = make()
    assert open_(core, mem, channels=2) == 0
    assert req(core, Op.MUTE, offset=0, length=3)[0] == EINVAL


# --- triggers (D-01..D-08) ---------------------------------------------------------------

def trig(core: StreamCore, t: int, now: int = 0) -> int:
    return req(core, Op.TRIGGER, now, type=t)[0]


def test_trigger_without_open_fails():
    core, _, _ = make()
    for t in Trigger:
        assert trig(core, t) == EBADF


def test_linux_sequences():
    core, mem, _ = make()
    assert open_(core, mem) == 0
    # D-03/D-04: START, STOP, START again without a new OPEN
    for t, state in [(Trigger.START, "RUNNING"), (Trigger.STOP, "OPENED"),
                     (Trigger.START, "RUNNING"), (Trigger.PAUSE, "PAUSED"),
                     (Trigger.START, "RUNNING"),  # D-05: START while PAUSED
                     (Trigger.PAUSE, "PAUSED"), (Trigger.RESUME, "RUNNING"),
                     (Trigger.PAUSE, "PAUSED"), (Trigger.STOP, "OPENED")]:
        assert trig(core, t) == 0, (t, state)
        assert core.state.name == state


def test_senseless_triggers_fail_but_leave_the_stream_usable():
    core, mem, _ = make()
    assert open_(core, mem) == 0
    assert trig(core, Trigger.PAUSE) == EINVAL
    assert trig(core, Trigger.RESUME) == EINVAL
    assert trig(core, 4) == EINVAL and trig(core, 0xFF) == EINVAL  # D-01
    assert core.state == StreamState.OPENED
    assert trig(core, Trigger.START) == 0
    assert trig(core, Trigger.START) == 0  # idempotent (AMBIG-7)
    assert trig(core, 9) == EINVAL and core.state == StreamState.RUNNING


def test_close_while_running_stops_and_unmaps():
    core, mem, _ = make()
    assert open_(core, mem) == 0 and trig(core, Trigger.START) == 0
    assert req(core, Op.CLOSE)[0] == 0  # D-08
    assert core.state == StreamState.CLOSED and mem.live == []
    assert core.pending_events(10**12, 63) == []


def test_internal_errors_become_eio_not_crashes():
    class Broken(FakeAudio):
        def open_sink(self, *a):
            s = FakeSink()
            s.write = lambda data: (_ for _ in ()).throw(RuntimeError("boom"))
            return s

    mem = FakeMemory()
    core = StreamCore(StreamInfo("s", "p", SPACE), mem, Broken())
    assert open_(core, mem) == 0
    assert req(core, Op.WRITE, offset=0, length=4)[0] == -XenErrno.EIO
    assert req(core, Op.CLOSE)[0] == 0 and mem.live == []
