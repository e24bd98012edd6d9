"""Allure results for the certification cases: the clause registry as Allure's behaviours,
the harness verdict as the Allure status, the protocol exchange as steps and the case's
evidence as attachments.

Active only when allure-pytest writes results (``--alluredir``; ``sndif-harness certify``
passes ``--alluredir DIR/allure-results`` with its ``--report-dir DIR``). Registered by
:mod:`harness.certify.plugin`; it changes no verdict and writes nothing else. Per case:

labels       ``epic``: the area ("A XenStore configuration and state transitions"),
             ``feature``: the clause group (:func:`clause_group`: ten clause numbers a
             group, "SND-A-10…19"; the AMBIG-n of an area form one group), ``story``: each
             cited clause with its one-line requirement (:func:`story`), ``severity`` from
             the strongest level cited (:data:`SEVERITY_OF_LEVEL`), ``verdict`` and a tag:
             the harness verdict (also a parameter, left out of Allure's history id)
description  the cited clauses' requirements (Markdown), then the verdict and its message
status       from the verdict (:data:`STATUS_OF_VERDICT`), not from pytest's outcome: a
             broken SHOULD (NONSTRICT) or an AMBIG observation (INFO) raised an assertion
             but fails nothing, so Allure must not show it failed or broken; an
             INCONCLUSIVE case is "broken" (the harness or environment failed)
steps        each protocol action of the case's trace (requests sent, responses and
             events received, state changes, violations seen), at most
             :data:`MAX_STEPS` and then one step saying how many more; a violation is a
             failed step carrying the hexdump of its message
attachments  the decoded trace, the XenStore transcript, the offending messages (dissected
             and hexdumped: those a violation names and, for a FAIL/CRASH/HANG, requests
             left unanswered), expected vs actual, the backend's log for the case, the
             pacing plot (SVG) of a pacing case, and the case's results.json object

Without ``--report-dir`` (no case record) only the labels and description are set, from the
``clause`` markers. A failure here must not cost the run a verdict: it becomes an attachment
of the case ("allure: not decorated"), never an error of the test.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from harness.report.registry import Citation, Clause, Registry, RegistryError, load_registry

#: Allure's severity of each clause level (the strongest level a case cites wins).
SEVERITY_OF_LEVEL = {"MUST": "critical", "REF": "normal", "SHOULD": "minor",
                     "MAY": "trivial", "AMBIG": "trivial"}
_LEVEL_ORDER = ("MUST", "REF", "SHOULD", "MAY", "AMBIG")
#: Allure status of each harness verdict.
STATUS_OF_VERDICT = {"PASS": "passed", "FAIL": "failed", "CRASH": "failed", "HANG": "failed",
                     "NONSTRICT": "passed", "INFO": "passed", "N/A": "skipped",
                     "INCONCLUSIVE": "broken", "UNTESTED": "skipped"}
#: Why a verdict's Allure status differs from what pytest's outcome would have given.
_STATUS_NOTE = {
    "NONSTRICT": "a SHOULD/MAY clause is broken; this fails the run only with --strict",
    "INFO": "an AMBIG point: observed and reported, not judged",
    "N/A": "an optional feature the backend does not offer",
    "INCONCLUSIVE": "the harness or the environment failed: no verdict on the backend",
}
#: Protocol actions shown as steps per case; the trace attachment has them all.
MAX_STEPS = 200
#: Characters of the case's message in the Allure status (results.json has all of it).
_MAX_MESSAGE = 4000
#: Lines of the decoded trace and of the backend log attached (the files have the rest).
MAX_TRACE_LINES = 5000
MAX_LOG_LINES = 400
_STEP_KINDS = ("req", "resp", "evt", "state", "violation")
_XS_KINDS = ("xs", "watch", "state")
_STATE_NAMES = {0: "Unknown", 1: "Initialising", 2: "InitWait", 3: "Initialised",
                4: "Connected", 5: "Closing", 6: "Closed", 7: "Reconfiguring",
                8: "Reconfigured"}
_SND = re.compile(r"^SND-([A-H])-(\d\d)$")
#: The certification plugin's user property holding the case record (a JSON string).
_CASE_PROPERTY = "sndif-case"


# -- labels and description (pure) ---------------------------------------------------------

def clause_group(clause: Clause, registry: Registry) -> str:
    """The Allure feature of a clause: its ten-number group within the area, bounded by
    the registry's clauses ("SND-A-01…09", "SND-A-10…19", "SND-A-20…24"); an area's
    AMBIG-n clauses are one group ("AMBIG (area B)"). clauses.md has no finer headings
    than the areas, so the numbering is the only grouping it offers."""
    m = _SND.match(clause.id)
    if m is None:
        return f"AMBIG (area {clause.area})"
    area, num = m.group(1), int(m.group(2))
    lo, hi = num // 10 * 10, num // 10 * 10 + 9
    nums = [int(n.group(2)) for c in registry if (n := _SND.match(c.id))
            and n.group(1) == area and lo <= int(n.group(2)) <= hi]
    return f"SND-{area}-{min(nums):02d}…{max(nums):02d}"


def story(clause: Clause, width: int = 110) -> str:
    """The clause as one line: its ID and the first sentence of its requirement."""
    first = re.split(r"(?<=\.)\s", clause.requirement, maxsplit=1)[0]
    if len(first) > width:
        first = first[:width - 1].rstrip() + "…"
    return f"{clause.id} {first}"


def severity(citations: Sequence[Citation]) -> str:
    """Allure severity of the strongest level cited (``normal`` when nothing is cited)."""
    levels = [c.level for c in citations if c.level in _LEVEL_ORDER]
    if not levels:
        return "normal"
    return SEVERITY_OF_LEVEL[min(levels, key=_LEVEL_ORDER.index)]


def labels(citations: Sequence[Citation], registry: Registry) -> list[tuple[str, str]]:
    """epic (area), feature (group), story (clause) and severity labels, each once."""
    out: list[tuple[str, str]] = []
    for cit in citations:
        c = cit.clause
        for label in (("epic", f"{c.area} {registry.areas[c.area]}"),
                      ("feature", clause_group(c, registry)), ("story", story(c))):
            if label not in out:
                out.append(label)
    out.append(("severity", severity(citations)))
    return out


def description(citations: Sequence[Citation], case: dict[str, Any] | None) -> str:
    """Markdown: each cited clause's requirement, then the verdict and its message."""
    lines = ["Requirements this case judges:", ""]
    for cit in citations:
        c = cit.clause
        at = f"cited at {cit.level}; " if cit.level != c.level else ""
        lines.append(f"* **{c.id}** [{', '.join(c.levels)}, {c.side}] {c.requirement} "
                     f"_({at}source: {c.source})_")
    if not citations:
        lines.append("* (no clause cited)")
    if case is not None:
        lines += ["", f"**Harness verdict: {case['verdict']}**"
                  + (f" ({_STATUS_NOTE[case['verdict']]})"
                     if case["verdict"] in _STATUS_NOTE else "")]
        if case.get("message"):
            lines += ["", "```", str(case["message"]).rstrip()[:4000], "```"]
    return "\n".join(lines)


