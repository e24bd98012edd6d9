"""``sndif-harness replay TRACE``: the frontend's side of a recorded trace sent again to a
backend, and where the backend's answers now differ from the recorded ones.

How it is replayed. The world is built as usual (``harness.world``) and the reference
frontend connected; then every recorded request goes out as its recorded 64 octets, on its
recorded stream, in the recorded order and never earlier than its recorded offset from the
first request (so that position events have the time to come as they did). A response
recorded before the next request is awaited before sending it (the frontend waited for
it too); pipelined requests go out pipelined. What cannot be sent as recorded is re-made:
an OPEN of a buffer the frontend had granted (the trace's note says so, or the backend
accepted it) gets a new buffer of the same size, and its new ``gref_directory`` replaces
the recorded one; ids and every other octet are kept. An OPEN with a directory the
trace does not show as the frontend's buffer (a hostile one, say) goes out with its
recorded ``gref_directory``, which names no buffer in the new world. XenStore operations
are not replayed (the connection is made anew), nor the data of WRITE (not in the trace).

What is compared, and how:

* **Responses, exactly**: every field of the 64 octets by its model name (``id``,
  ``operation``, ``reserved``, ``status`` and the body: all of HW_PARAM_QUERY's answer, the
  reserved tail of the others), both decoded with the layout of the recorded one.
  Nothing in a response depends on timing. A response missing within ``timeout`` where
  one was recorded (a crash or a hang), one that comes where none was recorded, and one
  that answers no request are differences too.
* **Position events, with tolerance**: per stream, the events between two consecutive
  requests (a window) are compared with the recorded ones of the same window. Exactly:
  the event ``type`` and whether Linux would drop it (an event-id gap). With tolerance,
  because the replay cannot run on the recorded clock: the number of events in a window
  (one more or fewer, plus a quarter of the recorded count: scheduling moves events
  across a window's edge; the same for the stream's whole trace) and each position,
  paired in order: within one period of the OPEN in force per event the counts differ
  by (at least one; exactly when it asked for no events), as a pairing shifted by one
  event is one period off.
  Event ids are not compared: they count from the connection, which is a new one.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.capture.recording import Exchange, Recording
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import Response
from harness.world.world import World
from protocol_models import codec, sndif
from protocol_models.constants import Evt, Op

#: Requests in a row left unanswered by a live backend before the replay gives up on it.
MAX_UNANSWERED = 3
#: After the last request: time for the last events and late responses to come.
SETTLE_S = 0.3


@dataclass(frozen=True)
class Difference:
    """Where the backend's answer now differs from the recorded one."""

    t: float  # seconds since the trace's first record (the recorded answer's time)
    stream: str
    request: str  # "#3 HW_PARAM_QUERY id=2": what it answered
    what: str  # "the response to", "position events after", ...
    fields: tuple[tuple[str, str, str], ...]  # (field, recorded, now)
    detail: str = ""  # the request in full, or why nothing came

    def line(self) -> str:
        diffs = "; ".join(f"{f} recorded {r}, now {n}" for f, r, n in self.fields)
        return f"{self.t:10.6f} s  {self.stream:<5} {self.what} {self.request}: {diffs}"

    def block(self) -> str:
        out = [f"first difference: {self.t:.6f} s into the trace, stream {self.stream}, "
               f"{self.what} {self.request}"]
        if self.detail:
            out.append(f"  ({self.detail})")
        width = max(len(f) for f, _, _ in self.fields)
        for f, r, n in self.fields:
            out += [f"  {f:<{width}}  recorded {r}", f"  {'':<{width}}  now      {n}"]
        return "\n".join(out)


@dataclass
class Outcome:
    differences: list[Difference]
    sent: int
    responses: int
    events: int


def request_name(ex: Exchange) -> str:
    try:
        name = Op(ex.operation).name
    except ValueError:
        name = f"operation {ex.operation}"
    return f"#{ex.n} {name} id={ex.id}"


def _named_fields(raw: bytes, layers: Sequence[type[Any]]) -> list[tuple[str, Any, str]]:
    """(name, value, shown) of every field of ``raw`` as ``layers`` lay it out."""
    head = layers[0](raw[:sndif.HEADER_SIZE])
    body = layers[1](raw[sndif.HEADER_SIZE:])
    return [(f.name, layer.getfieldval(f.name), str(f.i2repr(layer, layer.getfieldval(f.name))))
            for layer in (head, body) for f in layer.fields_desc]


