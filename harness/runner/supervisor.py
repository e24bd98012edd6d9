"""The backend supervisor: runs the backend under test, watches it, gives each case a
verdict, and restarts it after a crash or hang so the run goes on (design: "a backend
that crashes or hangs yields a CRASH/HANG verdict for that case, is restarted, and the run
goes on; results are written as they happen").

    with running_supervisor(out, SupervisorConfig(WorldSpec())) as sup:
        with sup.case("suite::test_open") as case:
            case.dev.stream(0).open(...)
        print(case.verdict.describe())

What it does, per run:

* builds the run's world (:mod:`harness.world`: platform, audio host, backend, device,
  frontend) and restarts it when a case broke the backend;
* writes a ``==== case <nodeid> ====`` line into ``<out>/backend.log`` before each case;
* writes every verdict, as it is decided, to ``<out>/verdicts.jsonl``.

Detection at the end of each case (every wait bounded):

* CRASH — the process exited or died by a signal; or a sanitizer report appeared in its
  output (the report is the evidence);
* HANG — the process is alive, but a request timed out during the case (frontend
  ``RequestTimeout``) or a ring had ``req_prod`` ahead of ``rsp_prod`` without progress
  for ``hang_timeout`` (a watchdog thread samples the rings), AND a HW_PARAM_QUERY probe
  gets no answer within ``probe_timeout``;
* FAIL — BE state Closed(6), missing or invalid while the frontend should be connected
  (or the device does not reconnect); leaked grant mappings or bound ports (findings);
  or the case's own failure;
* ERROR — the harness could not prepare the case (the restart failed).

After CRASH/HANG (and a broken connection) the next case first restarts: frontend closed,
backend killed (SIGTERM to its group, SIGKILL after ``kill_grace``), device removed and
created again, frontend reconnected. Policy ``every-case`` restarts before every case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import RequestTimeout
from harness.runner import judge
from harness.runner.sanity import sanity_problem
from harness.runner.verdicts import Finding, Outcome, Verdict
from harness.runner.watchdog import RingWatchdog
from harness.trace import Trace, TraceRecord
from harness.world.backend_proc import status_text
from harness.world.backend_spec import BackendSpec
from harness.world.spec import WorldSpec
from harness.world.world import BackendStartError, World
from harness.xen.api import Platform
from harness.xen.platforms import open_platform

RestartPolicy = Literal["on-failure", "every-case"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("on-failure", "every-case")


@dataclass
class SupervisorConfig:
    world: WorldSpec = field(default_factory=WorldSpec)
    restart_policy: RestartPolicy = "on-failure"
    probe_timeout: float = 1.0  # the HW_PARAM_QUERY that confirms a hang
    hang_timeout: float = 3.0  # ring stalled (req_prod ahead, no rsp_prod progress)
    leak_grace: float = 1.0  # unmaps/unbinds may lag the last response a little
    report_grace: float = 2.0  # a sanitizer report still being written / exit pending
    check_leaks: bool = True
    #: XenStore writes by the backend domain in one case that make it a storm: at least
    #: ``xs_storm_min`` writes at ``xs_storm_rate`` per second or more (a handshake
    #: writes a handful; a backend looping over its state writes hundreds a second)
    xs_storm_min: int = 50
    xs_storm_rate: float = 100.0
    #: after a case that did not pass (and needs no restart anyway), check the backend
    #: still plays: OPEN, WRITE, START, a CUR_POS, STOP, CLOSE (see runner/sanity.py)
    sanity_after_failure: bool = True
    sanity_timeout: float = 2.0
    #: consecutive failed restarts after which the run stops trying (each try waits up to
    #: the InitWait timeout): the remaining cases fail fast with the last error
    max_failed_restarts: int = 3
    #: above this size the backend log is emptied between cases (a backend that logs
    #: without end must not fill the disk); the current case's part is always kept
    log_cap: int = 256 * 1024 * 1024


@dataclass
class CaseRun:
    """One case: where its part of the log starts, and (after :meth:`Supervisor.end_case`)
    its verdict."""

    nodeid: str
    log_offset: int
    started: float
    timeouts_before: int
    verdict: Verdict | None = None
    dev: FrontendDevice | None = None
    trace: Trace | None = None  # the run's frontend trace, and where this case starts in it
    trace_mark: int = 0
    started_ns: int = 0  # CLOCK_MONOTONIC at the start (violations carry the same clock)


class _CountingTrace(Trace):
    """The frontend's trace, counting request timeouts (also those a case catches)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.timeouts = 0

    def record(self, kind: str, domid: int | None = None, *, t_ns: int | None = None,
               **fields: Any) -> TraceRecord:
        if kind == "note" and str(fields.get("text", "")).endswith(" timed out"):
            self.timeouts += 1
        return super().record(kind, domid, t_ns=t_ns, **fields)