# -- evidence (pure) -----------------------------------------------------------------------

def hexdump(raw: bytes) -> str:
    """16 octets a line: offset, hex, ASCII."""
    out = []
    for off in range(0, len(raw), 16):
        chunk = raw[off:off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        out.append(f"{off:04x}  {chunk.hex(' '):<47}  {text}")
    return "\n".join(out)


def _raw(rec: Any) -> bytes | None:
    raw = rec.fields.get("raw")
    if isinstance(raw, str):
        try:
            return bytes.fromhex(raw)
        except ValueError:
            return None
    return bytes(raw) if isinstance(raw, bytes | bytearray) else None


def _dissect(kind: str, raw: bytes) -> str:
    from protocol_models import sndif

    cls = {"req": sndif.XenSndReq, "resp": sndif.XenSndResp, "evt": sndif.XenSndEvt}[kind]
    return str(cls(raw).show(dump=True)).rstrip()


def _summary(kind: str, raw: bytes | None) -> str:
    if raw is None:
        return kind
    try:
        from protocol_models import sndif

        cls = {"req": sndif.XenSndReq, "resp": sndif.XenSndResp, "evt": sndif.XenSndEvt}[kind]
        text: str = cls(raw).summary()
        return text
    except Exception:  # a message the models cannot dissect is still shown, as hex
        return f"{kind} {raw.hex()}"


def step_name(rec: Any) -> str:
    """One line for a protocol action of the trace."""
    f = rec.fields
    where = f" [stream {f['stream']}]" if f.get("stream") else ""
    if rec.kind == "req":
        return f"send {_summary('req', _raw(rec))}{where}"
    if rec.kind == "resp":
        return f"receive {_summary('resp', _raw(rec))}{where}"
    if rec.kind == "evt":
        return f"event {_summary('evt', _raw(rec))}{where}"
    if rec.kind == "state":
        st = f.get("state")
        name = _STATE_NAMES.get(st, "?") if isinstance(st, int) else "?"
        return f"{f.get('who', '?')} state {st} ({name}) at {f.get('path', '?')}"
    if rec.kind == "violation":
        return (f"violation {f.get('violation')} [{', '.join(f.get('clauses') or [])}]"
                f"{where}: {f.get('message', '')}")
    return f"{rec.kind} " + " ".join(f"{k}={v}" for k, v in f.items())


def unanswered(records: Iterable[Any]) -> list[Any]:
    """Requests with no response of the same stream and id after them."""
    open_: dict[tuple[Any, int], Any] = {}
    for rec in records:
        raw = _raw(rec)
        if rec.kind not in ("req", "resp") or raw is None or len(raw) < 2:
            continue
        key = (rec.fields.get("stream"), int.from_bytes(raw[:2], "little"))
        if rec.kind == "req":
            open_[key] = rec
        else:
            open_.pop(key, None)
    return list(open_.values())


def offending_messages(records: Sequence[Any], verdict: str | None) -> str:
    """The messages a violation names, and (for a failing verdict) the requests left
    unanswered: each dissected with the models and hexdumped."""
    parts = []
    # a violation carries the raw message but not its kind: the trace's own record of the
    # same octets says whether it was a response or an event
    kinds = {raw: r.kind for r in records if r.kind in ("req", "resp", "evt")
             and (raw := _raw(r)) is not None}
    for rec in records:
        raw = _raw(rec)
        if rec.kind == "violation" and raw:
            kind = kinds.get(raw, "raw")
            head = f"violation {rec.fields.get('violation')}: {rec.fields.get('message', '')}"
            parts.append(_message_text(head, kind, raw))
    if verdict in ("FAIL", "CRASH", "HANG"):
        for rec in unanswered(records):
            raw = _raw(rec)
            if raw:
                parts.append(_message_text("request left unanswered" + (
                    f" [stream {rec.fields['stream']}]" if rec.fields.get("stream") else ""),
                    "req", raw))
    return "\n\n".join(parts)


def _message_text(head: str, kind: str, raw: bytes) -> str:
    body = ""
    if kind in ("req", "resp", "evt"):
        try:
            body = _dissect(kind, raw) + "\n"
        except Exception:  # the hexdump is still evidence
            body = ""
    return f"{head}\n{body}{hexdump(raw)}"


def expected_actual(case: dict[str, Any], records: Sequence[Any]) -> str:
    """The case's expected/actual, and those of every violation the trace holds."""
    parts = []
    if case.get("expected") is not None or case.get("actual") is not None:
        parts.append(f"case {case['nodeid']}\n  expected: {case.get('expected')}\n"
                     f"  actual:   {case.get('actual')}")
    for rec in records:
        if rec.kind == "violation":
            f = rec.fields
            parts.append(f"violation {f.get('violation')} [{', '.join(f.get('clauses') or [])}]"
                         f": {f.get('message', '')}\n  expected: {f.get('expected')}\n"
                         f"  actual:   {f.get('actual')}")
    if not parts and case.get("verdict") in ("FAIL", "NONSTRICT", "CRASH", "HANG") \
            and case.get("message"):
        parts.append("the case states no separate expected/actual; its message:\n"
                     + str(case["message"]))
    return "\n\n".join(parts)


def pacing_plot(case: dict[str, Any]) -> str | None:
    """The pacing plot of a pacing case as a standalone SVG file's text, else None."""
    pacing = (case.get("evidence") or {}).get("pacing")
    if not isinstance(pacing, dict):
        return None
    from harness.report.plots import pacing_svg

    svg = pacing_svg(pacing, title=case["nodeid"], salt=case["nodeid"])
    if svg is None:
        return None
    # the inline form drops the namespace (HTML does not need it); a file needs it back
    return svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)