def compare_response(recorded: bytes | None, now: bytes | None, timeout: float
                     ) -> list[tuple[str, str, str]]:
    """The fields that differ, by name (empty: the same)."""
    if recorded is None and now is None:
        return []
    if recorded is None or now is None:
        missing = f"no response within {timeout:g} s"
        one = recorded if recorded is not None else now
        assert one is not None
        shown = {True: missing, False: sndif.XenSndResp(one).summary()}
        return [("message", shown[recorded is None], shown[now is None])]
    rec = sndif.XenSndResp(recorded)
    layers = (sndif.XenSndResp, type(rec.payload))
    return [(name, rshow, nshow) for (name, rv, rshow), (_, nv, nshow)
            in zip(_named_fields(recorded, layers), _named_fields(now, layers), strict=True)
            if rv != nv]


class _Responses:
    """The responses of one stream as they come, taken by id (first come, first taken)."""

    def __init__(self, stream: FrontendStream) -> None:
        self.stream = stream
        self.got: list[Response] = []

    def take(self, req_id: int, timeout: float) -> Response | None:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.got:
                if r.id == req_id:
                    self.got.remove(r)
                    return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.got += self.stream.collect(1, left)

    def rest(self) -> list[Response]:
        self.got += self.stream.collect(64, 0)
        out, self.got = self.got, []
        return out


class Replay:
    """One replay of ``recording`` in a started ``world``; ``report`` sees each
    difference as it is found."""

    def __init__(self, recording: Recording, world: World, *, timeout: float,
                 report: Callable[[Difference], None] = lambda d: None) -> None:
        if world.dev is None:
            raise RuntimeError("the frontend is not connected")
        self.rec = recording
        self.world = world
        self.dev = world.dev
        self.timeout = timeout
        self.report = report
        self.differences: list[Difference] = []
        self.sent_ns: dict[int, int] = {}  # exchange n -> when the replay sent it
        self.responses = 0

    def _differ(self, d: Difference) -> None:
        self.differences.append(d)
        self.report(d)

    def run(self) -> Outcome:
        from harness.shell.helpers import Shell  # its share_buffer grants a stream's buffer

        grant = Shell(self.world, self.dev.trace, echo=lambda _: None).share_buffer
        streams = {p: self.dev.stream(p) for p in self.rec.streams}
        pending = {p: _Responses(s) for p, s in streams.items()}
        first = self.rec.exchanges[0].t_ns
        start = time.monotonic_ns()
        # the recorded order of sending requests and of receiving their answers
        steps = sorted([(ex.t_ns, 0, ex) for ex in self.rec.exchanges]
                       + [(ex.response_t_ns, 1, ex) for ex in self.rec.exchanges
                          if ex.response_t_ns is not None], key=lambda s: (s[0], s[1]))
        unanswered = 0
        for i, (_, is_answer, ex) in enumerate(steps):
            if not is_answer:
                time.sleep(max(0.0, (start + ex.t_ns - first - time.monotonic_ns()) / 1e9))
                raw = ex.request
                if ex.remake_buffer:
                    req = codec.decode_req(raw)
                    gref = grant(streams[ex.stream], req.buffer_sz)
                    raw = codec.req_codec(Op.OPEN).pack_record(req._replace(gref_directory=gref))
                self.sent_ns[ex.n] = time.monotonic_ns()
                streams[ex.stream].send_raw(raw)
                continue
            got = pending[ex.stream].take(ex.id, self.timeout)
            self._answer(ex, got)
            if got is not None:
                unanswered = 0
                continue
            unanswered += 1
            status = self.world.exit_status()
            if status is not None or unanswered >= MAX_UNANSWERED:
                self._give_up(ex, steps[i + 1:], status)
                break
        else:
            self._settle(first, start, pending)
        self._compare_events(first, start)
        events = sum(len(s.events) for s in streams.values())
        return Outcome(sorted(self.differences, key=lambda d: d.t), len(self.sent_ns),
                       self.responses, events)

    def _answer(self, ex: Exchange, got: Response | None) -> None:
        self.responses += got is not None
        diff = compare_response(ex.response, None if got is None else got.raw, self.timeout)
        if diff:
            t = ex.response_t_ns if ex.response_t_ns is not None else ex.t_ns
            self._differ(Difference(self.rec.seconds(t), ex.stream, request_name(ex),
                                    "the response to", tuple(diff),
                                    sndif.XenSndReq(ex.request).summary()))

    def _give_up(self, ex: Exchange, rest: Sequence[tuple[int, int, Exchange]],
                 status: int | None) -> None:
        from harness.world.backend_proc import status_text

        why = (f"the backend exited ({status_text(status)})" if status is not None else
               f"{MAX_UNANSWERED} requests in a row unanswered")
        left = sorted({e.n for _, _, e in rest if e.n not in self.sent_ns})
        t = ex.response_t_ns if ex.response_t_ns is not None else ex.t_ns
        self._differ(Difference(self.rec.seconds(t), ex.stream, request_name(ex),
                                "replay stopped at", (("backend", "answering", why),),
                                f"{len(left)} later request(s) not sent"))

    def _settle(self, first: int, start: int, pending: dict[str, _Responses]) -> None:
        """Wait out the recording's span (for its last events), then for the answers
        recorded as missing; whatever else came answers nothing recorded."""
        end = start + self.rec.end_ns - first
        time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9) + SETTLE_S)
        for ex in self.rec.exchanges:
            if ex.response is None:
                self._answer(ex, pending[ex.stream].take(ex.id, self.timeout))
        for path, responses in pending.items():
            for r in responses.rest():
                self._differ(Difference(self.rec.seconds(self.rec.end_ns), path,
                                        f"(id={r.id})", "a response to no request",
                                        (("message", "none",
                                          sndif.XenSndResp(r.raw).summary()),)))

    # -- position events ----------------------------------------------------------------

    def _compare_events(self, first: int, start: int) -> None:
        rec_by_stream: dict[str, list[tuple[int, bytes, bool]]] = defaultdict(list)
        for e in self.rec.events:
            rec_by_stream[e.stream].append((e.t_ns, e.raw, e.linux_skips))
        for path in self.rec.streams:
            s = self.dev.stream(path)
            with s.cond:
                now = [(e.t_ns, e.raw, e.linux_skips) for e in s.events]
            exs = [ex for ex in self.rec.exchanges if ex.stream == path]
            rec_cuts = [ex.t_ns for ex in exs]
            now_cuts = [self.sent_ns.get(ex.n, 1 << 62) for ex in exs]
            rec_w = _windows(rec_by_stream[path], rec_cuts)
            now_w = _windows(now, now_cuts)
            total = compare_events(rec_by_stream[path], now, period=-1)
            if total:  # known at the trace's end; a window's difference says more
                self._differ(Difference(self.rec.seconds(self.rec.end_ns), path,
                                        "over the whole trace",
                                        "position events", tuple(total)))
            period = 0
            for k in range(len(exs) + 1):
                if k and exs[k - 1].operation == Op.OPEN:
                    period = int(codec.decode_req(exs[k - 1].request).period_sz)
                diff = compare_events(rec_w[k], now_w[k], period)
                if diff:
                    after = ("position events after", request_name(exs[k - 1])) if k else (
                        "position events", "before the first request")
                    t = rec_w[k][0][0] if rec_w[k] else (exs[k - 1].t_ns if k else first)
                    self._differ(Difference(self.rec.seconds(t), path, after[1], after[0],
                                            tuple(diff)))


