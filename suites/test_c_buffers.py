"""Area C: OPEN/CLOSE and buffer sharing (clauses.md §4 C), against the supervised backend.
Every offered configuration opens; invalid OPENs, hostile page directories (cyclic, too
short, too long, gref 0, revoked, read-only, granted to another domain), transfer bounds at,
beyond and wrapping past the buffer end, CLOSE in any state, OPEN while open, and
``period_sz`` 0.

Clauses of the area NOT tested here, and why:

* SND-C-01, C-02, C-03, C-05, C-06, C-07, C-08 [FE]: what the frontend sends and how it
  lays out the directory; the reference frontend's own tests cover them. The backend's side
  of C-02/C-05 is judged through C-04/C-15 here.
* SND-C-10 [REF, BE] (playback data consumed by the time WRITE is answered): what reaches
  the sink is not visible from the frontend side; the WRITE statuses are judged in area D
  (``test_write_in_every_open_state``) and the audio content by the audio oracle tests.
"""

from __future__ import annotations

import itertools

import pytest

from harness.certify.outcomes import not_applicable
from harness.frontend.hostile import (
    NO_SUCH_DOMID,
    DirShape,
    OpenParams,
    call,
    hostile_buffer,
    open_with,
    pick_open_params,
    wait_until,
)
from harness.frontend.stream import FrontendStream
from harness.frontend.violations import BUFFER_STILL_MAPPED, EVENT_WITHOUT_PERIOD
from harness.judge.evidence import backend_maps
from harness.judge.streams import closed, stream_of
from protocol_models.constants import PCM_FORMATS, XEN_PAGE_SIZE, XENSND_PAGE_DIR_GREFS, Op

BUFFER = 4 * XEN_PAGE_SIZE  # four buffer pages: room for a gref in the middle


def params(s: FrontendStream, **kw) -> OpenParams:
    return pick_open_params(s.config.hw, buffer_bytes=BUFFER, **kw)


def status(r) -> str:
    return "no response" if r is None else r.status


def still_usable(s: FrontendStream, clause: str = "SND-C-14") -> None:
    """A valid OPEN and CLOSE succeed (whatever the case did before)."""
    p = params(s)
    r = s.open(*p.args())
    assert r.ok, f"{clause}: a valid OPEN afterwards: expected status 0, got {r.status}"
    assert s.close().ok


def mapped_of(sup, refs) -> list[int]:
    """Which of the frontend's ``refs`` the backend domain maps now (sim accounting)."""
    return sorted({m.ref for m in backend_maps(sup)} & set(refs))


