"""(F) HW_PARAM_QUERY negotiation: SND-F-01..F-07 against the backend under test.

Every case queries every stream of the card: first the space the stream's configuration
describes (what ALSA's first refine sends), then narrower requests derived from the answer,
then requests the card cannot satisfy. Answers are judged with :mod:`harness.judge.hw_query`.

Not tested here:

* SND-F-01, F-07: frontend clauses (what the request carries; which bits Linux sets).
"""

from __future__ import annotations

import pytest

from harness.certify.outcomes import not_applicable
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import Response
from harness.judge import hw_query as hq
from harness.judge.status import failure_problem
from harness.judge.streams import Pump, opened, pick_open_params
from protocol_models.constants import VSND_WAIT_BACK_MS, PcmFormat

#: Every format sndif defines (bits >= 25 are never set by Linux, SND-F-07).
ALL_FORMATS = sum(f.mask for f in PcmFormat)


def _streams(case) -> list[FrontendStream]:
    return list(case.dev.streams)


def _card_formats(stream: FrontendStream) -> int:
    return stream.config.hw.formats_mask


def _query(stream: FrontendStream, **space) -> Response:
    resp = stream.hw_param_query(**space)
    assert resp.latency_ms is not None and resp.latency_ms <= VSND_WAIT_BACK_MS, (
        f"HW_PARAM_QUERY answered after {resp.latency_ms} ms (SND-F-04: within 3 s)")
    return resp


def _first(stream: FrontendStream) -> Response:
    """The stream's configured space, as ALSA's first refine asks it; it must succeed
    (SND-F-03: any negative status fails hw_params for the Linux application)."""
    resp = _query(stream)
    assert resp.ok, (f"stream {stream.path}: HW_PARAM_QUERY of its configured space "
                     f"[{hq.describe(hq.request_space(resp))}] answered {resp.status}: "
                     "expected 0 (SND-F-03)")
    assert resp.hw_param is not None
    return resp