def _windows(events: Sequence[tuple[int, bytes, bool]], cuts: Sequence[int]
             ) -> list[list[tuple[int, bytes, bool]]]:
    """Events split by the times requests were sent: window k follows request k."""
    out: list[list[tuple[int, bytes, bool]]] = [[] for _ in range(len(cuts) + 1)]
    for ev in events:
        out[sum(1 for c in cuts if c <= ev[0])].append(ev)
    return out


def compare_events(recorded: Sequence[tuple[int, bytes, bool]],
                   now: Sequence[tuple[int, bytes, bool]], period: int
                   ) -> list[tuple[str, str, str]]:
    """The first way the events of one window differ (see the module docstring);
    ``period`` -1: their number only."""
    slack = 1 + len(recorded) // 4
    if abs(len(now) - len(recorded)) > slack:
        return [("events", str(len(recorded)), f"{len(now)} (tolerance ±{slack})")]
    if period < 0:
        return []
    tolerance = period * max(1, abs(len(now) - len(recorded)))  # pairing shifted that much
    for i, ((_, rraw, rskip), (_, nraw, nskip)) in enumerate(zip(recorded, now, strict=False)):
        r, n = codec.decode_evt(rraw), codec.decode_evt(nraw)
        if r.type != n.type:
            return [(f"event {i + 1} type", _evt_type(r.type), _evt_type(n.type))]
        if rskip != nskip:
            drop = {True: "dropped by Linux (id gap)", False: "taken by Linux"}
            return [(f"event {i + 1}", drop[rskip], drop[nskip])]
        rpos, npos = getattr(r, "position", None), getattr(n, "position", None)
        if rpos is not None and npos is not None and abs(rpos - npos) > tolerance:
            return [(f"event {i + 1} position", str(rpos),
                     f"{npos} (tolerance ±{tolerance})")]
    return []


def _evt_type(value: int) -> str:
    try:
        return Evt(value).name
    except ValueError:
        return str(value)
