"""Rows of the simulated Xen's own figures (``sndif-harness bench sim``): XenStore round
trips, event-channel round trips next to the raw socketpair (Python and the C replacement
library), grant map/unmap. All printed: the targets of the event channel are in the
``ring`` group, measured through the platform seam."""

from __future__ import annotations

from collections.abc import Callable

from .table import Row


def run(quick: bool = False, seconds: float | None = None,
        out: Callable[[str], None] | None = None) -> list[Row]:
    # the simulator's bench lives with the simulator (it reaches its internals)
    from harness.xen.sim import bench

    secs = seconds if seconds is not None else (0.2 if quick else 1.0)
    f = bench.run(secs, out=out if out is not None else (lambda line: None))
    raw = f.get("raw_socketpair_round_trips_per_s")
    rows: list[Row] = []
    for key, figure in (("xenstore_read_per_s", "sim: xenstore read round trips"),
                        ("xenstore_write_per_s", "sim: xenstore write round trips")):
        if key in f:
            rows.append(Row(figure, f[key], "/s"))
    for key, figure in (("evtchn_round_trips_per_s",
                         "sim: event-channel notify round trips (Python)"),
                        ("c_evtchn_round_trips_per_s",
                         "sim: event-channel notify round trips (C <-> Python)")):
        if key in f:
            rows.append(Row(figure, f[key], "/s", reference=raw,
                            reference_name="raw socketpair ping-pong",
                            ratio=f[key] / raw if raw else None))
    if "map16_s" in f:
        rows.append(Row("sim: map a 16-page buffer", f["map16_s"] * 1e6, "us"))
        rows.append(Row("sim: unmap a 16-page buffer", f["unmap16_s"] * 1e6, "us"))
    return rows
