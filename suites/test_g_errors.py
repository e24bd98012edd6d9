"""(G) Error paths: SND-G-01..G-07 against the backend under test.

Requests a backend must refuse (no OPEN yet, unknown operations, malformed OPENs) are sent
raw (:func:`harness.judge.streams.raw_call`), so any field value can be expressed; statuses
are judged with :mod:`harness.judge.status`. That malformed input never crashes or hangs
the backend (SND-G-07) is judged by the supervisor after every case (CRASH/HANG verdicts);
the cases here add what the frontend can see: an answer, with a proper status.

Not tested here:

* SND-G-02, G-03: frontend clauses (Linux's timeout and its reaction to an error status).
* SND-G-07, memory outside the granted buffer: not observable from the frontend on the
  simulated Xen beyond the grant accounting the supervisor checks (a sanitizer build of
  the backend reports it as a CRASH). Offset/length bounds and directory chains are area
  C's cases (SND-C-04, C-09).
* Platform failures (grant map at OPEN, event-channel notify, XenStore writes), backend
  restarts and the sound server dying: ``test_g_platform.py``; an idle backend's CPU:
  ``test_g_resources.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.certify.outcomes import not_applicable
from harness.frontend.errors import ConnectTimeout
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import Response
from harness.judge.status import failure_problem, status_problem
from harness.judge.streams import (
    RAW_ID_BASE,
    OpenParams,
    ensure_closed,
    pick_open_params,
    raw_call,
    raw_exchange,
    raw_opened,
)
from protocol_models import codec
from protocol_models.constants import XEN_PAGE_SIZE, XENSND_RING_SIZE, Op, PcmFormat, Trigger

#: Operation codes sndif does not define: the first unused one, and the largest.
UNKNOWN_OPS = (max(Op) + 1, 0x7F, 0xFF)
U32_MAX = 0xFFFF_FFFF

#: Malformed OPENs (SND-C-15, G-07): field overrides of a valid OPEN of the stream.
MALFORMED_OPENS: dict[str, Callable[[OpenParams], dict[str, int]]] = {
    "unknown-format": lambda p: {"pcm_format": len(PcmFormat)},
    "format-255": lambda p: {"pcm_format": 0xFF},
    "zero-channels": lambda p: {"pcm_channels": 0},
    "huge-channels": lambda p: {"pcm_channels": 0xFF},
    "zero-rate": lambda p: {"pcm_rate": 0},
    "huge-rate": lambda p: {"pcm_rate": U32_MAX},
    "zero-buffer": lambda p: {"buffer_sz": 0},
    "huge-buffer": lambda p: {"buffer_sz": U32_MAX},  # far more grefs than the directory
    "period-above-buffer": lambda p: {"period_sz": p.buffer_sz + p.frame},
    "zero-gref-directory": lambda p: {"gref_directory": 0},
}


def _stream(case) -> FrontendStream:
    """The card's first stream, not open (whatever an earlier case left)."""
    stream = case.dev.streams[0]
    ensure_closed(stream)
    return stream


def _params(stream: FrontendStream) -> OpenParams:
    p = pick_open_params(stream.config.hw)
    if p is None:
        not_applicable(f"stream {stream.path}: no configuration with a fixed frame size "
                       "and two periods in its buffer-size")
    return p


def _open_fields(p: OpenParams) -> dict[str, int]:
    return {"pcm_rate": p.rate, "pcm_format": int(p.fmt), "pcm_channels": p.channels,
            "buffer_sz": p.buffer_sz, "period_sz": p.period_sz}


