"""Row: pacing precision, the harness's receive timestamp of each CUR_POS event against the
reference backend's send timestamp of it (target: p99 error <= 1 ms).

The reference backend runs with ``--trace`` (it records each event right after writing it
to the event page, before the notify); the frontend stamps each event as its I/O thread
consumes it. Both clocks are CLOCK_MONOTONIC of this machine, so the difference is the
whole delivery path: notify, the sim's event channel, the I/O thread's wake-up, the
consume. A capture stream is used: its positions advance with the clock alone (a
playback stream's stop at the written octets, SND-E-07).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness import trace as tracemod
from harness.backends.reference.launch import reference_argv
from harness.world.backend_spec import BackendSpec
from harness.world.spec import WorldSpec
from harness.world.world import running_world
from protocol_models.constants import PcmFormat

from .table import Row, check, unavailable
from .timing import percentile

TARGET_MS = 1.0
FIGURE = "pacing: harness receive vs backend send of CUR_POS, p99 error"


def measure(seconds: float, period_frames: int = 240) -> list[float]:
    """Delivery delays (ms) of the CUR_POS events of ``seconds`` of 48 kHz capture."""
    with tempfile.TemporaryDirectory(prefix="sndif-bench-pacing-") as out:
        be_trace = Path(out) / "be-trace.jsonl"
        argv = [*reference_argv(domid=0, frontend_domid=1, devid=0, out_dir=out,
                                python=sys.executable), "--trace", str(be_trace)]
        spec = WorldSpec(backend=BackendSpec("exec", tuple(argv)))
        with running_world(spec, out) as world:
            assert world.dev is not None
            stream = next(s for s in world.dev.streams if s.type == "c")
            frame = 4  # S16_LE stereo
            stream.open(48000, PcmFormat.S16_LE, 2, 65536, period_frames * frame)
            stream.trigger("start")
            time.sleep(seconds)
            stream.trigger("stop")
            stream.close()
            received = {ev.raw: ev.t_ns for ev in stream.events}
        sent = {bytes.fromhex(r.fields["raw"]): r.t_ns for r in tracemod.load(be_trace)
                if r.kind == "evt" and isinstance(r.fields.get("raw"), str)}
    return [(received[raw] - t) / 1e6 for raw, t in sent.items() if raw in received]


def run(quick: bool = False) -> list[Row]:
    seconds = 1.0 if quick else 5.0
    try:
        delays = measure(seconds)
    except Exception as exc:  # a world that did not come up: say why, keep the bench going
        return [unavailable(FIGURE, "ms", f"{type(exc).__name__}: {exc}",
                            target=f"<= {TARGET_MS:g} ms")]
    if not delays:
        return [unavailable(FIGURE, "ms", "no CUR_POS event matched",
                            target=f"<= {TARGET_MS:g} ms")]
    p99 = percentile(delays, 0.99)
    return [Row(FIGURE, p99, "ms", target=f"<= {TARGET_MS:g} ms", holds=check(p99 <= TARGET_MS),
                note=f"{len(delays)} events over {seconds:g} s (5 ms periods); median "
                     f"{percentile(delays, 0.5):.3f} ms, max {max(delays):.3f} ms",
                extra={"events": len(delays), "p50_ms": percentile(delays, 0.5),
                       "max_ms": max(delays)})]
