"""Rows: request round trips, frontend to backend and back, through the reference
frontend's typed API and its raw pipelining API.

* one outstanding HW_PARAM_QUERY (a typed call: build, ring, notify, the backend's
  answer, the I/O thread's match, the caller woken) against the raw socketpair
  ping-pong, in interleaved windows (target >= 0.3 of raw);
* the same against snd_be (C), printed;
* the ring kept full: 32 requests pushed, 32 answers collected, per request, against one
  outstanding (target >= 3x).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.frontend.stream import FrontendStream
from harness.world.spec import WorldSpec, world_spec
from harness.world.world import World, running_world
from protocol_models import codec
from protocol_models.constants import XENSND_RING_SIZE, Op

from .table import Row, check, unavailable
from .timing import interleaved_rates, raw_pinger

TARGET_SINGLE = 0.3
TARGET_PIPELINED = 3.0
HW_FIELDS = ("formats", "rates_min", "rates_max", "channels_min", "channels_max",
             "buffer_min", "buffer_max", "period_min", "period_max")


@contextlib.contextmanager
def playback_world(spec: WorldSpec) -> Iterator[tuple[World, FrontendStream]]:
    """A connected world of ``spec`` and its first playback stream (stopped after)."""
    with tempfile.TemporaryDirectory(prefix="sndif-bench-") as out, \
            running_world(spec, out) as world:
        assert world.dev is not None
        stream = next((s for s in world.dev.streams if s.type == "p"), world.dev.streams[0])
        yield world, stream


@contextlib.contextmanager
def playback_stream(spec: WorldSpec) -> Iterator[FrontendStream]:
    """The first playback stream of a connected world of ``spec`` (stopped after)."""
    with playback_world(spec) as (_, stream):
        yield stream


def _cpu_s(stat: str) -> float | None:
    """utime+stime (s) from a /proc stat file, or None (not Linux, gone)."""
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_profile(world: World, stream: FrontendStream, seconds: float) -> dict[str, float]:
    """CPU microseconds per typed request of the calling thread, the frontend's I/O
    thread and the backend process, over ``seconds`` of one-outstanding requests: where
    a round trip's time goes (the raw ping-pong spends ~none of it)."""
    dev = world.dev
    thread = getattr(dev, "_thread", None)
    tid = getattr(thread, "native_id", None)
    io_stat = f"/proc/self/task/{tid}/stat" if tid else ""
    be_stat = f"/proc/{world.backend.pid}/stat" if world.backend is not None else ""
    c0, i0, b0 = time.thread_time(), _cpu_s(io_stat), _cpu_s(be_stat)
    w0, n = time.monotonic(), 0
    while time.monotonic() - w0 < seconds:
        stream.hw_param_query()
        n += 1
    c1, i1, b1 = time.thread_time(), _cpu_s(io_stat), _cpu_s(be_stat)
    out = {"requests": float(n), "wall_us": (time.monotonic() - w0) / n * 1e6,
           "caller_cpu_us": (c1 - c0) / n * 1e6}
    if i0 is not None and i1 is not None:
        out["io_thread_cpu_us"] = (i1 - i0) / n * 1e6
    if b0 is not None and b1 is not None:
        out["backend_cpu_us"] = (b1 - b0) / n * 1e6
    return out


def single_step(stream: FrontendStream) -> Callable[[], None]:
    def step() -> None:
        stream.hw_param_query()
    return step


def pipelined_step(stream: FrontendStream, depth: int = XENSND_RING_SIZE
                   ) -> Callable[[], None]:
    """One step = ``depth`` HW_PARAM_QUERY requests pushed at once, all answers taken."""
    first = stream.hw_param_query()
    assert first.hw_param is not None
    fields: dict[str, Any] = dict(first.hw_param)
    raws = [codec.encode_req(Op.HW_PARAM_QUERY, id=0x8000 + i, **fields)
            for i in range(depth)]

    def step() -> None:
        stream.send_many(raws)
        got = stream.collect(depth, 5.0)
        if len(got) != depth:
            raise TimeoutError(f"{depth - len(got)} of {depth} pipelined requests "
                               "unanswered within 5 s")
    return step


def _snd_be_spec() -> WorldSpec | str:
    """The world of snd_be under PulseAudio, or why it cannot be had here."""
    try:
        from harness.peers.snd_be import build_snd_be

        binary = build_snd_be().binary
    except Exception as exc:  # no tarballs, no compiler: the row says so
        return f"snd_be cannot be built: {exc}"
    return world_spec(backend=f"exec:{binary}", audio="pulse", unique_id="pulse<{device}>")


def run(quick: bool = False, *, with_snd_be: bool = True) -> list[Row]:
    seconds = 1.0 if quick else 6.0
    rows: list[Row] = []
    with playback_world(WorldSpec()) as (world, stream), raw_pinger() as raw:
        pipe = pipelined_step(stream)
        rates = interleaved_rates({"single": single_step(stream), "raw": raw,
                                   "pipelined": pipe}, seconds * 1.5, batch=5)
        prof = cpu_profile(world, stream, seconds / 3)
    single, raw_rate = rates["single"], rates["raw"]
    piped = rates["pipelined"] * XENSND_RING_SIZE
    rows.append(Row("request round trip, reference backend, 1 outstanding", single, "/s",
                    reference=raw_rate, reference_name="raw socketpair ping-pong",
                    ratio=single / raw_rate, target=f">= {TARGET_SINGLE:g} of raw",
                    holds=check(single / raw_rate >= TARGET_SINGLE),
                    note="typed HW_PARAM_QUERY; CPU per request: " + ", ".join(
                        f"{k.removesuffix('_cpu_us').replace('_', ' ')} {v:.0f} us"
                        for k, v in prof.items() if k.endswith("_cpu_us"))
                    + f" (raw round trip: {1e6 / raw_rate:.0f} us of wall); the answer is "
                      "taken by the frontend's I/O thread and handed to the caller",
                    extra={"cpu_profile": prof}))
    rows.append(Row(f"pipelined requests, ring kept full ({XENSND_RING_SIZE} deep)", piped,
                    "/s", reference=single, reference_name="1 outstanding",
                    ratio=piped / single, target=f">= {TARGET_PIPELINED:g}x",
                    holds=check(piped / single >= TARGET_PIPELINED)))
    figure = "request round trip, snd_be (C), 1 outstanding"
    spec = _snd_be_spec() if with_snd_be else "skipped (--quick)"
    if isinstance(spec, str):
        rows.append(unavailable(figure, "/s", spec, reference_name="raw socketpair ping-pong"))
        return rows
    try:
        with playback_stream(spec) as stream, raw_pinger() as raw:
            rates = interleaved_rates({"single": single_step(stream), "raw": raw}, seconds,
                                      batch=5)
    except Exception as exc:  # a missing PulseAudio, a backend that did not connect
        rows.append(unavailable(figure, "/s", f"{type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}",
                                reference_name="raw socketpair ping-pong"))
        return rows
    rows.append(Row(figure, rates["single"], "/s", reference=rates["raw"],
                    reference_name="raw socketpair ping-pong",
                    ratio=rates["single"] / rates["raw"], target="printed"))
    return rows