# -- the pytest side -----------------------------------------------------------------------

class _Decorator:
    """Fills one Allure test result (allure_commons model objects) from a case."""

    def __init__(self, item: pytest.Item, result: Any, report: pytest.TestReport) -> None:
        self.item = item
        self.result = result
        self.report = report
        # trace timestamps are time.monotonic_ns(); Allure wants epoch milliseconds
        self.epoch_offset_ms = time.time() * 1000 - time.monotonic_ns() / 1e6

    def attach(self, target: Any, body: str | bytes, name: str, mime: str, ext: str) -> None:
        from allure_commons import plugin_manager
        from allure_commons.model2 import ATTACHMENT_PATTERN, Attachment

        file_name = ATTACHMENT_PATTERN.format(prefix=uuid4(), ext=ext)
        plugin_manager.hook.report_attached_data(body=body, file_name=file_name)
        target.attachments.append(Attachment(name=name, source=file_name, type=mime))

    def text(self, target: Any, body: str, name: str) -> None:
        if body:
            self.attach(target, body, name, "text/plain", "txt")

    def label(self, name: str, value: str) -> None:
        from allure_commons.model2 import Label

        self.result.labels.append(Label(name=name, value=value))

    def decorate(self, registry: Registry) -> None:
        case = _case(self.report)
        citations = _citations(case, self.item, registry)
        taken = {"epic", "feature", "story", "severity"}
        # an explicit @allure.epic/... on a case would duplicate ours: ours are the registry
        self.result.labels = [lb for lb in self.result.labels if lb.name not in taken]
        for name, value in labels(citations, registry):
            self.label(name, value)
        self.result.description = description(citations, case)
        if case is None:
            return
        self.verdict(case)
        records = _records(case)
        self.steps(records)
        self.evidence(case, records)

    def verdict(self, case: dict[str, Any]) -> None:
        from allure_commons.model2 import Parameter, StatusDetails

        verdict = case["verdict"]
        self.label("verdict", verdict)
        self.label("tag", verdict)
        self.result.parameters.append(Parameter(name="verdict", value=verdict, excluded=True))
        self.result.status = STATUS_OF_VERDICT.get(verdict, "unknown")
        details = self.result.statusDetails
        trace = details.trace if details is not None else None
        text = str(case.get("message") or "").strip()
        if verdict == "PASS" and not text:
            self.result.statusDetails = None
            return
        note = _STATUS_NOTE.get(verdict)
        head = verdict + (f" ({note})" if note else "")
        if text.startswith(verdict + ":"):  # supervisor verdicts name themselves
            text = text[len(verdict) + 1:].lstrip()
        message = f"{head}: {text[:_MAX_MESSAGE]}" if text else head
        self.result.statusDetails = StatusDetails(message=message, trace=trace)

    def steps(self, records: Sequence[Any]) -> None:
        from allure_commons.model2 import StatusDetails, TestStepResult

        actions = [r for r in records if r.kind in _STEP_KINDS]
        shown = actions[:MAX_STEPS]
        # a violation is the point of a failing case: shown even past the cap
        shown += [r for r in actions[MAX_STEPS:] if r.kind == "violation"]
        for rec in sorted(shown, key=lambda r: r.t_ns):
            at = int(self.epoch_offset_ms + rec.t_ns / 1e6)
            step = TestStepResult(name=step_name(rec)[:300], start=at, stop=at,
                                  status="passed", stage="finished")
            if rec.kind == "violation":
                step.status = "failed"
                step.statusDetails = StatusDetails(message=str(rec.fields.get("message")))
                raw = _raw(rec)
                if raw:
                    self.text(step, hexdump(raw), "message (hexdump)")
            self.result.steps.append(step)
        more = len(actions) - len(shown)
        if more > 0:
            self.result.steps.append(TestStepResult(
                name=f"… {more} more protocol actions (all in the attached trace)",
                status="passed", stage="finished"))

    def evidence(self, case: dict[str, Any], records: Sequence[Any]) -> None:
        from harness.trace import render

        res = self.result
        if records:
            lines = render(records).splitlines()
            cut = len(lines) - MAX_TRACE_LINES
            body = "\n".join(lines[:MAX_TRACE_LINES]) + (
                f"\n… {cut} more lines in {case['evidence'].get('trace')}" if cut > 0 else "")
            self.text(res, body, "trace (decoded)")
            xs = [r for r in records if r.kind in _XS_KINDS]
            self.text(res, render(xs) if xs else "", "XenStore transcript")
        self.text(res, offending_messages(records, case["verdict"]),
                  "offending messages (hexdump)")
        self.text(res, expected_actual(case, records), "expected vs actual")
        self.text(res, self.backend_log(case), "backend log (this case)")
        svg = pacing_plot(case)
        if svg is not None:
            self.attach(res, svg, "pacing: position against time, interval histogram",
                        "image/svg+xml", "svg")
        self.attach(res, json.dumps(case, indent=2, default=str), "case record (results.json)",
                    "application/json", "json")

    def backend_log(self, case: dict[str, Any]) -> str:
        excerpt = str((case.get("evidence") or {}).get("log_excerpt") or "")
        if excerpt:
            return excerpt
        # the plugin keeps an excerpt only for failing cases; the log of a passing case is
        # evidence too (what the backend said while it did the right thing)
        sup = getattr(self.item, "funcargs", {}).get("backend_supervisor")
        if sup is None:
            return ""
        try:
            lines = sup.case_log(case["nodeid"]).rstrip("\n").splitlines()
        except Exception:  # no log span for this case (e.g. the log was truncated)
            return ""
        return "\n".join(lines[-MAX_LOG_LINES:])


