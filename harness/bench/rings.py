"""Row: event-channel notify round trip between two processes, against a raw socketpair
ping-pong between two processes (target >= 0.5 of the raw rate).

Both go through the platform seam: this process is domain 0 of a simulated Xen opened
for the run, the echo process is domain 1 (``Platform.process_env``) and binds to our
unbound port; each step notifies and waits for the echo's notify.
"""

from __future__ import annotations

import contextlib
import sys
import textwrap
from collections.abc import Callable, Iterator

from harness.procs import readline
from harness.xen.api import Platform
from harness.xen.platforms import open_platform

from .table import Row, check
from .timing import echo_process, interleaved_rates, raw_pinger, reap

TARGET = 0.5

_EVTCHN_ECHO = textwrap.dedent("""
    import sys
    from harness.xen.connect import connect_domain
    d = connect_domain(1)
    ev = d.evtchn
    q = ev.bind_interdomain(0, int(sys.argv[1]))
    print("bound", flush=True)
    while ev.wait(5.0):
        ev.notify(q)
    d.close()
    """)


@contextlib.contextmanager
def evtchn_pinger(platform: Platform) -> Iterator[Callable[[], None]]:
    """A step doing one notify round trip with an echo process acting as domain 1."""
    platform.ensure_domain(1, "bench-echo")
    dom = platform.domain(0)
    ev = dom.evtchn
    port = ev.alloc_unbound(1)
    child = echo_process([sys.executable, "-c", _EVTCHN_ECHO, str(port)],
                         env=platform.process_env(1))
    try:
        if readline(child, 30.0) != "bound":
            raise RuntimeError("event-channel echo process failed to start")
        ev.wait(0)  # the bind may wake the handle once: absorb it

        def step() -> None:
            ev.notify(port)
            if not ev.wait(5.0):
                raise TimeoutError("event-channel echo process stopped answering")

        yield step
    finally:
        with contextlib.suppress(OSError):
            ev.unbind(port)  # the echo's wait then times out, and it exits
        reap(child, 15.0)
        dom.close()


def run(quick: bool = False) -> list[Row]:
    seconds = 1.0 if quick else 6.0
    with open_platform("sim") as platform, evtchn_pinger(platform) as ev, \
            raw_pinger() as raw:
        rates = interleaved_rates({"evtchn": ev, "raw": raw}, seconds)
    ratio = rates["evtchn"] / rates["raw"]
    return [Row("event-channel notify round trip (2 processes)", rates["evtchn"], "/s",
                reference=rates["raw"], reference_name="raw socketpair ping-pong",
                ratio=ratio, target=f">= {TARGET:g} of raw", holds=check(ratio >= TARGET))]
