"""Figures of the simulated Xen, measured in one run (``sndif-harness bench sim``)."""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

from harness.procs import readline
from harness.rates import echo_process, interleaved_rates, raw_pinger, reap
from harness.xen.sim.runner import Sim, running_sim

_EVTCHN_ECHO = textwrap.dedent("""
    import sys
    from harness.xen.sim.client import SimEventChannels
    from harness.xen.sim.daemon import hypervisor_path
    import os
    ev = SimEventChannels(hypervisor_path(os.environ["XEN_SIM_DIR"], 1))
    q = ev.bind_interdomain(0, int(sys.argv[1]))
    print("bound", flush=True)
    while ev.wait(2.0):
        ev.notify(q)
    ev.close()
    """)

def _timed(seconds: float, step: Callable[[], object]) -> float:
    """Calls of ``step`` (its result is ignored) per second over about ``seconds``."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            step()
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


@contextlib.contextmanager
def evtchn_pinger(sim: Sim) -> Iterator[Callable[[], None]]:
    """A step that does one notify round trip with an echo process acting as domain 1."""
    ev = sim.domain(0, store=False).evtchn
    port = ev.alloc_unbound(1)
    child = echo_process([sys.executable, "-c", _EVTCHN_ECHO, str(port)], env=sim.env(1))
    try:
        if readline(child, 30.0) != "bound":
            raise RuntimeError("event-channel echo process failed")
        ev.wait(0)  # the bind message may wake the handle once; absorb it

        def step() -> None:
            ev.notify(port)
            if not ev.wait(5.0):
                raise TimeoutError("echo process stopped answering")

        yield step
    finally:
        ev.unbind(port)
        reap(child)


def map_unmap_seconds(sim: Sim, npages: int = 16, rounds: int = 200) -> tuple[float, float]:
    """Mean seconds to map and to unmap an ``npages`` buffer granted by domain 0 to 1."""
    g0 = sim.domain(0, store=False).grants
    g1 = sim.domain(1, store=False).grants
    pages = g0.alloc_pages(npages)
    refs = [g0.grant(pages, i, 1) for i in range(npages)]
    t_map = t_unmap = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        m = g1.map(0, refs)
        t1 = time.perf_counter()
        m.unmap()
        t_unmap += time.perf_counter() - t1
        t_map += t1 - t0
    pages.free()
    return t_map / rounds, t_unmap / rounds


def xenstore_figures(sim: Sim, seconds: float) -> tuple[float, float] | str:
    """(reads/s, writes/s) as domain 0, or why they can't be measured."""
    try:
        from harness.xen import xsclient
    except ImportError as exc:
        return f"unavailable ({exc})"
    path = sim.xenstored_path(0)
    helper = getattr(xsclient, "xenstore_round_trips", None)
    if helper is not None:
        res = helper(path, seconds)
        if isinstance(res, dict):
            return float(res["reads_per_s"]), float(res["writes_per_s"])
        if isinstance(res, tuple) and len(res) >= 2:
            return float(res[0]), float(res[1])
    xs = xsclient.XsClient(path, domid=0, timeout=5.0)
    try:
        xs.write("/bench/key", b"value")
        reads = _timed(seconds / 2, lambda: xs.read("/bench/key"))
        writes = _timed(seconds / 2, lambda: xs.write("/bench/key", b"value"))
        xs.rm("/bench")
        return reads, writes
    finally:
        xs.close()


def run(seconds: float = 2.0, out: Callable[[str], None] = print) -> dict[str, float]:
    figures: dict[str, float] = {}
    with running_sim() as sim:
        sim.create_domain(1, "bench")
        xs = xenstore_figures(sim, seconds)
        if isinstance(xs, str):
            out(f"xenstore read round trips/s: {xs}")
            out(f"xenstore write round trips/s: {xs}")
        else:
            figures["xenstore_read_per_s"], figures["xenstore_write_per_s"] = xs
            out(f"xenstore read round trips/s: {xs[0]:,.0f}")
            out(f"xenstore write round trips/s: {xs[1]:,.0f}")
        from harness.xen.sim.simexec import c_evtchn_pinger

        with evtchn_pinger(sim) as ev_step, raw_pinger() as raw_step, \
                c_evtchn_pinger(sim) as c_step:
            rates = interleaved_rates({"evtchn": ev_step, "raw": raw_step, "c": c_step},
                                      3 * seconds, slices=20, batch=50)
        ev, raw, c = rates["evtchn"], rates["raw"], rates["c"]
        figures["c_evtchn_round_trips_per_s"] = c
        figures.update(evtchn_round_trips_per_s=ev, raw_socketpair_round_trips_per_s=raw,
                       evtchn_vs_raw=ev / raw)
        out(f"event-channel notify round trips/s (2 processes): {ev:,.0f}")
        out(f"raw socketpair ping-pong round trips/s (2 processes): {raw:,.0f}")
        out(f"event channel / raw ratio: {ev / raw:.2f} (target >= 0.5)")
        out(f"C (replacement libxenevtchn) <-> Python notify round trips/s: {c:,.0f} "
            f"({c / raw:.2f} of raw)")
        t_map, t_unmap = map_unmap_seconds(sim)
        figures.update(map16_s=t_map, unmap16_s=t_unmap)
        out(f"map 16-page buffer: {t_map * 1e6:,.0f} us")
        out(f"unmap 16-page buffer: {t_unmap * 1e6:,.0f} us")
    return figures


if __name__ == "__main__":
    run(float(os.environ.get("BENCH_SECONDS", "2")))