class Supervisor:
    """Runs cases against the backend of a :class:`World` on ``platform``; see the
    module docstring."""

    def __init__(self, platform: Platform, config: SupervisorConfig,
                 out: str | os.PathLike[str]) -> None:
        self.config = config
        self.out = Path(out)
        self.world = World(config.world, self.out, platform)
        self.world.new_trace = lambda: _CountingTrace(self.out / "frontend-trace.jsonl")
        self.log_path = self.world.log_path
        self.verdicts_path = self.out / "verdicts.jsonl"
        self.verdicts: list[Verdict] = []
        self._needs_restart: str | None = None
        self._pending_findings: list[Finding] = []  # from a teardown that needed SIGKILL
        self._cases = 0
        #: per case: its part of the backend log (start, end; None: to the end)
        self._case_spans: dict[str, tuple[int, int | None]] = {}
        self._last_case: str | None = None
        self._failed_restarts = 0
        self._last_restart_error = ""
        self._watchdog: RingWatchdog | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def spec(self) -> BackendSpec:
        return self.config.world.backend

    @property
    def starts(self) -> int:
        return self.world.starts

    @property
    def proc(self) -> Any:
        """The backend's ``Popen`` of this life (None: attached, or stopped)."""
        return None if self.world.backend is None else self.world.backend.proc

    @property
    def dev(self) -> FrontendDevice:
        """The connected frontend device of the current backend life."""
        if self.world.dev is None:
            raise BackendStartError("no frontend connected (supervisor not started?)")
        return self.world.dev

    @property
    def be_path(self) -> str:
        return self.world.be_path

    def start(self) -> None:
        """Start the backend (unless attached), create the device, connect the frontend."""
        self._watchdog = RingWatchdog(lambda: self.world.dev,
                                      lambda: self.world.exit_status() is not None)
        self.world.start()

    def close(self) -> None:
        """Frontend closed, device removed, backend stopped, logs closed. Idempotent."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        self.world.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mark(self, text: str) -> None:
        self.world.mark(text)

    def log_text(self, start: int = 0, end: int | None = None) -> str:
        return self.world.log_text(start, end)

    def case_log(self, nodeid: str) -> str:
        """The part of the log between this case's marker and the next case's marker
        (read by offsets recorded as the cases began: never the whole log)."""
        span = self._case_spans.get(nodeid)
        if span is None:
            raise KeyError(f"no case {nodeid!r} in {self.log_path}")
        return self.log_text(*span)

    def begin_case(self, nodeid: str) -> CaseRun:
        """Restart if the last case broke the backend (or by policy), mark the log."""
        self._cases += 1
        dead = self.world.exit_status()
        if dead is not None and self._needs_restart is None:
            self._needs_restart = f"backend exited between cases ({status_text(dead)})"
        if self._needs_restart is None and self.config.restart_policy == "every-case" \
                and self._cases > 1:
            self._needs_restart = "policy every-case"
        if self._needs_restart is None and not judge.fe_alive(self.world.dev):
            self._needs_restart = "frontend closed by the previous case"
        if self._needs_restart is not None:
            if self._failed_restarts >= self.config.max_failed_restarts:
                raise BackendStartError(
                    f"not restarted before {nodeid}: the last {self._failed_restarts} "
                    f"restarts failed; the last error: {self._last_restart_error}")
            reason, self._needs_restart = self._needs_restart, None
            try:
                self.restart(reason)
            except Exception as exc:
                self._failed_restarts += 1
                self._last_restart_error = str(exc).splitlines()[0]
                self._needs_restart = f"the last restart failed: {exc}"  # retried next case
                raise BackendStartError(f"restart before {nodeid} failed: {exc}") from exc
            self._failed_restarts = 0
        if self.world.log_size() > self.config.log_cap:
            self.world.truncate_log(f"backend log over {self.config.log_cap} bytes, the "
                                    "earlier cases' part removed")
            self._case_spans.clear()
        if self._last_case is not None and self._last_case in self._case_spans:
            self._case_spans[self._last_case] = (self._case_spans[self._last_case][0],
                                                 self.world.log_size())
        self.mark(f"case {nodeid}")
        self._case_spans[nodeid] = (self.world.log_size(), None)
        self._last_case = nodeid
        if self._watchdog is not None:
            self._watchdog.reset()
        trace = self._trace
        return CaseRun(nodeid, self.world.log_size(), time.monotonic(),
                       trace.timeouts if trace is not None else 0, dev=self.world.dev,
                       trace=trace, trace_mark=trace.mark() if trace is not None else 0,
                       started_ns=time.monotonic_ns())

    def end_case(self, case: CaseRun, exc: BaseException | None = None) -> Verdict:
        """Decide the case's verdict (see the module docstring), record it, and schedule a
        restart when the backend is gone or stuck."""
        try:
            verdict = self._judge(case, exc)
        except Exception as err:  # the judge must not take the run down either
            verdict = Verdict(Outcome.ERROR, f"checking the backend failed: {err!r}")
            self._needs_restart = "the checks failed"
        if self._needs_restart is None and verdict.outcome is not Outcome.PASS \
                and self.config.sanity_after_failure:
            verdict = self._sanity(verdict)
        if self._needs_restart is not None and self.spec.starts_process \
                and verdict.outcome is not Outcome.CRASH:
            verdict = self._stop_now(case, verdict)
        verdict = dataclasses.replace(verdict, nodeid=case.nodeid,
                                      elapsed=round(time.monotonic() - case.started, 3),
                                      needs_restart=self._needs_restart is not None)
        case.verdict = verdict
        self.verdicts.append(verdict)
        self.mark(f"end {case.nodeid}: {verdict.outcome.value}")
        self._write_case_trace(case)
        with open(self.verdicts_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(verdict.as_dict(), default=str) + "\n")
        return verdict

    def case_trace_path(self, nodeid: str) -> Path:
        """Where the frontend trace of one case is written (its slice of the run's)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid)
        return self.out / "cases" / f"{safe}.jsonl"

    @contextlib.contextmanager
    def case(self, nodeid: str) -> Iterator[CaseRun]:
        """``begin_case`` … ``end_case``; an exception of the block is judged, not
        re-raised (the verdict says FAIL, CRASH or HANG)."""
        run = self.begin_case(nodeid)
        try:
            yield run
        except Exception as exc:
            self.end_case(run, exc)
        else:
            self.end_case(run, None)

    def restart(self, reason: str) -> None:
        """Frontend closed, backend stopped (killed if need be), device removed; then all
        brought up again."""
        self.world.restart(reason)

    def check_resources(self) -> list[Finding]:
        """Grant mappings of the frontend's pages held by the backend domain, and ports
        the backend domain has bound to the frontend, beyond what the connection needs.
        Polls up to ``leak_grace`` for stragglers. Needs the platform's accounting (the
        simulated Xen's); without it there is nothing to check."""
        acc = self.world.accounting
        if acc is None:
            return []
        w = self.config.world
        deadline = time.monotonic() + self.config.leak_grace
        while True:
            findings = judge.leaks(self.world.dev, acc, w.frontend_domid, w.backend_domid)
            if not findings or time.monotonic() >= deadline:
                return findings
            time.sleep(0.05)

    # -- judging -------------------------------------------------------------------------

    @property
    def _trace(self) -> _CountingTrace | None:
        t = self.world.trace
        return t if isinstance(t, _CountingTrace) else None

    def _sanity(self, verdict: Verdict) -> Verdict:
        """After a failed case: can the backend still play? If not, the case says so and
        the backend is restarted before the next one."""
        try:
            problem = sanity_problem(self.world.dev, self.config.sanity_timeout)
        except Exception as exc:  # the check must not take the run down
            problem = f"sanity check failed: {exc!r}"
        if problem is None:
            return verdict
        self._needs_restart = problem
        finding = Finding("sanity-failed", f"after this case the backend failed the sanity "
                          f"sequence: {problem}", {})
        return dataclasses.replace(verdict, detail=f"{verdict.detail}; {finding.detail}",
                                   findings=(*verdict.findings, finding))

    def _stop_now(self, case: CaseRun, verdict: Verdict) -> Verdict:
        """A backend that must be restarted is stopped now, within this case: one that
        does not yield to SIGTERM is a HANG of this case (the teardown is evidence)."""
        stopped = self.world.stop_backend(f"after {case.nodeid}: {self._needs_restart}")
        if stopped is None or not stopped.killed:
            return verdict
        finding = Finding("kill-needed", f"backend did not stop within "
                          f"{self.config.world.kill_grace:g} s of SIGTERM; SIGKILL was "
                          "needed", {"status": stopped.status})
        outcome = verdict.outcome if verdict.outcome is Outcome.HANG else Outcome.HANG
        return dataclasses.replace(verdict, outcome=outcome,
                                   detail=f"{verdict.detail}; {finding.detail}",
                                   findings=(*verdict.findings, finding))

    def _judge(self, case: CaseRun, exc: BaseException | None) -> Verdict:
        c = self.config
        w = self.world
        # 1. the process: dead, or a sanitizer report in its output
        crash = self._crash(case)
        if crash is not None:
            return crash
        # 2. a hang: a request timed out (even one the case caught) or a ring stalled
        trace = self._trace
        timeouts = (trace.timeouts - case.timeouts_before) if trace is not None else 0
        suspect = []
        if judge.caused_by(exc, RequestTimeout) or timeouts:
            suspect.append(f"{max(timeouts, 1)} request(s) timed out "
                           f"({c.world.request_timeout_ms} ms)")
        worst = self._watchdog.worst() if self._watchdog is not None else None
        if worst is not None and worst[1] >= c.hang_timeout:
            suspect.append(f"ring {worst[0]}: req_prod ahead of rsp_prod with no progress "
                           f"for {worst[1]:.1f} s")
        if suspect:
            answered, probe_detail = judge.probe(w.dev, c.probe_timeout)
            if answered is False:
                crash = self._crash(case)  # died while we probed?
                if crash is not None:
                    return crash
                self._needs_restart = "hang"
                return Verdict(Outcome.HANG, "; ".join(suspect) + f"; {probe_detail}, "
                               "process alive", log_excerpt=self._case_tail(case))
        # 3. the connection: BE state while the frontend should be connected
        broken = judge.connection_problem(w.dev, w.tool_store, w.be_path,
                                          c.world.connect_timeout)
        if broken is not None:
            self._needs_restart = broken
            return Verdict(Outcome.FAIL, broken, log_excerpt=self._case_tail(case))
        # 4. resources, and the MUST violations the frontend recorded during the case
        findings = self.check_resources() if c.check_leaks else []
        findings += judge.violations(w.dev, case.started_ns)
        storm = self._xs_storm(case)
        if storm is not None:
            findings.append(storm)
        if exc is not None:
            return Verdict(Outcome.FAIL, f"{type(exc).__name__}: {exc}",
                           findings=tuple(findings), log_excerpt=self._case_tail(case))
        if findings:
            return Verdict(Outcome.FAIL, "; ".join(f.detail for f in findings),
                           findings=tuple(findings))
        return Verdict(Outcome.PASS)

    def _xs_storm(self, case: CaseRun) -> Finding | None:
        acc = self.world.xs_accounting
        if acc is None:
            return None
        domid = self.config.world.backend_domid
        # the harness's own toolstack writes as dom0 too: count the backend's alone
        writes = acc.xs_writes(domid, since=case.started_ns, exclude_pid=os.getpid())
        seconds = max(1e-3, time.monotonic() - case.started)
        rate = writes / seconds
        if writes < self.config.xs_storm_min or rate < self.config.xs_storm_rate:
            return None
        return Finding("xenstore-storm", f"backend domain {domid} wrote XenStore {writes} "
                       f"times in {seconds:.1f} s ({rate:.0f}/s)",
                       {"writes": writes, "seconds": round(seconds, 3)})

    def _crash(self, case: CaseRun) -> Verdict | None:
        verdict = judge.crash_verdict(self.world.exit_status,
                                      lambda: self.log_text(case.log_offset),
                                      self.config.report_grace,
                                      lambda: self._case_tail(case))
        if verdict is not None:
            if verdict.exit_status is not None:
                self.mark(f"backend died: {status_text(verdict.exit_status)}")
            self._needs_restart = verdict.detail
        return verdict

    def _case_tail(self, case: CaseRun) -> str:
        return self.world.tail(self.log_text(case.log_offset))

    def _write_case_trace(self, case: CaseRun) -> None:
        if case.trace is None:
            return
        path = self.case_trace_path(case.nodeid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.part")  # never a half-written case trace
        tmp.write_text("".join(r.to_json() + "\n" for r in case.trace.since(case.trace_mark)))
        tmp.replace(path)


@contextlib.contextmanager
def running_supervisor(out: str | os.PathLike[str], config: SupervisorConfig | None = None,
                       *, platform: Platform | None = None) -> Iterator[Supervisor]:
    """A started supervisor (on ``platform``, or on the one the world spec names, opened
    for the block); everything is stopped on the way out."""
    config = config or SupervisorConfig()
    with contextlib.ExitStack() as stack:
        if platform is None:
            platform = stack.enter_context(open_platform(config.world.platform))
        sup = Supervisor(platform, config, out)
        stack.callback(sup.close)
        sup.start()
        yield sup


__all__ = [
    "RESTART_POLICIES", "BackendStartError", "CaseRun", "RestartPolicy", "Supervisor",
    "SupervisorConfig", "running_supervisor",
]
