"""(G) Resources: a backend with nothing to do sleeps (:mod:`harness.judge.cpu`).

The notification protocol (SND-B-03: re-arm the hold-off, then wait for the event
channel) is what lets a backend sleep between requests; one that polls its rings or its
XenStore connection instead burns a core on every host it runs on. Judged as CPU time of
the backend process (every thread, and its live children) over an idle window.

Not tested here, and why:

* CPU while streaming: what a backend may spend on mixing, resampling or a sound server's
  protocol is its own business; only the idle case has an obvious bound.
* Memory growth: the supervisor's restarts and the cases' short lives give no stable
  baseline to judge against.
* An attached backend (``--backend attach``): its process is not the harness's, so there
  is no pid to measure (N/A).
"""

from __future__ import annotations

import time

import pytest

from harness.certify.outcomes import not_applicable
from harness.judge.cpu import IDLE_CPU_MAX, IDLE_WINDOW_S, busy_problem, measure
from harness.judge.streams import ensure_closed

#: After the previous case the backend may still be finishing (a drain, a log flush).
SETTLE_S = 0.3


@pytest.mark.clause("SND-B-03")
def test_idle_backend_does_not_burn_a_core(backend_case, backend_supervisor):
    """Connected with every stream closed and no request in flight, the backend waits for
    notifications (B-03) instead of polling: over an idle window it uses at most
    ``IDLE_CPU_MAX`` (half) of one core, its threads and child processes included."""
    proc = backend_supervisor.proc
    if proc is None:
        not_applicable("the backend process is not the harness's (attached): no pid to "
                       "measure")
    for stream in backend_case.dev.streams:
        ensure_closed(stream)
    time.sleep(SETTLE_S)
    try:
        use = measure(proc.pid, IDLE_WINDOW_S)
    except ProcessLookupError:
        return  # it died: the supervisor's CRASH verdict says so, with the evidence
    problem = busy_problem(use, IDLE_CPU_MAX)
    assert problem is None, f"{problem} (connected, no stream open, no request; SND-B-03)"