def _case(report: pytest.TestReport) -> dict[str, Any] | None:
    raw = next((v for k, v in report.user_properties if k == _CASE_PROPERTY), None)
    if not isinstance(raw, str) or not raw:
        return None
    case: dict[str, Any] = json.loads(raw)
    return case


def _citations(case: dict[str, Any] | None, item: pytest.Item,
               registry: Registry) -> list[Citation]:
    refs = list(case["clauses"]) if case is not None else [
        ref for mark in item.iter_markers("clause") for ref in mark.args]
    out: list[Citation] = []
    for ref in refs:
        try:
            out.append(registry.cite(ref))
        except RegistryError:  # the certification plugin reports bad markers
            continue
    return out


def _records(case: dict[str, Any]) -> list[Any]:
    from harness.trace import load

    path = (case.get("evidence") or {}).get("trace")
    if not path or not Path(path).is_file():
        return []
    return list(load(path))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """After teardown, once the certification plugin judged the case (its wrapper is inside
    this one: tryfirst) and allure-pytest set its own status: the case as Allure shows it.
    The test result is still open (allure-pytest writes it at logfinish)."""
    report = yield
    if call.when != "teardown":
        return report
    listener = item.config.pluginmanager.get_plugin("allure_listener")
    if listener is None:
        return report
    result = listener.allure_logger.get_test(None)
    if result is None:
        return report
    if not any(True for _ in item.iter_markers("clause")) and not _case(report):
        return report  # not a certification case (the harness's own tests)
    dec = _Decorator(item, result, report)
    try:
        dec.decorate(load_registry())
    except Exception as exc:  # evidence is best effort: the verdict stands without it
        dec.text(result, f"{type(exc).__name__}: {exc}", "allure: not decorated")
    return report


__all__ = ["MAX_STEPS", "SEVERITY_OF_LEVEL", "STATUS_OF_VERDICT", "clause_group",
           "description", "expected_actual", "hexdump", "labels", "offending_messages",
           "pacing_plot", "severity", "step_name", "story", "unanswered"]
