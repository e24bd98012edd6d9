"""Rows: how cost grows with the number of guests. 1, 4, 16 and 64 guests, each with a vsnd
device, one reference backend process serving them all, a stream of every guest running
at once; per step the per-guest request latency p99 and the harness's CPU per guest,
each against the 1-guest step (target: growth at most linear, i.e. the figure at N
guests at most N times the 1-guest one).

Each guest is a domain of the simulated Xen with its own XenStore connection and its own
reference frontend (one I/O thread each, as one Linux guest has one); a thread per guest
sends a HW_PARAM_QUERY every ``interval`` seconds (a control load), while its capture
stream runs (capture is paced by the clock alone; a playback stream would stall at
the written data, SND-E-07). Guests are added step by step: the guests of a step stay up
for the next.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.reference.launch import reference_argv
from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import FrontendError
from harness.toolstack.apply import remove_device, wait_for_state, write_plan
from harness.toolstack.plan import plan_device, plan_removal
from harness.world.backend_proc import BackendProcess
from harness.world.spec import DEFAULT_CARD
from harness.xen.api import Domain, Platform
from harness.xen.platforms import open_platform
from protocol_models.constants import PcmFormat
from protocol_models.xenbus import XenbusState

from .table import Row, check, unavailable
from .timing import percentile

STEPS = (1, 4, 16, 64)
QUICK_STEPS = (1, 4)
_ROOT = str(Path(__file__).resolve().parents[2])
_PERIOD = 16384  # octets: 85 ms at 48 kHz stereo S16, ~12 events a second per guest


@dataclass
class Guest:
    domid: int
    domain: Domain
    dev: FrontendDevice
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Step:
    guests: int
    p99_ms: float
    cpu_ms_per_s: float  # harness CPU per guest, ms per second of wall time
    backend_cpu_ms_per_s: float | None
    requests: int
    errors: int


def _proc_cpu_s(pid: int) -> float | None:
    """utime+stime of ``pid`` in seconds (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ScaleWorld:
    """One backend, growing guests (see the module docstring)."""

    def __init__(self, platform: Platform, out: str) -> None:
        self.platform = platform
        self.out = out
        self.guests: list[Guest] = []
        platform.ensure_domain(0, "backend")
        self.tool = platform.domain(0)
        self.log_fd = os.open(Path(out) / "backend.log",
                              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        env = platform.process_env(0)
        env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
        argv = reference_argv(domid=0, frontend_domid=0, devid=0, out_dir=out,
                              python=sys.executable)
        # serve every guest: no --frontend-domid / --devid filter
        i = argv.index("--frontend-domid")
        del argv[i:i + 4]
        self.backend = BackendProcess(argv, env, self.log_fd, out)

    def add_guest(self) -> Guest:
        domid = len(self.guests) + 1
        self.platform.ensure_domain(domid, f"guest{domid}")
        plan = plan_device(DEFAULT_CARD, domid, 0, 0)
        write_plan(self.tool.store, plan)
        ok, last = wait_for_state(self.tool.store, plan.be_state_path,
                                  {XenbusState.InitWait}, 20.0)
        if not ok:
            raise RuntimeError(f"guest {domid}: backend state {last!r}, not InitWait")
        domain = self.platform.domain(domid)
        dev = FrontendDevice(domain, 0)
        guest = Guest(domid, domain, dev)
        self.guests.append(guest)  # before the wait: close() takes it down on failure
        dev.wait_connected(30.0)
        stream = next(s for s in dev.streams if s.type == "c")
        stream.open(48000, PcmFormat.S16_LE, 2, 65536, _PERIOD)
        stream.trigger("start")
        return guest

    def measure(self, seconds: float, interval: float) -> Step:
        stop = threading.Event()
        for g in self.guests:
            g.latencies_ms, g.errors = [], 0

        def load(g: Guest) -> None:
            stream = next(s for s in g.dev.streams if s.type == "c")
            nxt = time.monotonic()
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    stream.hw_param_query(timeout_ms=5000)
                    g.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                except FrontendError:
                    g.errors += 1
                nxt += interval
                stop.wait(max(0.0, nxt - time.monotonic()))

        threads = [threading.Thread(target=load, args=(g,), daemon=True)
                   for g in self.guests]
        be0 = _proc_cpu_s(self.backend.pid)
        c0, w0 = time.process_time(), time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(10.0)
        cpu, wall = time.process_time() - c0, time.monotonic() - w0
        be1 = _proc_cpu_s(self.backend.pid)
        n = len(self.guests)
        lat = [x for g in self.guests for x in g.latencies_ms]
        be = None if be0 is None or be1 is None else (be1 - be0) / wall / n * 1e3
        return Step(n, percentile(lat, 0.99) if lat else float("nan"),
                    cpu / wall / n * 1e3, be, len(lat), sum(g.errors for g in self.guests))

    def close(self) -> None:
        """Every frontend closed at once (each close waits for its backend, ~1 s), then
        the backend stopped and the devices removed."""
        guests, self.guests = self.guests, []
        with ThreadPoolExecutor(max_workers=max(1, min(64, len(guests)))) as pool:
            list(pool.map(lambda g: g.dev.close(timeout=5.0), guests))
        self.backend.stop(3.0)
        for g in guests:
            with contextlib.suppress(Exception):
                remove_device(self.tool.store, plan_removal(g.domid, 0, 0), timeout=0.0)
            with contextlib.suppress(Exception):
                g.domain.close()
        with contextlib.suppress(Exception):
            self.tool.close()
        os.close(self.log_fd)


def measure(steps: Sequence[int], seconds: float, interval: float = 0.1) -> list[Step]:
    out: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="sndif-bench-scale-") as tmp, \
            open_platform("sim") as platform:
        world = ScaleWorld(platform, tmp)
        try:
            for n in steps:
                while len(world.guests) < n:
                    world.add_guest()
                time.sleep(0.3)  # let the new streams' first events settle
                out.append(world.measure(seconds, interval))
        finally:
            world.close()
    return out


def rows_of(steps: Sequence[Step], interval: float) -> list[Row]:
    rows: list[Row] = []
    base = steps[0]
    for s in steps:
        lat_ratio = s.p99_ms / base.p99_ms if base.p99_ms else None
        cpu_ratio = s.cpu_ms_per_s / base.cpu_ms_per_s if base.cpu_ms_per_s else None
        ref = f"{base.guests} guest"
        lim = f"<= {s.guests}x (linear)"
        rows.append(Row(f"scale {s.guests:>2} guests: request latency p99 per guest",
                        s.p99_ms, "ms", reference=base.p99_ms, reference_name=ref,
                        ratio=lat_ratio, target=lim,
                        holds=check(None if lat_ratio is None else lat_ratio <= s.guests),
                        note=(f"{s.requests} requests ({1 / interval:g}/s per guest), "
                              f"{s.errors} failed" if s.errors or s is base else ""),
                        extra={"requests": s.requests, "errors": s.errors}))
        rows.append(Row(f"scale {s.guests:>2} guests: harness CPU per guest",
                        s.cpu_ms_per_s, "ms/s", reference=base.cpu_ms_per_s,
                        reference_name=ref, ratio=cpu_ratio, target=lim,
                        holds=check(None if cpu_ratio is None else cpu_ratio <= s.guests),
                        note=("" if s.backend_cpu_ms_per_s is None or s is not steps[-1]
                              else "the backend's CPU per guest, per step (ms/s): "
                              + ", ".join(f"{x.guests}: {x.backend_cpu_ms_per_s:.1f}"
                                          for x in steps
                                          if x.backend_cpu_ms_per_s is not None)),
                        extra={"backend_cpu_ms_per_s": s.backend_cpu_ms_per_s}))
    return rows


def run(quick: bool = False) -> list[Row]:
    steps = QUICK_STEPS if quick else STEPS
    seconds = 1.0 if quick else 4.0
    interval = 0.1
    try:
        measured = measure(steps, seconds, interval)
    except Exception as exc:  # a step that cannot be brought up: say why, go on
        return [unavailable("scale: guests with a device each, one backend", "ms",
                            f"{type(exc).__name__}: {exc}")]
    return rows_of(measured, interval)
