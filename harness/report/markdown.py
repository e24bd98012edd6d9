"""``report.md``: the certification report for terminals and merge requests, rendered from
a results.json document alone (schema: :mod:`harness.report.results`); ``sndif-harness
report md`` re-renders it.

Overall verdict, identity, clauses per area, the clauses that did not pass (worst first)
with their cases and messages, and the untested clauses with why. Text from the results
is escaped for Markdown (and for the HTML a Markdown viewer lets through): messages go in
code fences longer than any backtick run inside them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from harness.report.html import NOT_PASSING, VERDICTS, judged_sides, sorted_clauses
from harness.report.identity import identity_rows

#: What can start emphasis, code, a link, a table cell or a heading inside a line.
_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")
_MESSAGE_LINES = 30


def md(value: Any) -> str:
    """Inline text: one line, Markdown specials backslash-escaped, ``<``/``&`` as entities
    (a viewer's HTML), pipes safe inside a table cell."""
    text = " ".join(("" if value is None else str(value)).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;")
    return _SPECIAL.sub(r"\\\1", text)


def code(value: Any) -> str:
    """Inline code (IDs, nodeids, paths: shown literally), however many backticks the text
    has; ``|`` is escaped, as a table cell still splits on it."""
    text = " ".join(("" if value is None else str(value)).split()).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def fenced(text: str) -> str:
    """A code block holding ``text`` verbatim, however many backticks it has."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _cut(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) <= _MESSAGE_LINES:
        return "\n".join(lines)
    return "\n".join([*lines[:_MESSAGE_LINES],
                      f"[... {len(lines) - _MESSAGE_LINES} more lines in results.json]"])


def _identity(doc: Mapping[str, Any]) -> list[str]:
    return [f"- **{k}**: {md(v)}" for k, v in identity_rows(doc)]


def _area_table(doc: Mapping[str, Any]) -> list[str]:
    summary = doc["summary"]
    lines = ["| area | " + " | ".join(md(v) for v in VERDICTS) + " |",
             "|---|" + "---:|" * len(VERDICTS)]
    for area, info in (summary.get("areas") or {}).items():
        counts = info.get("clauses") or {}
        lines.append(f"| {md(area)} {md(info.get('title'))} | "
                     + " | ".join(str(counts.get(v, 0)) for v in VERDICTS) + " |")
    total = summary.get("clauses") or {}
    lines.append("| **all** | " + " | ".join(str(total.get(v, 0)) for v in VERDICTS) + " |")
    return lines


def _failing(doc: Mapping[str, Any]) -> list[str]:
    cases = {str(c.get("nodeid")): c for c in doc["cases"]}
    out: list[str] = []
    for clause in sorted_clauses(doc):
        if clause.get("verdict") not in NOT_PASSING:
            continue
        out += ["", f"### {md(clause.get('verdict'))} {code(clause.get('id'))} "
                    f"\\[{md(clause.get('level'))}\\]", "", md(clause.get("requirement"))]
        for nodeid in clause.get("cases") or []:
            case = cases.get(str(nodeid)) or {}
            verdict = case.get("verdict")
            if verdict not in NOT_PASSING:
                continue
            out += ["", f"- **{md(verdict)}** {code(nodeid)}"]
            if case.get("expected") is not None or case.get("actual") is not None:
                out.append(f"  expected {md(case.get('expected'))}, "
                           f"actual {md(case.get('actual'))}")
            ev = case.get("evidence") or {}
            if ev.get("trace") or ev.get("backend_log"):
                out.append(f"  evidence: trace {code(ev.get('trace'))}, backend log "
                           f"{code(ev.get('backend_log'))}")
            if case.get("message"):
                out += ["", *("  " + line for line in
                              fenced(_cut(str(case["message"]))).splitlines())]
    return out or ["", "none"]


def _untested(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for c in doc["clauses"]:
        if c.get("judged_on_backend") and c.get("verdict") == "UNTESTED":
            why = f"untestable: {md(c.get('untestable'))}" if c.get("untestable") \
                else "no case cites it"
            out.append(f"- {code(c.get('id'))} \\[{md(c.get('level'))}\\] "
                       f"{md(c.get('requirement'))} ({why})")
    return out or ["none"]


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The Markdown report of a results.json document (see the module docstring)."""
    summary = doc["summary"]
    status = summary.get("exit_status")
    strict = " (strict: SHOULD clauses count)" if doc["run"].get("strict") else ""
    untested = _untested(doc)
    side, other = judged_sides(doc)
    lines = [
        "# sndif certification report", "",
        f"**Overall: {md(summary.get('overall'))}**: {md(summary.get('reason'))}{strict}"
        + ("" if status is None else f"; exit status {md(status)}"), "",
        "## Identity", "", *_identity(doc), "",
        f"## Clauses judged on the {side}, per area", "", *_area_table(doc), "",
        f"{md(summary.get('not_judged_on_backend', 0))} {other} clauses are not "
        f"judged on a {side}.", "",
        "## Clauses not passing (worst first)", *_failing(doc), "",
        f"## Untested clauses ({len(untested) if untested != ['none'] else 0})", "",
        *untested,
    ]
    return "\n".join(lines) + "\n"


__all__ = ["code", "fenced", "md", "render_markdown"]
