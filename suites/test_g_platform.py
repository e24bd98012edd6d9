"""(G) The platform failing under the backend, the backend restarted, the sound server
dying: what a backend meets on a real host besides a misbehaving frontend.

* Platform operations failed on purpose for the backend's domain (the simulated Xen's
  :class:`~harness.xen.api.FaultInjection`; N/A on a real host): a grant map failing at
  OPEN, event-channel notifications failing while playing, XenStore writes failing while
  the frontend connects. The faults are always cleared before the case ends.
* The backend process stopped and started again under a connected frontend, without the
  toolstack (only when the harness starts the backend).
* The sound server killed during playback (only with the audio host, ``--audio pulse``);
  it is restarted for the next cases.

That none of these crashes or hangs the backend (SND-G-07) is judged by the supervisor
(CRASH/HANG verdicts), as are XenStore write storms and kept grant mappings or ports; the
cases add what the frontend can see: answers, statuses, reconnections.

Not tested here, and why:

* Faults of other operations (grant unmap, port unbind, XenStore reads and watches): a
  backend has no way to report those to the frontend, so nothing is judged but the
  supervisor's CRASH/HANG, which the faults tested here already exercise.
* The backend restarted while the toolstack removes the device: the toolstack waits for
  BE Closed (SND-A-18, area A), which a stopped backend cannot write; what libxl then
  does is outside sndif.
* Capture while the sound server dies: the same code path as playback in the backends
  known (a client connection lost); one direction shows the behaviour.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from harness.backends.audio_host import AudioHostError
from harness.certify.outcomes import inconclusive, not_applicable
from harness.frontend.errors import ConnectTimeout, FrontendError
from harness.frontend.hostile import taken_over, wait_until
from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import Response
from harness.judge.evidence import backend_maps
from harness.judge.status import failure_problem, status_problem
from harness.judge.streams import OpenParams, Pump, ensure_closed, opened, stream_and_params
from harness.world.world import BackendStartError
from harness.xen.api import FaultInjection
from protocol_models.constants import XenErrno
from protocol_models.xenbus import XenbusState as S
from protocol_models.xenstore import XsError

#: Grant map failure codes SND-G-05 suggests.
MAP_FAILURE_ERRNOS = (XenErrno.EFAULT, XenErrno.ENOMEM, XenErrno.ENXIO)
FAULT_WINDOW_S = 0.4  # notifications failing while the backend plays
SETTLE_S = 3.0  # the backend reacting to one XenStore write
RECONNECT_S = 10.0  # a restarted backend back in InitWait and the frontend connected
PLAYING_S = 2.0  # the first position event after START


def _faults(sup) -> FaultInjection:
    faults = sup.world.faults
    if faults is None:
        not_applicable("the platform cannot fail operations on purpose (a real Xen host)")
    return faults


def _fired(faults: FaultInjection, fault_id: int) -> int:
    return sum(f.fired for f in faults.faults() if f.fault_id == fault_id)


def _open_with_failing_map(case, sup) -> tuple[FrontendStream, OpenParams, Response, int]:
    """OPEN the first playback stream while the backend domain's next grant map fails:
    the stream, the parameters, the answer, and how many maps failed (0 or 1)."""
    faults = _faults(sup)
    domid = sup.world.spec.backend_domid
    stream, p = stream_and_params(case.dev, "p")
    ensure_closed(stream)
    try:
        fid = faults.inject_fault(domid, "grant.map", mode="once")
        resp = stream.open(**p.open_kwargs())
        fired = _fired(faults, fid)
    finally:
        faults.clear_faults(domid)
    if resp.ok:
        with contextlib.suppress(FrontendError):
            stream.close()
    if not fired:
        inconclusive(f"OPEN {p} answered {resp.status} without mapping a page: the backend "
                     "maps the buffer later, so no map failed during the OPEN")
    return stream, p, resp, fired


@pytest.mark.clause("SND-G-01", "SND-G-07")
def test_grant_map_failure_fails_the_open_then_recovers(backend_case, backend_supervisor):
    """An OPEN whose buffer the backend cannot map (the platform refuses one grant map)
    fails with -XEN_Exx, never status 0; with the platform healthy again, the same OPEN
    succeeds (nothing of the failed one is left behind)."""
    stream, p, resp, _ = _open_with_failing_map(backend_case, backend_supervisor)
    problem = failure_problem(resp.status_code)
    assert problem is None, (f"OPEN {p} with the buffer's grant map failing: {problem}; "
                             "expected -XEN_Exx (SND-G-01: the stream has no buffer)")
    with opened(stream, p) as again:
        assert again.ok  # opened() already judged it (C-14)


@pytest.mark.clause("SND-G-05")
def test_grant_map_failure_status_is_a_map_failure_code(backend_case, backend_supervisor):
    """An OPEN failing because a grant could not be mapped should say so with one of the
    codes SND-G-05 suggests: -XEN_EFAULT, -XEN_ENOMEM or -XEN_ENXIO."""
    _, p, resp, _ = _open_with_failing_map(backend_case, backend_supervisor)
    wanted = [-int(e) for e in MAP_FAILURE_ERRNOS]
    assert resp.status_code in wanted, (
        f"OPEN {p} with the buffer's grant map failing answered {resp.status}; expected "
        f"one of {wanted} (SND-G-05)")


@pytest.mark.clause("SND-G-07")
def test_notify_failures_while_playing_do_not_break_the_backend(backend_case,
                                                                 backend_supervisor):
    """Event-channel notifications of the backend failing for a while during playback
    (its position events go unsignalled) neither crash nor wedge it: with the platform
    healthy again it answers STOP and CLOSE with status 0."""
    faults = _faults(backend_supervisor)
    domid = backend_supervisor.world.spec.backend_domid
    stream, p = stream_and_params(backend_case.dev, "p", period_ms=50.0)
    with opened(stream, p):
        pump = Pump(stream, p)
        pump.step()
        start = stream.trigger("START")
        assert start.ok, f"START after OPEN {p} answered {start.status} (SND-D-02)"
        pump.run(lambda: pump.position > 0, PLAYING_S)
        try:
            fid = faults.inject_fault(domid, "evtchn.notify", mode="always")
            time.sleep(FAULT_WINDOW_S)  # no request now: its answer would go unsignalled
            fired = _fired(faults, fid)
        finally:
            faults.clear_faults(domid)
        if not fired:
            inconclusive(f"the backend sent no notification in {FAULT_WINDOW_S:g} s of "
                         "playback: no notify failed")
        stop = stream.trigger("STOP")
        assert stop.ok, (f"STOP after {fired} failed notification(s) answered "
                         f"{stop.status}: the stream is no longer served normally "
                         "(SND-G-07)")
        close = stream.close()
    assert close is not None and close.ok, (
        f"CLOSE after {fired} failed notification(s) answered "
        f"{None if close is None else close.status} (SND-G-07)")


@pytest.mark.clause("SND-A-16", "SND-A-12")
def test_xenstore_write_failures_while_connecting_then_frontend_restart(
        backend_case, backend_supervisor):
    """XenStore writes of the backend fail while the frontend connects (the backend cannot
    publish Connected). With the platform healthy again, the frontend gives up and
    restarts as Linux does: on its Closing the backend releases the connection's pages
    and is in InitWait (A-16), and the new connection reaches Connected with every ring
    served (A-12)."""
    sup = backend_supervisor
    faults = _faults(sup)
    domid = sup.world.spec.backend_domid
    with taken_over(backend_case.dev, SETTLE_S) as mf:
        first = mf.wait_be_state([S.InitWait], SETTLE_S)
        assert first == str(int(S.InitWait)), (
            f"SND-A-16: the frontend closed (before any fault): expected BE InitWait "
            f"within {SETTLE_S:g} s, got {first!r}")
        try:
            fid = faults.inject_fault(domid, "xs.write", mode="always")
            mf.set_state(int(S.Initialising))
            mf.publish()
            mf.set_state(int(S.Initialised))
            tried = wait_until(lambda: _fired(faults, fid) > 0, SETTLE_S)
            time.sleep(0.2)  # let it finish what it does after the failed write
        finally:
            faults.clear_faults(domid)
        assert tried, (f"SND-A-12: the frontend Initialised with its transport published, "
                       f"and the backend wrote nothing in {SETTLE_S:g} s (not even its "
                       "Connected state)")
        mf.set_state(int(S.Closing))
        released = wait_until(lambda: not backend_maps(sup)
                              and mf.be_state() == str(int(S.InitWait)), SETTLE_S)
        assert released, (
            f"SND-A-16: frontend Closing after the failed connection: expected the backend "
            f"to unmap the frontend's pages and be in InitWait within {SETTLE_S:g} s; "
            f"BE state {mf.be_state()!r}, {len(backend_maps(sup))} page(s) still mapped")
        mf.set_state(int(S.Closed))
        mf.set_state(int(S.Initialising))
        mf.publish()
        mf.set_state(int(S.Initialised))
        last = mf.wait_be_state([S.Connected], SETTLE_S)
        assert last == str(int(S.Connected)), (
            f"SND-A-12: the frontend reconnected with the platform healthy: expected BE "
            f"Connected within {SETTLE_S:g} s, got {last!r}")
        for path in mf.paths:
            assert mf.probe(path) is not None, (
                f"SND-A-12: stream {path}: no answer on the reconnected ring")


@pytest.mark.clause("SND-A-09", "SND-A-12")
def test_backend_restart_under_a_connected_frontend(backend_case, backend_supervisor):
    """The backend process stopped and started again, the device left as it is: the new
    backend goes to InitWait by itself (A-09), the frontend (Linux's reaction, A-14)
    reconnects, the backend connects every stream (A-12), and requests are served."""
    sup = backend_supervisor
    if not sup.spec.starts_process:
        not_applicable("the backend is attached: the harness cannot restart its process")
    dev = backend_case.dev
    generation = dev.generation
    sup.world.stop_backend("case: restarted under a connected frontend")
    try:
        sup.world.start_backend("case: restarted under a connected frontend")
    except BackendStartError as exc:
        inconclusive(f"the backend could not be started again: {exc}")
    # the new process's own start counts: the run's start timeout where it is longer (120 s
    # under emulation, where Python's imports alone take about 10 s)
    wait = max(RECONNECT_S, sup.world.spec.init_timeout)
    try:
        dev.wait_connected(wait, generation=generation + 1)
    except ConnectTimeout as exc:
        state = None
        with contextlib.suppress(XsError):
            state = dev.store.read(f"{dev.be_path}/state").decode(errors="replace")
        raise AssertionError(f"SND-A-09/A-12: after the backend restarted, the frontend "
                             f"did not connect again within {wait:g} s (BE state "
                             f"{state!r}): {exc}") from None
    stream, p = stream_and_params(dev, "p")
    with opened(stream, p):
        pump = Pump(stream, p, limit=p.buffer_sz)
        pump.step()
        assert not pump.failures, (f"WRITE after the restart answered "
                                   f"{pump.failures[0].status} (SND-A-12)")


def _sound_server_host(sup):
    host = sup.world.audio_host
    if host is None:
        not_applicable("no audio host: the backend's sound server is not the harness's "
                       "(use --audio pulse)")
    return host


def _restart_sound_server(host) -> None:
    try:
        host.restart()
    except AudioHostError as exc:
        inconclusive(f"the sound server could not be started again: {exc}")


@pytest.mark.clause("SND-G-07", "SND-G-01")
def test_sound_server_dying_during_playback(backend_case, backend_supervisor):
    """The sound server killed while a stream plays: the backend keeps answering (WRITE,
    STOP, CLOSE each get a response, 0 or -XEN_Exx, never a host error code), neither
    crashing nor hanging; the server is restarted for the next cases."""
    host = _sound_server_host(backend_supervisor)
    stream, p = stream_and_params(backend_case.dev, "p", period_ms=20.0)
    answers: list[tuple[str, Response | None]] = []
    try:
        with opened(stream, p):
            pump = Pump(stream, p)
            pump.step()
            answers.append(("START", stream.trigger("START")))
            pump.run(lambda: pump.position > 0, PLAYING_S)
            host.kill_daemon()
            # go on as a player would: keep the buffer full for a while
            pump.run(lambda: False, 4 * p.seconds(p.buffer_sz))
            answers += [("WRITE", r) for r in pump.failures]
            answers.append(("STOP", stream.trigger("STOP")))
            answers.append(("CLOSE", stream.close()))
    finally:
        _restart_sound_server(host)
    bad = [f"{what}: {status_problem(r.status_code)}" for what, r in answers
           if r is not None and status_problem(r.status_code)]
    assert not bad, f"with the sound server gone: {bad}; expected 0 or -XEN_Exx (SND-G-01)"
    missing = [what for what, r in answers if r is None]
    assert not missing, f"with the sound server gone, no answer to {missing} (SND-G-07)"
