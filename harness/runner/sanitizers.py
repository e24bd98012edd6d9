"""Find sanitizer reports (AddressSanitizer, LeakSanitizer, UndefinedBehaviorSanitizer,
ThreadSanitizer, MemorySanitizer) in a backend's output.

A report starts with ``==PID==ERROR: <Tool>: ...`` (or ``WARNING: ThreadSanitizer:``, or a
UBSan ``file:line:col: runtime error: ...`` line) and ends with its ``SUMMARY: <Tool>:``
line (plus ASan's ``==PID==ABORTING`` when present). A start without a summary yet is
*partial*: the program is still writing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_START = re.compile(
    r"^(?:==\d+==\s*)?(?:ERROR|WARNING): (?P<tool>AddressSanitizer|LeakSanitizer|"
    r"ThreadSanitizer|MemorySanitizer|UndefinedBehaviorSanitizer|HWAddressSanitizer)\b.*$"
    r"|^(?P<ubsan>\S+:\d+(?::\d+)?: runtime error: .*)$",
    re.MULTILINE)
_SUMMARY = re.compile(r"^SUMMARY: (?P<tool>\w+Sanitizer)\b: ?(?P<what>.*)$", re.MULTILINE)
_ABORTING = re.compile(r"^==\d+==ABORTING\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SanitizerReport:
    tool: str  # e.g. "AddressSanitizer"
    headline: str  # the ERROR line
    summary: str | None  # the SUMMARY line's text, None while partial
    text: str  # the whole report

    @property
    def complete(self) -> bool:
        return self.summary is not None

    def __str__(self) -> str:
        return f"{self.tool}: {self.summary or self.headline}"


def find_reports(text: str) -> list[SanitizerReport]:
    """Every report in ``text``, in order (the last may be partial)."""
    reports: list[SanitizerReport] = []
    pos = 0
    while True:
        m = _START.search(text, pos)
        if m is None:
            return reports
        tool = m.group("tool") or "UndefinedBehaviorSanitizer"
        # a line of "=====" usually precedes ASan's ERROR line: keep it with the report
        start = m.start()
        prev = text.rfind("\n", 0, max(0, start - 1))
        if text[prev + 1:start].strip().startswith("====="):
            start = prev + 1
        s = _SUMMARY.search(text, m.end())
        nxt = _START.search(text, m.end())
        if s is None or (nxt is not None and nxt.start() < s.start()
                         and not m.group("ubsan")):
            # no summary before the next report: partial (or a tool that never sums up)
            end = nxt.start() if nxt is not None else len(text)
            reports.append(SanitizerReport(tool, m.group(0).strip(), None,
                                           text[start:end].rstrip()))
            if nxt is None:
                return reports
            pos = nxt.start()
            continue
        end = s.end()
        a = _ABORTING.search(text, end)
        if a is not None and text[end:a.start()].count("\n") <= 40:
            end = a.end()  # the shadow-byte table then ==PID==ABORTING
        reports.append(SanitizerReport(tool, m.group(0).strip(), s.group("what").strip(),
                                       text[start:end].rstrip()))
        pos = end