def _narrower(answer: hq.Space) -> list[dict[str, int]]:
    """Requests inside ``answer``: one format, one rate, the low channel count, the
    lower half of buffer and period ranges (each interval kept non-empty)."""
    out = []
    low_fmt = answer["formats"] & -answer["formats"]  # lowest bit set
    out.append({**answer, "formats": low_fmt})
    out.append({**answer, "rates_max": answer["rates_min"]})
    out.append({**answer, "channels_max": answer["channels_min"]})
    for name in ("buffer", "period"):
        lo, hi = hq.interval(answer, name)
        out.append({**answer, f"{name}_max": max(lo, (lo + hi) // 2)})
    return out


def _impossible(stream: FrontendStream, answer: hq.Space) -> list[tuple[str, dict[str, int]]]:
    """Requests nothing of the card can satisfy (each keeps the others satisfiable)."""
    hw = stream.config.hw
    out = []
    foreign = ALL_FORMATS & ~_card_formats(stream)
    if foreign:
        out.append(("formats the card lacks", {**answer, "formats": foreign}))
    out.append(("channels above channels-max",
                {**answer, "channels_min": hw.channels_max + 1,
                 "channels_max": hw.channels_max + 8}))
    out.append(("rates above the card's",
                {**answer, "rates_min": hw.rate_max + 1, "rates_max": 2 * hw.rate_max + 1}))
    return out


@pytest.mark.clause("SND-F-02", "SND-F-03")
def test_answers_lie_inside_the_request(backend_case):
    """A successful answer is a non-empty space (min <= max, some format) inside the
    request: every interval within the requested one, formats a subset of those asked
    for and of the card's."""
    problems = []
    for stream in _streams(backend_case):
        first = _first(stream)
        requests = [hq.request_space(first), *_narrower(first.hw_param)]
        for req in requests:
            resp = first if req is requests[0] else _query(stream, **hq.query_kwargs(req))
            if not resp.ok:
                continue  # a narrower request may be refused; F-06 covers refusals
            ans = resp.hw_param
            found = hq.empty_problems(ans) + hq.subset_problems(ans, req, _card_formats(stream))
            if found:
                problems.append(f"stream {stream.path}: asked [{hq.describe(req)}], got "
                                f"[{hq.describe(ans)}]: {'; '.join(found)}")
    assert not problems, "answers outside the request (SND-F-02):\n" + "\n".join(problems)


@pytest.mark.clause("SND-F-06")
def test_impossible_requests_are_refused(backend_case):
    """When nothing in the requested space is supported the answer is a negative status
    (-XEN_Exx), not a success."""
    problems = []
    for stream in _streams(backend_case):
        answer = _first(stream).hw_param
        for what, req in _impossible(stream, answer):
            resp = _query(stream, **hq.query_kwargs(req))
            bad = failure_problem(resp.status_code)
            if bad:
                problems.append(f"stream {stream.path}, {what} [{hq.describe(req)}]: {bad}"
                                + (f", answer [{hq.describe(resp.hw_param)}]"
                                   if resp.ok and resp.hw_param else ""))
    assert not problems, ("impossible requests not refused with -XEN_Exx (SND-F-06):\n"
                          + "\n".join(problems))


@pytest.mark.clause("SND-F-02")
def test_success_is_never_an_empty_space(backend_case):
    """Whatever is asked, an answer with status 0 describes at least one configuration
    inside the request and the card (an empty one makes ALSA fail with -EINVAL)."""
    problems = []
    for stream in _streams(backend_case):
        answer = _first(stream).hw_param
        for what, req in _impossible(stream, answer):
            resp = _query(stream, **hq.query_kwargs(req))
            if not resp.ok:
                continue
            found = (hq.empty_problems(resp.hw_param)
                     + hq.subset_problems(resp.hw_param, req, _card_formats(stream)))
            if found:
                problems.append(f"stream {stream.path}, {what}: status 0 with "
                                f"[{hq.describe(resp.hw_param)}]: {'; '.join(found)}")
    assert not problems, "successful answers describing no usable space (SND-F-02):\n" + \
        "\n".join(problems)


@pytest.mark.clause("SND-F-05")
def test_answers_are_deterministic_fixpoints(backend_case):
    """The same request gets the same answer, and re-querying with an answer returns it
    unchanged (a fixpoint), so ALSA's refine loop converges."""
    problems = []
    for stream in _streams(backend_case):
        first = _first(stream)
        again = _query(stream, **hq.query_kwargs(hq.request_space(first)))
        if again.status_code != first.status_code or again.hw_param != first.hw_param:
            problems.append(f"stream {stream.path}: same request, answers "
                            f"[{hq.describe(first.hw_param)}] then {again.status} "
                            f"[{hq.describe(again.hw_param or first.hw_param)}]")
        for req in [first.hw_param, *_narrower(first.hw_param)]:
            a1 = _query(stream, **hq.query_kwargs(req))
            if not a1.ok:
                continue
            a2 = _query(stream, **hq.query_kwargs(a1.hw_param))
            if a2.status_code != 0 or a2.hw_param != a1.hw_param:
                shown = hq.describe(a2.hw_param) if a2.ok and a2.hw_param else a2.status
                problems.append(f"stream {stream.path}: answer [{hq.describe(a1.hw_param)}] "
                                f"re-queried gives [{shown}]")
    assert not problems, "answers not deterministic / not a fixpoint (SND-F-05):\n" + \
        "\n".join(problems)


@pytest.mark.clause("SND-F-04")
def test_queries_valid_in_every_state_without_side_effects(backend_case):
    """A query is answered (status 0, within 3 s) before OPEN, while open, running,
    paused, stopped, and after CLOSE; it changes nothing: the open stream still takes WRITE/READ
    and triggers, and a running one keeps advancing."""
    stream = _streams(backend_case)[0]
    p = pick_open_params(stream.config.hw)
    if p is None:
        not_applicable(f"stream {stream.path}: no configuration with a fixed frame size "
                       "and two periods in its buffer-size")
    states: dict[str, str] = {}

    def query(state: str) -> None:
        resp = _query(stream)
        states[state] = resp.status

    query("before OPEN")
    with opened(stream, p):
        query("open")
        pump = Pump(stream, p)
        pump.step()  # a WRITE (playback) after the query must still work
        assert not pump.failures, (f"transfer after a query on the open stream answered "
                                   f"{pump.failures[0].status}: the query changed the stream "
                                   "(SND-F-04)")
        resp = stream.trigger("START")
        assert resp.ok, (f"START after a query on the open stream answered {resp.status}: "
                         "the query changed the stream (SND-F-04)")
        before = len(stream.events)
        pump.run(lambda: len(stream.events) > before, 1.0 + p.seconds(4 * p.period_sz))
        query("running")
        mark = len(stream.events)
        advanced = pump.run(lambda: len(stream.events) > mark, 1.0 + p.seconds(4 * p.period_sz))
        stream.trigger("PAUSE")  # whether PAUSE works is area D's question
        query("after PAUSE")
        stream.trigger("STOP")
        query("stopped")
        assert advanced, (
            "no CUR_POS after a query on the running stream: the query stopped it "
            "(SND-F-04)")
        resp = stream.trigger("START")
        assert resp.ok, f"START after STOP and a query answered {resp.status} (SND-F-04)"
        stream.trigger("STOP")
    query("after CLOSE")
    bad = {s: v for s, v in states.items() if v != "OK"}
    assert not bad, (f"queries of the configured space must succeed in every state "
                     f"(SND-F-04): {bad}")

