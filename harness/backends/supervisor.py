"""The backend supervisor: runs the backend under test, watches it, gives each case a
verdict, and restarts it after a crash or hang so the run goes on (design: "a backend
that crashes or hangs yields a CRASH/HANG verdict for that case, is restarted, and the run
goes on; results are written as they happen").

    with running_supervisor(out, SupervisorConfig(spec=parse_backend_spec("reference"))) as sup:
        with sup.case("suite::test_open") as case:
            case.dev.stream(0).open(...)
        print(case.verdict.describe())

What it does, per run:

* starts the backend (``reference`` or ``exec:``) in its own process group with the sim's
  environment for the backend domain (replacement Xen libraries for foreign binaries); an
  ``attach``-ed backend is never started or stopped, only watched;
* creates the vsnd device with the toolstack and waits for BE InitWait (A-09, with
  ``init_timeout``), then connects the reference frontend;
* keeps the backend's stdout and stderr in ``<out>/backend.log``, into which it writes a
  ``==== case <nodeid> ====`` line before each case (and offsets per case);
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
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.backends.backend_spec import BackendSpec
from harness.backends.sanitizers import SanitizerReport, find_reports
from harness.backends.verdicts import Finding, Outcome, Verdict, signal_name
from harness.frontend.driver import FrontendDevice, FrontendStream
from harness.frontend.errors import FrontendError, RequestTimeout
from harness.rings import REQ_PROD, RSP_PROD, u32
from harness.session import DEFAULT_CARD
from harness.toolstack.apply import create_device, remove_device
from harness.toolstack.plan import plan_device, plan_removal
from harness.toolstack.vsnd_config import VsndCard
from harness.trace import Trace, TraceRecord
from harness.xen.sim.client import SimDomain
from harness.xen.sim.hvproto import PortState
from harness.xen.sim.runner import Sim, running_sim
from protocol_models.constants import VSND_WAIT_BACK_MS
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

RestartPolicy = Literal["on-failure", "every-case"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("on-failure", "every-case")
MARK = "===="
_WATCHDOG_PERIOD = 0.05
_EXCERPT_LINES = 40



class BackendStartError(RuntimeError):
    """The backend could not be brought to a connected device (evidence in the text)."""


@dataclass
class SupervisorConfig:
    spec: BackendSpec = field(default_factory=lambda: BackendSpec("reference"))
    backend_domid: int = 0
    frontend_domid: int = 1
    devid: int = 0
    card: VsndCard = field(default_factory=lambda: DEFAULT_CARD)
    restart_policy: RestartPolicy = "on-failure"
    init_timeout: float = 10.0  # BE InitWait after the device is written (A-09: 10 s)
    connect_timeout: float = 10.0  # frontend Connected
    request_timeout_ms: int = VSND_WAIT_BACK_MS  # the frontend's per-request timeout
    probe_timeout: float = 1.0  # the HW_PARAM_QUERY that confirms a hang
    hang_timeout: float = 3.0  # ring stalled (req_prod ahead, no rsp_prod progress)
    kill_grace: float = 3.0  # SIGTERM → SIGKILL
    removal_timeout: float = 5.0  # BE Closed after toolstack removal (A-18: 10 s)
    leak_grace: float = 1.0  # unmaps/unbinds may lag the last response a little
    report_grace: float = 2.0  # a sanitizer report still being written / exit pending
    check_leaks: bool = True
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the backend


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


class _RingWatchdog:
    """Samples every connected stream's ring: how long has ``req_prod`` been ahead of
    ``rsp_prod`` with ``rsp_prod`` not moving? Evidence only; a probe decides."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._since: dict[str, tuple[int, float]] = {}  # path -> (rsp_prod, stalled since)
        self.max_stall: dict[str, float] = {}
        self._thread = threading.Thread(target=self._loop, name="ring-watchdog",
                                        daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self._since.clear()
            self.max_stall.clear()

    def worst(self) -> tuple[str, float] | None:
        with self._lock:
            if not self.max_stall:
                return None
            path = max(self.max_stall, key=self.max_stall.__getitem__)
            return path, self.max_stall[path]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _loop(self) -> None:
        while not self._stop.wait(_WATCHDOG_PERIOD):
            dev = self._sup._dev
            if dev is None:
                continue
            if self._sup._exit_status() is not None:
                # The backend process is gone: nobody will answer. Release the waiting
                # callers now, so a crash is judged at once and not at the request timeout.
                for s in list(dev.streams):
                    s.abort_requests()
                continue
            now = time.monotonic()
            for s in list(dev.streams):
                # under the stream's lock: the driver drops ``channel`` under it before
                # it unmaps the pages, so a page read here is never a freed one
                if not s.cond.acquire(timeout=_WATCHDOG_PERIOD):
                    continue
                try:
                    ch = s.channel
                    if ch is None or not s.connected:
                        raise ValueError
                    req = u32(int.from_bytes(ch.ring_page[REQ_PROD:REQ_PROD + 4], "little"))
                    rsp = u32(int.from_bytes(ch.ring_page[RSP_PROD:RSP_PROD + 4], "little"))
                except (ValueError, IndexError, TypeError, AttributeError):
                    with self._lock:  # page gone (freed/reconnected): no stall to follow
                        self._since.pop(s.path, None)
                    continue
                finally:
                    s.cond.release()
                with self._lock:
                    if req == rsp:
                        self._since.pop(s.path, None)
                        continue
                    old = self._since.get(s.path)
                    if old is None or old[0] != rsp:
                        self._since[s.path] = (rsp, now)
                        continue
                    stall = now - old[1]
                    if stall > self.max_stall.get(s.path, 0.0):
                        self.max_stall[s.path] = stall


class Supervisor:
    """Runs, watches and restarts one backend on ``sim``; see the module docstring."""

    def __init__(self, sim: Sim, config: SupervisorConfig, out: str | os.PathLike[str]
                 ) -> None:
        self.sim = sim
        self.config = config
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "backend.log"
        self.verdicts_path = self.out / "verdicts.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0  # backend processes started (attach: connections made)
        self.verdicts: list[Verdict] = []
        self._log_fd: int | None = None
        self._dev: FrontendDevice | None = None
        self._fe_domain: SimDomain | None = None
        self._trace: _CountingTrace | None = None
        self._tool: SimDomain | None = None
        self._needs_restart: str | None = None
        self._device_created = False
        self._cases = 0
        self._watchdog: _RingWatchdog | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def spec(self) -> BackendSpec:
        return self.config.spec

    @property
    def dev(self) -> FrontendDevice:
        """The connected frontend device of the current backend life."""
        if self._dev is None:
            raise BackendStartError("no frontend connected (supervisor not started?)")
        return self._dev

    @property
    def be_path(self) -> str:
        c = self.config
        return f"/local/domain/{c.backend_domid}/backend/vsnd/{c.frontend_domid}/{c.devid}"

    def start(self) -> None:
        """Start the backend (unless attached), create the device, connect the frontend."""
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        c = self.config
        existing = {d.domid for d in self.sim.control.list_domains()}
        for domid, name in ((c.frontend_domid, "guest"), (c.backend_domid, "backend")):
            if domid not in existing:
                self.sim.create_domain(domid, name)
                existing.add(domid)
        self._tool = SimDomain(self.sim.dir, 0, self.sim.timeout)
        self._watchdog = _RingWatchdog(self)
        self._bring_up("start")

    def close(self) -> None:
        """Frontend closed, device removed, backend stopped, logs closed. Idempotent."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        with contextlib.suppress(Exception):
            self._close_frontend()
        with contextlib.suppress(Exception):
            self._stop_backend("end of run")
        with contextlib.suppress(Exception):
            self._remove_device()
        if self._tool is not None:
            with contextlib.suppress(OSError):
                self._tool.close()
            self._tool = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mark(self, text: str) -> None:
        """Write ``==== text ====`` into the backend log (same file, O_APPEND)."""
        if self._log_fd is not None:
            os.write(self._log_fd, f"{MARK} {text} {MARK}\n".encode())

    def log_text(self, start: int = 0, end: int | None = None) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(start)
            data = fh.read() if end is None else fh.read(max(0, end - start))
        return data.decode("utf-8", "replace")

    def case_log(self, nodeid: str) -> str:
        """The part of the log between this case's marker and the next case's marker."""
        text = self.log_text()
        head = f"{MARK} case {nodeid} {MARK}\n"
        i = text.rfind(head)
        if i < 0:
            raise KeyError(f"no case {nodeid!r} in {self.log_path}")
        i += len(head)
        j = text.find(f"{MARK} case ", i)
        return text[i:] if j < 0 else text[i:j]

    def begin_case(self, nodeid: str) -> CaseRun:
        """Restart if the last case broke the backend (or by policy), mark the log."""
        self._cases += 1
        dead = self._exit_status()
        if dead is not None and self._needs_restart is None:
            self._needs_restart = f"backend exited between cases ({_status_text(dead)})"
        if self._needs_restart is None and self.config.restart_policy == "every-case" \
                and self._cases > 1:
            self._needs_restart = "policy every-case"
        if self._needs_restart is None and (self._dev is None or not _fe_alive(self._dev)):
            self._needs_restart = "frontend closed by the previous case"
        if self._needs_restart is not None:
            reason, self._needs_restart = self._needs_restart, None
            try:
                self.restart(reason)
            except Exception as exc:
                self._needs_restart = f"the last restart failed: {exc}"  # retried next case
                raise BackendStartError(f"restart before {nodeid} failed: {exc}") from exc
        self.mark(f"case {nodeid}")
        if self._watchdog is not None:
            self._watchdog.reset()
        trace = self._trace
        return CaseRun(nodeid, self._log_size(), time.monotonic(),
                       trace.timeouts if trace is not None else 0, dev=self._dev,
                       trace=trace, trace_mark=trace.mark() if trace is not None else 0)

    def end_case(self, case: CaseRun, exc: BaseException | None = None) -> Verdict:
        """Decide the case's verdict (see the module docstring), record it, and schedule a
        restart when the backend is gone or stuck."""
        try:
            verdict = self._judge(case, exc)
        except Exception as err:  # the judge must not take the run down either
            verdict = Verdict(Outcome.ERROR, f"checking the backend failed: {err!r}")
            self._needs_restart = "the checks failed"
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

    def _write_case_trace(self, case: CaseRun) -> None:
        if case.trace is None:
            return
        path = self.case_trace_path(case.nodeid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jsonl.part")  # never a half-written case trace
        tmp.write_text("".join(r.to_json() + "\n" for r in case.trace.since(case.trace_mark)))
        tmp.replace(path)

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
        self.mark(f"restart: {reason}")
        self._close_frontend()
        self._stop_backend(reason)
        self._remove_device()
        self._bring_up(f"restart ({reason})")

    def check_resources(self) -> list[Finding]:
        """Grant mappings of the frontend's pages held by the backend domain, and ports
        the backend domain has bound to the frontend, beyond what the connection needs
        (every connected stream's ring + event page and ports, and the buffers of
        streams still open). Polls up to ``leak_grace`` for stragglers."""
        deadline = time.monotonic() + self.config.leak_grace
        while True:
            findings = self._leaks()
            if not findings or time.monotonic() >= deadline:
                return findings
            time.sleep(0.05)

    # -- bringing up and down ------------------------------------------------------------

    def _bring_up(self, why: str) -> None:
        c = self.config
        if self.spec.starts_process:
            self._spawn(why)
        if not self._device_created or self.spec.starts_process:
            try:
                create_device(self._tool_store(), plan_device(c.card, c.frontend_domid,
                                                              c.backend_domid, c.devid),
                              wait_initwait=c.init_timeout)
            except Exception as exc:
                status = self._exit_status()
                raise BackendStartError(
                    f"backend {self.spec} did not reach InitWait: {exc}"
                    + (f"; it exited ({_status_text(status)})" if status is not None else "")
                    + "\n" + self._tail(self.log_text())) from exc
            self._device_created = True
        self._connect_frontend()

    def _spawn(self, why: str) -> None:
        from harness.xen.sim.clibs.build import build_libs
        from harness.xen.sim.simexec import domain_env

        c = self.config
        argv = self.spec.command(domid=c.backend_domid, frontend_domid=c.frontend_domid,
                                 devid=c.devid, out=str(self.out), python=sys.executable)
        if self.spec.kind == "exec":
            env = domain_env(self.sim.dir, c.backend_domid, build_libs())
        else:
            env = self.sim.env(c.backend_domid)
        # Python backends (the reference one via exec: too) import this package
        root = str(Path(__file__).resolve().parents[2])
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
        env.update(c.env)
        self.mark(f"start #{self.starts + 1} ({why}): {' '.join(argv)}")
        try:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         stdout=self._log_fd, stderr=self._log_fd,
                                         cwd=str(self.out), start_new_session=True)
        except OSError as exc:
            raise BackendStartError(f"cannot start backend {self.spec}: {exc}") from exc
        self.starts += 1

    def _connect_frontend(self) -> None:
        c = self.config
        self._fe_domain = SimDomain(self.sim.dir, c.frontend_domid, self.sim.timeout)
        self._trace = _CountingTrace(self.out / "frontend-trace.jsonl")
        if not self.spec.starts_process:
            self.starts += 1
        try:
            dev = FrontendDevice(self._fe_domain, c.devid, trace=self._trace,
                                 timeout_ms=c.request_timeout_ms)
            self._dev = dev
            dev.wait_connected(c.connect_timeout)
        except FrontendError as exc:
            status = self._exit_status()
            raise BackendStartError(
                f"frontend did not connect to backend {self.spec}: {exc}"
                + (f"; backend exited ({_status_text(status)})" if status is not None else "")
                + "\n" + self._tail(self.log_text())) from exc

    def _close_frontend(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None:
            with contextlib.suppress(Exception):
                dev.close(timeout=5.0)  # FE Closing → polls BE ≤ ~1 s → Closed
        if self._fe_domain is not None:
            with contextlib.suppress(OSError):
                self._fe_domain.close()
            self._fe_domain = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def _stop_backend(self, reason: str) -> int | None:
        """SIGTERM the backend's process group, SIGKILL after ``kill_grace``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.config.kill_grace)
            except subprocess.TimeoutExpired:
                self.mark(f"backend did not stop within {self.config.kill_grace:g} s of "
                          "SIGTERM: SIGKILL")
        _killpg(proc.pid, signal.SIGKILL)  # also whatever it started in its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(self.config.kill_grace)
        self.mark(f"backend stopped ({reason}): {_status_text(proc.returncode)}")
        return proc.returncode

    def _remove_device(self) -> None:
        if not self._device_created or not self.spec.starts_process:
            return  # an attached backend's device stays: only the frontend reconnects
        c = self.config
        # the backend is gone now: nobody will answer, so do not wait for Closed
        remove_device(self._tool_store(), plan_removal(c.frontend_domid, c.backend_domid,
                                                       c.devid), timeout=0.0)
        self._device_created = False

    def _tool_store(self) -> Any:
        assert self._tool is not None, "supervisor not started"
        return self._tool.store

    # -- judging -------------------------------------------------------------------------

    def _judge(self, case: CaseRun, exc: BaseException | None) -> Verdict:
        c = self.config
        # 1. the process: dead, or a sanitizer report in its output
        crash = self._crash_verdict(case)
        if crash is not None:
            self._needs_restart = crash.detail
            return crash
        # 2. a hang: a request timed out (even one the case caught) or a ring stalled
        trace = self._trace
        timeouts = (trace.timeouts - case.timeouts_before) if trace is not None else 0
        suspect = []
        if _caused_by(exc, RequestTimeout) or timeouts:
            suspect.append(f"{max(timeouts, 1)} request(s) timed out "
                           f"({c.request_timeout_ms} ms)")
        worst = self._watchdog.worst() if self._watchdog is not None else None
        if worst is not None and worst[1] >= c.hang_timeout:
            suspect.append(f"ring {worst[0]}: req_prod ahead of rsp_prod with no progress "
                           f"for {worst[1]:.1f} s")
        if suspect:
            answered, probe_detail = self._probe()
            if answered is False:
                crash = self._crash_verdict(case)  # died while we probed?
                if crash is not None:
                    self._needs_restart = crash.detail
                    return crash
                self._needs_restart = "hang"
                return Verdict(Outcome.HANG, "; ".join(suspect) + f"; {probe_detail}, "
                               "process alive", log_excerpt=self._case_tail(case))
        # 3. the connection: BE state while the frontend should be connected
        broken = self._connection_problem()
        if broken is not None:
            self._needs_restart = broken
            return Verdict(Outcome.FAIL, broken, log_excerpt=self._case_tail(case))
        # 4. resources
        findings = self.check_resources() if c.check_leaks else []
        if exc is not None:
            return Verdict(Outcome.FAIL, f"{type(exc).__name__}: {exc}",
                           findings=tuple(findings), log_excerpt=self._case_tail(case))
        if findings:
            return Verdict(Outcome.FAIL, "resources left behind", findings=tuple(findings))
        return Verdict(Outcome.PASS)

    def _crash_verdict(self, case: CaseRun) -> Verdict | None:
        status = self._exit_status()
        text = self._case_text(case)
        reports = find_reports(text)
        if status is None and reports and not reports[-1].complete:
            # still being written; ASan exits right after
            deadline = time.monotonic() + self.config.report_grace
            while time.monotonic() < deadline and status is None:
                time.sleep(0.05)
                status = self._exit_status()
                reports = find_reports(self._case_text(case))
                if reports and reports[-1].complete:
                    break
        if status is None and not reports:
            return None
        if status is not None and not reports:
            time.sleep(0.05)  # whatever the dying process wrote last
            reports = find_reports(self._case_text(case))
        report: SanitizerReport | None = reports[0] if reports else None
        excerpt = self._case_tail(case)
        if status is not None:
            self.mark(f"backend died: {_status_text(status)}")
            detail = f"backend {_status_text(status)}"
        else:
            detail = "sanitizer report while the backend runs"
        if report is not None:
            detail += f"; {report}"
        return Verdict(Outcome.CRASH, detail, exit_status=status, signal=signal_name(status),
                       report=report.text if report else None, log_excerpt=excerpt)

    def _probe(self) -> tuple[bool | None, str]:
        """One HW_PARAM_QUERY with ``probe_timeout`` on every connected stream (a backend
        may hang one ring only): False if any went unanswered, True if all answered,
        None if there was nothing to probe."""
        dev = self._dev
        if dev is None:
            return None, "no frontend"
        ms = max(1, int(self.config.probe_timeout * 1000))
        answered, silent = [], []
        for s in dev.streams:
            if not s.connected:
                continue
            if not _lock_free(s, self.config.probe_timeout):
                silent.append(f"{s.path} (busy)")  # a thread of the case still waits
                continue
            try:
                s.hw_param_query(timeout_ms=ms)
                answered.append(s.path)
            except RequestTimeout:
                silent.append(s.path)
            except FrontendError:
                continue
        if silent:
            return False, (f"probe HW_PARAM_QUERY got no answer within {ms} ms on "
                           + ", ".join(silent))
        if answered:
            return True, "probe HW_PARAM_QUERY answered on " + ", ".join(answered)
        return None, "no connected stream to probe"

    def _connection_problem(self) -> str | None:
        """None when BE and FE are Connected (again, within ``connect_timeout``)."""
        dev = self._dev
        if dev is None or not _fe_alive(dev):
            return None  # the case closed the frontend itself: reconnect, no verdict
        deadline = time.monotonic() + self.config.connect_timeout
        last = None
        while True:
            raw = self._read_be_state()
            last = raw
            state = XenbusState.parse(raw)
            if state == XenbusState.Closed:
                return f"backend state Closed (6) while connected ({self.be_path}/state)"
            if state is None:
                shown = "missing" if raw is None else f"invalid {raw!r}"
                return f"backend state {shown} while connected ({self.be_path}/state)"
            if state == XenbusState.Connected and dev.state == XenbusState.Connected \
                    and all(s.connected for s in dev.streams):
                return None
            if time.monotonic() >= deadline:
                return (f"device did not reconnect within {self.config.connect_timeout:g} s"
                        f" (BE state {last}, FE {dev.state.name})")
            time.sleep(0.05)

    def _read_be_state(self) -> str | None:
        try:
            return self._tool_store().read(f"{self.be_path}/state").decode(errors="replace")
        except XsError:
            return None

    def _leaks(self) -> list[Finding]:
        c, dev = self.config, self._dev
        if dev is None:
            return []
        refs: set[int] = set()
        fe_ports: set[int] = set()
        for s in dev.streams:
            if s.connected and s.channel is not None:
                refs |= {s.ring_ref, s.evt_ring_ref}
                fe_ports |= {s.req_port, s.evt_port}
            buf = s.shbuf
            if buf is not None and not buf.freed:
                refs |= set(buf.buf_grefs)
        findings = []
        maps = self.sim.mappings(granter=c.frontend_domid, mapper=c.backend_domid)
        extra = sorted({m.ref for m in maps if m.ref not in refs})
        if extra:
            findings.append(Finding(
                "grant-leak", f"backend domain {c.backend_domid} still maps "
                f"{len(extra)} page(s) of domain {c.frontend_domid} the connection does not "
                f"use: grefs {extra}", {"refs": extra, "expected": sorted(refs)}))
        ports = [p for p in self.sim.ports(c.backend_domid)
                 if p.state == PortState.INTERDOMAIN and p.remote_domid == c.frontend_domid
                 and p.remote_port not in fe_ports]
        if ports:
            findings.append(Finding(
                "port-leak", f"backend domain {c.backend_domid} has {len(ports)} port(s) "
                f"bound to domain {c.frontend_domid} the connection does not use: "
                + ", ".join(f"{p.port}->{p.remote_port}" for p in ports),
                {"ports": [[p.port, p.remote_port] for p in ports]}))
        return findings

    # -- helpers ---------------------------------------------------------------------------

    def _exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _case_text(self, case: CaseRun) -> str:
        return self.log_text(case.log_offset)

    def _case_tail(self, case: CaseRun) -> str:
        return self._tail(self._case_text(case))

    @staticmethod
    def _tail(text: str) -> str:
        return "\n".join(text.rstrip("\n").splitlines()[-_EXCERPT_LINES:])


def _status_text(status: int | None) -> str:
    if status is None:
        return "running"
    name = signal_name(status)
    return f"killed by {name}" if name else f"exit status {status}"


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _fe_alive(dev: FrontendDevice) -> bool:
    """False once the device was closed (by a case, or by us)."""
    return dev._thread is not None and dev._thread.is_alive()


def _lock_free(stream: FrontendStream, timeout: float) -> bool:
    lock = stream._req_lock
    if not lock.acquire(timeout=timeout):
        return False
    lock.release()
    return True


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@contextlib.contextmanager
def running_supervisor(out: str | os.PathLike[str], config: SupervisorConfig | None = None,
                       *, sim: Sim | None = None) -> Iterator[Supervisor]:
    """A started supervisor (on ``sim``, or on a simulated Xen run for the block);
    everything is stopped on the way out."""
    config = config or SupervisorConfig()
    with contextlib.ExitStack() as stack:
        if sim is None:
            sim = stack.enter_context(running_sim())
        sup = Supervisor(sim, config, out)
        stack.callback(sup.close)
        sup.start()
        yield sup


__all__ = [
    "DEFAULT_CARD", "RESTART_POLICIES", "BackendStartError", "CaseRun", "RestartPolicy",
    "Supervisor", "SupervisorConfig", "running_supervisor",
]