@pytest.mark.clause("SND-C-14")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_every_offered_configuration_opens(backend_case, kind):
    """OPEN succeeds for every format (of fixed frame size), every listed rate and both
    channel bounds the card's configuration offers for the stream."""
    s = closed(stream_of(backend_case, kind))
    hw = s.config.hw
    fmts = sorted(f for f in hw.formats if PCM_FORMATS[f].width)
    rates = sorted(hw.rates) or [hw.rate_min, hw.rate_max]
    chans = sorted({hw.channels_min, hw.channels_max})
    failed = []
    for fmt, rate, ch in itertools.product(fmts, rates, chans):
        frame = PCM_FORMATS[fmt].frame_size(ch)
        period = max(1, min(BUFFER, hw.buffer_bytes_max) // (4 * frame)) * frame
        r = s.open(rate, fmt, ch, 4 * period, period)
        if not r.ok:
            failed.append(f"{fmt.name}/{rate}/{ch}: {r.status}")
        s.close()
    assert not failed, f"SND-C-14: OPEN inside the configured space failed: {failed}"


@pytest.mark.clause("SND-C-12")
def test_close_when_not_open_succeeds(backend_case):
    """CLOSE on a stream that is not open (twice in a row) is answered with status 0, as
    Linux sends it from hw_free even when no OPEN succeeded."""
    s = stream_of(backend_case, "p")
    for i in range(2):
        r = s.close()
        assert r is not None and r.ok, f"SND-C-12: CLOSE #{i + 1} when not open: got {status(r)}"


@pytest.mark.clause("SND-C-12")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_close_unmaps_the_buffer(backend_case, backend_supervisor, kind):
    """By the time CLOSE is answered the backend no longer maps any buffer page."""
    s = closed(stream_of(backend_case, kind))
    p = params(s)
    assert s.open(*p.args()).ok
    refs = list(s.shbuf.buf_grefs) if s.shbuf is not None else []
    before = len(s.violations)
    assert s.close().ok
    mapped = [v for v in s.violations[before:] if v.kind is BUFFER_STILL_MAPPED]
    assert not mapped, f"SND-C-12: {mapped[0]}"
    left = mapped_of(backend_supervisor, refs)
    assert not left, f"SND-C-12: buffer grefs {left} still mapped after the CLOSE response"


@pytest.mark.clause("SND-C-13")
def test_open_while_open_replaces_the_buffer(backend_case, backend_supervisor):
    """A second OPEN without CLOSE (Linux hw_params twice) succeeds and the backend lets go
    of the first buffer, whose grants the frontend already revoked."""
    s = closed(stream_of(backend_case, "p"))
    p = params(s)
    assert s.open(*p.args()).ok
    old = list(s.shbuf.buf_grefs) if s.shbuf is not None else []
    r = s.open(*p.args())
    assert r.ok, f"SND-C-13: OPEN while open: expected status 0, got {r.status}"
    left = wait_until(lambda: not mapped_of(backend_supervisor, old), 1.0)
    still = mapped_of(backend_supervisor, old)
    assert s.close().ok
    assert left, f"SND-C-13: the first buffer's grefs {still} are still mapped"


BOUNDS = {  # (offset, length) as functions of buffer_sz
    "straddles-end": lambda b: (b - 4, 8),
    "at-end": lambda b: (b, 4),
    "beyond-end": lambda b: (b + XEN_PAGE_SIZE, 4),
    "length-over-buffer": lambda b: (0, b + 4),
    "offset-wraps-u32": lambda b: (0xFFFFFFF0, 0x20),
    "length-wraps-u32": lambda b: (64, 0xFFFFFFFF),
}


@pytest.mark.clause("SND-C-09")
@pytest.mark.parametrize("kind", ["p", "c"])
@pytest.mark.parametrize("where", sorted(BOUNDS))
def test_transfer_out_of_bounds_is_rejected(backend_case, kind, where):
    """READ/WRITE whose region is not inside [0, buffer_sz) fails with a negative status,
    while the regions touching the first and last octet are accepted (playback)."""
    s = closed(stream_of(backend_case, kind))
    p = params(s)
    assert s.open(*p.args()).ok
    op = Op.WRITE if kind == "p" else Op.READ
    try:
        if kind == "p":
            for off, n in ((0, p.buffer_sz), (p.buffer_sz - p.frame, p.frame)):
                r = call(s, op, offset=off, length=n)
                assert r is not None and r.ok, (
                    f"SND-C-09: WRITE({off}, {n}) inside the {p.buffer_sz}-octet buffer: "
                    f"expected 0, got {status(r)}")
        off, n = BOUNDS[where](p.buffer_sz)
        r = call(s, op, offset=off, length=n)
        assert r is not None and r.status_code < 0, (
            f"SND-C-09: {op.name}(offset {off:#x}, length {n:#x}) on a {p.buffer_sz}-octet "
            f"buffer: expected a negative status, got {status(r)}")
    finally:
        s.close()


@pytest.mark.clause("SND-C-09")
@pytest.mark.parametrize("kind", ["p", "c"])
def test_transfer_without_open_is_rejected(backend_case, kind):
    """READ/WRITE on a stream that is not open fails with a negative status."""
    s = closed(stream_of(backend_case, kind))
    op = Op.WRITE if kind == "p" else Op.READ
    r = call(s, op, offset=0, length=64)
    assert r is not None and r.status_code < 0, (
        f"SND-C-09: {op.name} without OPEN: expected a negative status, got {status(r)}")


INVALID_OPEN = {
    "buffer_sz-0": lambda p: {"buffer_sz": 0},
    "gref_directory-0": lambda p: {"gref_directory": 0},
    "period-over-buffer": lambda p: {"period_sz": p.buffer_sz + p.frame},
    "channels-0": lambda p: {"pcm_channels": 0},
    "format-unknown": lambda p: {"pcm_format": 0xFE},
    "rate-0": lambda p: {"pcm_rate": 0},
}


@pytest.mark.clause("SND-C-15")
@pytest.mark.parametrize("what", sorted(INVALID_OPEN))
def test_invalid_open_is_rejected(backend_case, what):
    """An OPEN with one invalid field (buffer_sz 0, gref_directory 0, period_sz larger than
    buffer_sz, 0 channels, an unknown format, rate 0) gets a negative status, and the
    stream stays usable."""
    s = closed(stream_of(backend_case, "p"))
    p = params(s)
    with hostile_buffer(s, p.buffer_sz) as buf:
        r = open_with(s, buf, p, **INVALID_OPEN[what](p))
        assert r is not None and r.status_code < 0, (
            f"SND-C-15: OPEN with {what}: expected a negative status, got {status(r)}")
    still_usable(s, "SND-C-15")


@pytest.mark.clause("SND-E-02", "SND-C-01")
def test_period_zero_means_no_events(backend_case):
    """With OPEN.period_sz 0 the stream plays (WRITE and START succeed) and no CUR_POS
    event arrives."""
    s = closed(stream_of(backend_case, "p"))
    p = params(s)
    assert s.open(p.rate, p.fmt, p.channels, p.buffer_sz, 0).ok
    before = len(s.events)
    seen = len(s.violations)
    assert s.write(0, bytes(p.buffer_sz)).ok
    assert s.trigger("START").ok
    played = p.buffer_sz / p.bytes_per_second
    s.wait_for(lambda: len(s.events) > before, min(played + 0.1, 0.5))
    got = len(s.events) - before
    s.trigger("STOP")
    assert s.close().ok
    bad = [v for v in s.violations[seen:] if v.kind is EVENT_WITHOUT_PERIOD]
    assert got == 0 and not bad, f"SND-E-02: period_sz 0: expected no CUR_POS, got {got}"


MUST_FAIL = {
    "short": dict(shape=DirShape.SHORT),
    "gref0": dict(shape=DirShape.GREF0),
    "revoked-buffer": dict(shape=DirShape.REVOKED_BUFFER),
    "revoked-dir": dict(shape=DirShape.REVOKED_DIR),
    "granted-to-another-domain": dict(grantee=NO_SUCH_DOMID),
}


@pytest.mark.clause("SND-C-04", "SND-G-07")
@pytest.mark.parametrize("what", sorted(MUST_FAIL))
def test_unmappable_directory_is_rejected(backend_case, what):
    """An OPEN whose directory does not lead to ceil(buffer_sz/4096) buffer pages the
    backend can map (a gref missing or 0, a grant ended, pages granted to another domain)
    gets a negative status, and the stream stays usable."""
    s = closed(stream_of(backend_case, "p"))
    p = params(s)
    kw = dict(MUST_FAIL[what])
    with hostile_buffer(s, p.buffer_sz, kw.pop("shape", DirShape.VALID), **kw) as buf:
        r = open_with(s, buf, p)
        assert r is not None and r.status_code < 0, (
            f"SND-C-04: OPEN with a {what} directory: expected a negative status, got "
            f"{status(r)}")
    still_usable(s)


@pytest.mark.clause("SND-C-04", "SND-G-07")
def test_read_only_buffer_is_not_written(backend_case):
    """Capture buffer pages granted read-only cannot be mapped read/write: the OPEN or the
    READ that would write into them fails with a negative status (never a crash)."""
    s = closed(stream_of(backend_case, "c"))
    p = params(s)
    with hostile_buffer(s, p.buffer_sz, readonly=True) as buf:
        r = open_with(s, buf, p)
        steps = [f"OPEN {status(r)}"]
        if r is not None and r.ok:
            s.trigger("START")
            rd = call(s, Op.READ, offset=0, length=p.period_sz)
            steps.append(f"READ {status(rd)}")
            failed = rd is not None and rd.status_code < 0
        else:
            failed = r is not None and r.status_code < 0
        assert failed, f"SND-C-04: read-only capture buffer: {', '.join(steps)}"
    still_usable(s)


@pytest.mark.clause("SND-C-04", "SND-G-07")
@pytest.mark.parametrize("shape", [DirShape.CYCLIC, DirShape.LONG], ids=lambda x: x.value)
def test_overlong_or_cyclic_directory_is_bounded(backend_case, backend_supervisor, shape):
    """A directory chain that goes on after the last needed gref (back to itself, or to one
    more page) is answered in time with the directory pages mapped a bounded number of
    times (never walked forever), and the stream stays usable."""
    s = closed(stream_of(backend_case, "p"))
    p = params(s)
    with hostile_buffer(s, p.buffer_sz, shape) as buf:
        r = open_with(s, buf, p)
        dirs = set(buf.dir_grefs)
        maps = [m for m in backend_maps(backend_supervisor, history=True) if m.ref in dirs]
    assert r is not None, f"SND-G-07: OPEN with a {shape.value} directory was not answered"
    limit = 2 * (len(dirs) + 1)
    assert len(maps) <= limit, (f"SND-C-04: {shape.value} directory of {len(dirs)} page(s): "
                                f"mapped {len(maps)} times, expected at most {limit}")
    still_usable(s)


@pytest.mark.clause("SND-C-04")
@pytest.mark.parametrize("shape", [DirShape.CYCLIC, DirShape.LONG], ids=lambda x: x.value)
def test_overlong_or_cyclic_directory_status(backend_case, observe, shape):
    """The status of an OPEN whose directory continues after the last needed gref (the
    backend SHOULD reject it; one that ignores the extra pages is harmless)."""
    s = closed(stream_of(backend_case, "p"))
    p = params(s)
    with hostile_buffer(s, p.buffer_sz, shape) as buf:
        r = open_with(s, buf, p)
    observe(f"OPEN status with a {shape.value} directory", status(r))


@pytest.mark.clause("SND-C-02", "SND-C-04")
def test_multi_page_directory(backend_case):
    """A buffer needing two directory pages (more than 1023 pages) is followed through
    gref_dir_next_page: OPEN succeeds and the last octet can be written."""
    s = closed(stream_of(backend_case, "p"))
    hw = s.config.hw
    need = (XENSND_PAGE_DIR_GREFS + 1) * XEN_PAGE_SIZE
    if hw.buffer_bytes_max < need:
        not_applicable(f"buffer-size {hw.buffer_bytes_max} < {need}: the card allows no "
                       "buffer needing a second directory page")
    p = pick_open_params(hw, buffer_bytes=need, periods=2)
    r = s.open(*p.args())
    assert r.ok, f"SND-C-04: OPEN of a {p.buffer_sz}-octet buffer: got {r.status}"
    w = call(s, Op.WRITE, offset=p.buffer_sz - p.frame, length=p.frame)
    assert s.close().ok
    assert w is not None and w.ok, f"SND-C-04: WRITE of the last frame: got {status(w)}"


@pytest.mark.clause("SND-C-11")
def test_read_fills_the_region_before_answering(backend_case):
    """A capture READ answered with status 0 has written the region: a sentinel pattern
    placed there by the frontend is gone."""
    s = closed(stream_of(backend_case, "c"))
    p = params(s)
    assert s.open(*p.args()).ok
    assert s.trigger("START").ok
    s.wait_for(lambda: (s.position or 0) >= p.period_sz, 1.0 + p.buffer_sz / p.bytes_per_second)
    sentinel = bytes([0xA5]) * p.period_sz
    assert s.shbuf is not None
    s.shbuf.write(0, sentinel)
    r = call(s, Op.READ, offset=0, length=p.period_sz)
    data = s.shbuf.read(0, p.period_sz)
    s.trigger("STOP")
    assert s.close().ok
    assert r is not None and r.ok, f"SND-C-11: READ of one period: got {status(r)}"
    assert data != sentinel, "SND-C-11: READ answered 0 but the region was not written"