def _pages(p: OpenParams) -> int:
    return -(-p.buffer_sz // XEN_PAGE_SIZE)


def _answered(resp: Response | None, what: str) -> Response:
    assert resp is not None, f"{what}: no response (SND-B-08: every request gets one)"
    return resp


# --- provocations: requests that must fail, on a stream that is not open -------------------

def _trigger_start(s: FrontendStream) -> Response | None:
    return raw_call(s, Op.TRIGGER, id=RAW_ID_BASE, type=int(Trigger.START))


def _write(s: FrontendStream) -> Response | None:
    return raw_call(s, Op.WRITE, id=RAW_ID_BASE, offset=0, length=64)


def _read(s: FrontendStream) -> Response | None:
    return raw_call(s, Op.READ, id=RAW_ID_BASE, offset=0, length=64)


def _unknown_op(s: FrontendStream) -> Response | None:
    return raw_call(s, UNKNOWN_OPS[0], id=RAW_ID_BASE)


def _open_unknown_format(s: FrontendStream) -> Response | None:
    p = _params(s)
    with raw_opened(s, pages=_pages(p), **{**_open_fields(p), "pcm_format": len(PcmFormat)}
                    ) as resp:
        return resp


def _query_nothing(s: FrontendStream) -> Response | None:
    return s.hw_param_query(formats=sum(f.mask for f in PcmFormat) & ~s.config.hw.formats_mask
                            or 1 << len(PcmFormat))


PROVOCATIONS: dict[str, Callable[[FrontendStream], Response | None]] = {
    "trigger-without-open": _trigger_start,
    "write-without-open": _write,
    "read-without-open": _read,
    "unknown-operation": _unknown_op,
    "open-unknown-format": _open_unknown_format,
    "query-for-nothing": _query_nothing,
}


@pytest.mark.clause("SND-G-01", "SND-G-05")
@pytest.mark.parametrize("what", PROVOCATIONS)
def test_status_is_zero_or_a_xen_errno(backend_case, what):
    """Every status is 0 or -XEN_Exx (a Xen errno a guest may see, clauses §1.4): never
    positive, never a host or sound-server error code leaking through."""
    resp = _answered(PROVOCATIONS[what](_stream(backend_case)), what)
    problem = status_problem(resp.status_code)
    assert problem is None, f"{what}: {problem}; expected 0 or -XEN_Exx (SND-G-01, G-05)"


@pytest.mark.clause("SND-G-04", "SND-B-08")
@pytest.mark.parametrize("op", UNKNOWN_OPS)
def test_unknown_operation_is_answered_with_an_error(backend_case, op):
    """A request with an unknown operation still gets one response, with its id and
    operation echoed and a negative status."""
    stream = _stream(backend_case)
    rid = RAW_ID_BASE + op
    resp = _answered(raw_call(stream, op, id=rid), f"operation {op}")
    assert (resp.id, resp.operation) == (rid, op), (
        f"operation {op} id {rid:#x}: response echoes id {resp.id:#x}, operation "
        f"{resp.operation} (SND-G-04)")
    assert resp.status_code < 0, (f"operation {op}: status {resp.status}, expected a "
                                  "negative status (SND-G-04)")


@pytest.mark.clause("SND-C-09", "SND-G-07")
@pytest.mark.parametrize("what", ["write-without-open", "read-without-open"])
def test_transfers_without_open_fail(backend_case, what):
    """READ and WRITE on a stream with no successful OPEN fail with -XEN_Exx (there is
    no buffer to transfer into or out of)."""
    resp = _answered(PROVOCATIONS[what](_stream(backend_case)), what)
    problem = failure_problem(resp.status_code)
    assert problem is None, f"{what}: {problem}; expected -XEN_Exx (SND-C-09)"


@pytest.mark.clause("SND-D-07")
def test_trigger_without_open_fails(backend_case):
    """TRIGGER on a stream that was never opened fails with a negative status."""
    resp = _answered(_trigger_start(_stream(backend_case)), "TRIGGER START without OPEN")
    problem = failure_problem(resp.status_code)
    assert problem is None, f"TRIGGER START without OPEN: {problem}; expected -XEN_Exx " \
        "(SND-D-07)"


@pytest.mark.clause("SND-C-15")
@pytest.mark.parametrize("what", MALFORMED_OPENS)
def test_malformed_open_is_refused(backend_case, what):
    """An OPEN with an impossible parameter (unknown format, 0 or 255 channels, rate 0
    or 2^32-1, buffer_sz 0 or beyond its directory, period_sz > buffer_sz, directory
    gref 0) is refused with -XEN_Exx."""
    stream = _stream(backend_case)
    p = _params(stream)
    fields = {**_open_fields(p), **MALFORMED_OPENS[what](p)}
    with raw_opened(stream, pages=_pages(p), **fields) as resp:
        resp = _answered(resp, f"OPEN {what}")
    problem = failure_problem(resp.status_code)
    assert problem is None, f"OPEN {what} {fields}: {problem}; expected -XEN_Exx (SND-C-15)"


@pytest.mark.clause("SND-G-01")
@pytest.mark.parametrize("what", MALFORMED_OPENS)
def test_open_answered_zero_really_opened(backend_case, what):
    """Status 0 means success: if a malformed OPEN is answered 0, the stream is open and
    takes START and STOP (a backend must not report success for a refused OPEN)."""
    stream = _stream(backend_case)
    p = _params(stream)
    fields = {**_open_fields(p), **MALFORMED_OPENS[what](p)}
    with raw_opened(stream, pages=_pages(p), **fields) as resp:
        resp = _answered(resp, f"OPEN {what}")
        if resp.status_code != 0:
            return  # refused: nothing claimed (the refusal is judged above)
        start = stream.trigger("START")
        stream.trigger("STOP")
    assert start.ok, (f"OPEN {what} {fields} answered 0, but START then answered "
                      f"{start.status}: the OPEN did not open the stream (SND-G-01)")


def _reserved_set(op: int, **fields: int) -> bytes:
    """A request of ``op`` with every reserved byte 0xFF (from the model's field names)."""
    c = codec.req_codec(op)
    raw = bytearray(c.encode(operation=op, **fields))
    for spec in c.fields:
        if "reserved" in spec.name:
            raw[spec.offset:spec.offset + spec.size] = b"\xff" * spec.size
    return bytes(raw)


@pytest.mark.clause("SND-G-07")
def test_reserved_bytes_set_do_not_break_the_backend(backend_case):
    """Requests whose reserved bytes are all set are answered (id echoed, status 0 or
    -XEN_Exx) and the stream is served normally afterwards."""
    stream = _stream(backend_case)
    hw = stream.config.hw
    requests = {
        "HW_PARAM_QUERY": _reserved_set(
            Op.HW_PARAM_QUERY, id=RAW_ID_BASE, formats=hw.formats_mask,
            rates_min=hw.rate_min, rates_max=hw.rate_max, channels_min=hw.channels_min,
            channels_max=hw.channels_max, buffer_min=1, buffer_max=U32_MAX, period_min=1,
            period_max=U32_MAX),
        "CLOSE": _reserved_set(Op.CLOSE, id=RAW_ID_BASE + 1),
        "TRIGGER STOP": _reserved_set(Op.TRIGGER, id=RAW_ID_BASE + 2, type=int(Trigger.STOP)),
    }
    problems = []
    for what, raw in requests.items():
        resp = raw_exchange(stream, raw)
        if resp is None:
            problems.append(f"{what}: no response")
            break  # not serving any more: the supervisor judges the hang
        if status_problem(resp.status_code):
            problems.append(f"{what}: status {resp.status}")
    assert not problems, f"requests with reserved bytes set (SND-G-07): {problems}"
    after = stream.hw_param_query()
    assert after.ok, (f"a plain HW_PARAM_QUERY afterwards answered {after.status}: the "
                      "backend no longer serves the stream normally (SND-G-07)")


@pytest.mark.clause("SND-G-06")
def test_ring_index_overflow_is_treated_as_frontend_closed(backend_case):
    """A req_prod more than a ring ahead of the responses (RING_REQUEST_PROD_OVERFLOW) is
    an unrecoverable frontend error: the backend tears the connection down as if the
    frontend had gone Closed, and serves it again once the frontend reconnects."""
    dev = backend_case.dev
    stream = _stream(backend_case)
    generation = dev.generation
    ch = stream.channel
    assert ch is not None, f"stream {stream.path} is not connected"
    lie = (ch.ring.rsp_prod + XENSND_RING_SIZE + 1) & U32_MAX
    stream.set_req_prod(lie)
    detail = ""
    try:
        dev.wait_connected(10.0, generation=generation + 1)
        reconnected = True
    except ConnectTimeout as exc:
        reconnected, detail = False, str(exc)
        dev.close()  # the ring is corrupt: the supervisor reconnects for the next case
    assert reconnected, (f"req_prod set to {lie}, {XENSND_RING_SIZE + 1} past rsp_prod: "
                         f"expected the backend to tear the connection down (SND-G-06, "
                         f"A-19) and the frontend to reconnect; {detail}")
    resp = _stream(backend_case).hw_param_query()
    assert resp.ok, f"after reconnecting, HW_PARAM_QUERY answered {resp.status}"
