"""Judging the backend after a case, one question each: did it crash (exit, signal,
sanitizer report)? is it hung (a probe request goes unanswered)? is the connection still
up? did it leave grant mappings or bound ports behind (platform accounting)?"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.frontend import violations as V
from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import FrontendError, RequestTimeout
from harness.runner.sanitizers import SanitizerReport, find_reports
from harness.runner.verdicts import Finding, Outcome, Verdict, signal_name
from harness.world.backend_proc import status_text
from harness.xen.api import GrantAccounting, Store
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError


def crash_verdict(status: Callable[[], int | None], text: Callable[[], str],
                  report_grace: float, excerpt: Callable[[], str]) -> Verdict | None:
    """CRASH when the process is gone or a sanitizer report is in ``text()``; waits up
    to ``report_grace`` for a report still being written (ASan exits right after)."""
    st = status()
    reports = find_reports(text())
    if st is None and reports and not reports[-1].complete:
        deadline = time.monotonic() + report_grace
        while time.monotonic() < deadline and st is None:
            time.sleep(0.05)
            st = status()
            reports = find_reports(text())
            if reports and reports[-1].complete:
                break
    if st is None and not reports:
        return None
    if st is not None and not reports:
        time.sleep(0.05)  # whatever the dying process wrote last
        reports = find_reports(text())
    report: SanitizerReport | None = reports[0] if reports else None
    detail = (f"backend {status_text(st)}" if st is not None
              else "sanitizer report while the backend runs")
    if report is not None:
        detail += f"; {report}"
    return Verdict(Outcome.CRASH, detail, exit_status=st, signal=signal_name(st),
                   report=report.text if report else None, log_excerpt=excerpt())


def probe(dev: FrontendDevice | None, timeout: float) -> tuple[bool | None, str]:
    """One HW_PARAM_QUERY with ``timeout`` on every connected stream (a backend may hang
    one ring only): False if any went unanswered, True if all answered, None if there
    was nothing to probe."""
    if dev is None:
        return None, "no frontend"
    ms = max(1, int(timeout * 1000))
    answered, silent = [], []
    for s in dev.streams:
        if not s.connected:
            continue
        if not s.idle(timeout):
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
        return False, f"probe HW_PARAM_QUERY got no answer within {ms} ms on " + \
            ", ".join(silent)
    if answered:
        return True, "probe HW_PARAM_QUERY answered on " + ", ".join(answered)
    return None, "no connected stream to probe"


def fe_alive(dev: FrontendDevice | None) -> bool:
    """False once the device was closed (by a case, or by us)."""
    return dev is not None and dev.running


def connection_problem(dev: FrontendDevice | None, store: Store, be_path: str,
                       timeout: float) -> str | None:
    """None when BE and FE are Connected (again, within ``timeout``)."""
    if dev is None or not fe_alive(dev):
        return None  # the case closed the frontend itself: reconnect, no verdict
    deadline = time.monotonic() + timeout
    while True:
        try:
            raw: str | None = store.read(f"{be_path}/state").decode(errors="replace")
        except XsError:
            raw = None
        state = XenbusState.parse(raw)
        if state == XenbusState.Closed:
            return f"backend state Closed (6) while connected ({be_path}/state)"
        if state is None:
            shown = "missing" if raw is None else f"invalid {raw!r}"
            return f"backend state {shown} while connected ({be_path}/state)"
        if state == XenbusState.Connected and dev.state == XenbusState.Connected \
                and all(s.connected for s in dev.streams):
            return None
        if time.monotonic() >= deadline:
            return (f"device did not reconnect within {timeout:g} s (BE state {raw}, FE "
                    f"{dev.state.name})")
        time.sleep(0.05)


def leaks(dev: FrontendDevice | None, accounting: GrantAccounting, frontend_domid: int,
          backend_domid: int) -> list[Finding]:
    """Mappings of the frontend's pages by the backend domain, and ports it has bound to
    the frontend, beyond what the connection uses (rings, event pages, open buffers)."""
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
    maps = accounting.mappings(granter=frontend_domid, mapper=backend_domid)
    extra = sorted({m.ref for m in maps if m.ref not in refs})
    if extra:
        findings.append(Finding(
            "grant-leak", f"backend domain {backend_domid} still maps {len(extra)} page(s) "
            f"of domain {frontend_domid} the connection does not use: grefs {extra}",
            {"refs": extra, "expected": sorted(refs)}))
    # one domain at both ends (dom0 on a real host): the frontend's own ports are in the
    # same list, bound to that domain too
    own = fe_ports if frontend_domid == backend_domid else set()
    ports = [p for p in accounting.ports(backend_domid)
             if p.interdomain and p.remote_domid == frontend_domid
             and p.remote_port not in fe_ports and p.port not in own]
    if ports:
        findings.append(Finding(
            "port-leak", f"backend domain {backend_domid} has {len(ports)} port(s) bound "
            f"to domain {frontend_domid} the connection does not use: "
            + ", ".join(f"{p.port}->{p.remote_port}" for p in ports),
            {"ports": [[p.port, p.remote_port] for p in ports]}))
    return findings


#: Recorded violations that are not judged here: a late response follows a timeout, which
#: the hang check judges (and a case may time out on purpose).
_NOT_HERE = {V.LATE_RESPONSE.name}


def violations(dev: FrontendDevice | None, since_ns: int) -> list[Finding]:
    """The MUST/REF-level violations the frontend recorded since ``since_ns``
    (CLOCK_MONOTONIC): each fails the case, citing its clauses."""
    if dev is None:
        return []
    seen = [v for v in dev.violations if v.t_ns >= since_ns
            and v.kind.level in ("MUST", "REF") and v.kind.name not in _NOT_HERE]
    if not seen:
        return []
    first = seen[0]
    return [Finding("protocol-violation",
                    f"{len(seen)} protocol violation(s) recorded by the frontend, first: "
                    f"{first.kind.name} ({', '.join(first.clauses)}): {first.message}",
                    {"violations": [{"kind": v.kind.name, "clauses": list(v.clauses),
                                     "message": v.message, "stream": v.stream,
                                     "expected": repr(v.expected), "actual": repr(v.actual)}
                                    for v in seen[:20]]})]


def caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
