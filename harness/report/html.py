"""``report.html``: the certification report a person reads and signs off, rendered from a
results.json document alone (schema: :mod:`harness.report.results`), so it can be
re-rendered later (``sndif-harness report html``).

One self-contained file: inline CSS, inline SVG plots (:mod:`harness.report.plots`), no
script, no external reference. Every text from the results is escaped (a backend's
messages and logs are untrusted). Evidence links (case trace, backend log) are relative to
the report directory, prefixed by ``evidence_prefix`` when the page is written elsewhere;
absolute paths are shown, not linked.

Sections: overall verdict; identity (backend, binary and its sha256, profile, harness,
platform, start and end); clauses judged per area; every clause, worst verdict first
(FAIL/CRASH/HANG, NONSTRICT, INCONCLUSIVE, INFO, PASS, N/A, UNTESTED) with the cases
citing it; the cases that did not pass (message, expected vs actual, observations, log
excerpt); the coverage matrix (area x verdict, clause IDs) and the untested clauses with
why; the pacing plots.
"""

from __future__ import annotations

import html
import json
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from harness.report.identity import identity_rows
from harness.report.plots import pacing_svg
from harness.report.results import verdict_rank
from harness.report.verdicts import SEVERITY

VERDICTS = [v.value for v in SEVERITY]
#: Verdicts that are not a pass: their cases get a detailed entry.
NOT_PASSING = {"CRASH", "HANG", "FAIL", "NONSTRICT", "INCONCLUSIVE"}
_MESSAGE_CHARS = 8000  # a message or log excerpt beyond this is cut (the file has it all)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.5em;margin:0 0 .3em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.zero{color:#bbb}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:.5em;overflow-x:auto;
white-space:pre-wrap;word-break:break-word;max-height:30em;overflow-y:auto}
code,pre{font-family:ui-monospace,monospace;font-size:12px}
.overall{font-size:2.4em;font-weight:bold;padding:.3em .6em;border-radius:.2em;
display:inline-block;color:#fff}
.v{font-weight:bold;padding:0 .35em;border-radius:.2em;white-space:nowrap}
.v-PASS{background:#1e7e34;color:#fff}.v-FAIL,.v-CRASH,.v-HANG{background:#c62828;color:#fff}
.v-NONSTRICT{background:#ef8f00;color:#fff}.v-INCONCLUSIVE{background:#6a4c93;color:#fff}
.v-INFO{background:#1565c0;color:#fff}.v-NA{background:#9e9e9e;color:#fff}
.v-UNTESTED{background:#e0e0e0;color:#333}.v-RUNNING{background:#f9a825;color:#222}
.overall.v-UNTESTED{color:#333}
dl.id{display:grid;grid-template-columns:max-content auto;gap:.15em 1em}
dl.id dt{font-weight:bold}dl.id dd{margin:0;word-break:break-all}
.case{border-left:4px solid #ccc;padding:.2em .8em;margin:1em 0}
.case.bad{border-color:#c62828}.muted{color:#777}
svg{max-width:100%;height:auto}
#clause-table td:first-child{white-space:nowrap}
#clause-table td:last-child,#case-table code{word-break:break-all}
"""


def esc(value: Any) -> str:
    """Any value as HTML text (quotes too: also safe inside an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def _css_class(verdict: str) -> str:
    return "v-NA" if verdict == "N/A" else f"v-{verdict}" if verdict.isalpha() else "v-"


def badge(verdict: Any) -> str:
    text = str(verdict)
    return f'<span class="v {_css_class(text)}">{esc(text)}</span>'


def anchor(kind: str, name: str) -> str:
    """An id for an element: only [A-Za-z0-9-_] survive (nodeids have / : [ ])."""
    return kind + "-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def evidence_link(path: Any, label: str, prefix: str = "") -> str:
    """A link to an evidence file relative to the report directory; an absolute path (or
    anything with a scheme) is only shown."""
    if not isinstance(path, str) or not path:
        return ""
    if posixpath.isabs(path) or ":" in path.split("/", 1)[0]:
        return f'{esc(label)}: <code>{esc(path)}</code>'
    target = posixpath.join(prefix, path) if prefix else path
    return f'<a href="{esc(quote(target, safe="/._-"))}">{esc(label)}</a>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], attrs: str = "") -> str:
    """``head`` is escaped here; each cell of ``rows`` is HTML already."""
    out = [f"<table{attrs}><thead><tr>", *(f"<th>{esc(h)}</th>" for h in head),
           "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(row) + "</tr>" for row in rows]
    out.append("</tbody></table>")
    return "".join(out)


def _count_cell(n: int) -> str:
    return f'<td class="n{" zero" if not n else ""}">{n}</td>'


def _cut(text: str) -> str:
    if len(text) <= _MESSAGE_CHARS:
        return text
    return text[:_MESSAGE_CHARS] + f"\n[... {len(text) - _MESSAGE_CHARS} more characters]"


def _clause_ids(case: Mapping[str, Any]) -> list[str]:
    return [str(ref).split(":", 1)[0] for ref in case.get("clauses") or []]


# -- sections --------------------------------------------------------------------------------

def _head(doc: Mapping[str, Any]) -> str:
    summary, run = doc["summary"], doc["run"]
    overall = str(summary.get("overall", "?"))
    status = summary.get("exit_status")
    return (f'<h1>sndif certification report</h1>'
            f'<div id="overall" class="overall {_css_class(overall)}">{esc(overall)}</div>'
            f'<p id="reason">{esc(summary.get("reason"))}'
            f'{"" if status is None else f"; exit status {esc(status)}"}'
            f'{" (strict: SHOULD clauses count)" if run.get("strict") else ""}</p>')


def _identity(doc: Mapping[str, Any]) -> str:
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in identity_rows(doc))
    return f'<h2 id="identity">Identity</h2><dl class="id">{items}</dl>'


def judged_sides(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(the side judged, the clauses not judged) of a run: a backend's certification, or a
    frontend's (``certify-frontend``: run.judged = "frontend")."""
    if (doc.get("run") or {}).get("judged") == "frontend":
        return "frontend", "backend-side"
    return "backend", "frontend/toolstack"


def _areas(doc: Mapping[str, Any]) -> str:
    summary = doc["summary"]
    areas: Mapping[str, Any] = summary.get("areas") or {}
    rows = []
    for area, info in areas.items():
        counts = info.get("clauses") or {}
        rows.append([f"<td>{esc(area)} {esc(info.get('title'))}</td>",
                     *(_count_cell(int(counts.get(v, 0))) for v in VERDICTS)])
    total = summary.get("clauses") or {}
    rows.append(["<td><b>all</b></td>", *(_count_cell(int(total.get(v, 0)))
                                          for v in VERDICTS)])
    cases = summary.get("cases") or {}
    case_line = ", ".join(f"{esc(v)} {esc(n)}" for v, n in cases.items()) or "none"
    side, other = judged_sides(doc)
    return (f'<h2 id="areas">Clauses judged on the {side}, per area</h2>'
            + _table(["area", *VERDICTS], rows, ' id="verdict-table"')
            + f'<p class="muted">{esc(summary.get("not_judged_on_backend", 0))} '
              f'{other} clauses are not judged on a {side}. '
              f'Cases: {case_line}.</p>')


def _case_refs(case_ids: list[str], cases: Mapping[str, Mapping[str, Any]],
               prefix: str) -> str:
    parts = []
    for nodeid in case_ids:
        case = cases.get(nodeid)
        if case is None:
            parts.append(f"<code>{esc(nodeid)}</code>")
            continue
        ev = case.get("evidence") or {}
        links = [x for x in (evidence_link(ev.get("trace"), "trace", prefix),
                             evidence_link(ev.get("backend_log"), "backend log", prefix)) if x]
        parts.append(f'{badge(case.get("verdict"))} <a href="#{anchor("case", nodeid)}">'
                     f'<code>{esc(nodeid)}</code></a>'
                     + (f' <span class="muted">({" | ".join(links)})</span>' if links else ""))
    return "<br>".join(parts)


def sorted_clauses(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The clauses worst verdict first, registry order within a verdict."""
    return sorted(doc["clauses"], key=lambda c: verdict_rank(str(c.get("verdict"))))


def _clauses(doc: Mapping[str, Any], prefix: str) -> str:
    cases = {str(c.get("nodeid")): c for c in doc["cases"]}
    rows = []
    for c in sorted_clauses(doc):
        why = ""
        if not c.get("judged_on_backend"):
            why = f'<br><span class="muted">not judged on a backend: {esc(c.get("reason"))}'\
                  "</span>"
        elif c.get("verdict") == "UNTESTED" and c.get("untestable"):
            why = f'<br><span class="muted">untestable: {esc(c.get("untestable"))}</span>'
        rows.append([f'<td id="{anchor("clause", str(c.get("id")))}"><code>'
                     f'{esc(c.get("id"))}</code></td>',
                     f"<td>{esc(c.get('level'))}</td>", f"<td>{esc(c.get('side'))}</td>",
                     f"<td>{esc(c.get('requirement'))}{why}</td>",
                     f"<td>{badge(c.get('verdict'))}</td>",
                     f"<td>{_case_refs(list(c.get('cases') or []), cases, prefix)}</td>"])
    return ('<h2 id="clauses">Clauses (worst verdict first)</h2>'
            + _table(["ID", "level", "side", "our requirement", "verdict", "cases"], rows,
                     ' id="clause-table"'))


def _case_detail(case: Mapping[str, Any], prefix: str) -> str:
    nodeid = str(case.get("nodeid"))
    verdict = str(case.get("verdict"))
    ev = case.get("evidence") or {}
    out = [f'<div class="case{" bad" if verdict in NOT_PASSING else ""}" '
           f'id="{anchor("case", nodeid)}"><h3>{badge(verdict)} <code>{esc(nodeid)}</code>'
           "</h3>"]
    clauses = " ".join(f'<a href="#{anchor("clause", cid)}"><code>{esc(ref)}</code></a>'
                       for cid, ref in zip(_clause_ids(case), case.get("clauses") or [],
                                           strict=False))
    out.append(f"<p>clauses: {clauses or 'none'}; phase {esc(case.get('phase'))}; "
               f"{esc(case.get('duration'))} s"
               + ("; a supervisor verdict (not lowered by the levels)"
                  if case.get("absolute") else "") + "</p>")
    if case.get("expected") is not None or case.get("actual") is not None:
        out.append(_table(["expected", "actual"],
                          [[f"<td><code>{esc(case.get('expected'))}</code></td>",
                            f"<td><code>{esc(case.get('actual'))}</code></td>"]],
                          ' class="expected-actual"'))
    if case.get("message"):
        out.append(f'<pre class="message">{esc(_cut(str(case["message"])))}</pre>')
    for obs in case.get("observations") or []:
        if isinstance(obs, Mapping):
            what, value = obs.get("what"), obs.get("value")
        else:
            what, value = "observed", obs
        out.append(f"<p>observed: {esc(what)} = <code>"
                   f"{esc(json.dumps(value, default=str))}</code></p>")
    backend = case.get("backend")
    if isinstance(backend, Mapping) and backend.get("message"):
        out.append(f"<p>supervisor: {esc(backend.get('outcome'))}: "
                   f"{esc(backend.get('message'))}</p>")
    links = [x for x in (evidence_link(ev.get("trace"), "case trace", prefix),
                         evidence_link(ev.get("backend_log"), "backend log", prefix)) if x]
    if links:
        out.append(f"<p>evidence: {' | '.join(links)}</p>")
    if ev.get("log_excerpt"):
        out.append("<p>backend log (this case, last lines):</p>"
                   f'<pre class="log">{esc(_cut(str(ev["log_excerpt"])))}</pre>')
    out.append("</div>")
    return "".join(out)


def _cases(doc: Mapping[str, Any], prefix: str) -> str:
    ordered = sorted(doc["cases"], key=lambda c: verdict_rank(str(c.get("verdict"))))
    rows = [[f"<td>{badge(c.get('verdict'))}</td>",
             f'<td><a href="#{anchor("case", str(c.get("nodeid")))}"><code>'
             f'{esc(c.get("nodeid"))}</code></a></td>',
             f"<td>{esc(' '.join(map(str, c.get('clauses') or [])))}</td>",
             f'<td class="n">{esc(c.get("duration"))}</td>'] for c in ordered]
    details = "".join(_case_detail(c, prefix) for c in ordered)
    return ('<h2 id="cases">Cases (worst verdict first)</h2>'
            + _table(["verdict", "case", "clauses", "s"], rows, ' id="case-table"')
            + details)


def _coverage(doc: Mapping[str, Any]) -> str:
    areas: Mapping[str, Any] = doc["summary"].get("areas") or {}
    judged = [c for c in doc["clauses"] if c.get("judged_on_backend")]
    rows = []
    for area, info in areas.items():
        cells = [f"<td>{esc(area)} {esc(info.get('title'))}</td>"]
        for v in VERDICTS:
            ids = [str(c.get("id")) for c in judged
                   if c.get("area") == area and c.get("verdict") == v]
            cells.append("<td>" + " ".join(
                f'<a href="#{anchor("clause", i)}">{esc(i)}</a>' for i in ids) + "</td>")
        rows.append(cells)
    untested = [c for c in judged if c.get("verdict") == "UNTESTED"]
    items = "".join(
        f'<li><a href="#{anchor("clause", str(c.get("id")))}"><code>{esc(c.get("id"))}'
        f'</code></a> [{esc(c.get("level"))}] {esc(c.get("requirement"))}'
        + (f' <span class="muted">untestable: {esc(c.get("untestable"))}</span>'
           if c.get("untestable") else ' <span class="muted">no case cites it</span>')
        + "</li>" for c in untested)
    return (f'<h2 id="coverage">Coverage: area x verdict (clauses judged on the '
            f'{judged_sides(doc)[0]})</h2>'
            + _table(["area", *VERDICTS], rows, ' id="coverage-matrix"')
            + f'<h3 id="untested">Untested clauses ({len(untested)})</h3>'
            + (f"<ul>{items}</ul>" if items else "<p>none</p>"))


def _plots(doc: Mapping[str, Any]) -> str:
    figures = []
    for case in doc["cases"]:
        pacing = (case.get("evidence") or {}).get("pacing")
        if not isinstance(pacing, Mapping):
            continue
        nodeid = str(case.get("nodeid"))
        svg = pacing_svg(pacing, salt=nodeid)
        iv = pacing.get("interval_ms") or {}
        facts = (f"{esc(pacing.get('events'))} events, ideal interval "
                 f"{esc(pacing.get('ideal_interval_ms'))} ms, median "
                 f"{esc(iv.get('median'))} ms (CI {esc(iv.get('median_ci'))}), "
                 f"throughput ratio {esc(pacing.get('throughput_ratio'))}, events per "
                 f"period {esc(pacing.get('events_per_period'))}; pacing verdict "
                 f"{esc(pacing.get('verdict'))}")
        figures.append(f'<figure class="pacing"><figcaption>{badge(case.get("verdict"))} '
                       f'<a href="#{anchor("case", nodeid)}"><code>{esc(nodeid)}</code></a>'
                       f": {facts}</figcaption>"
                       + (svg or '<p class="muted">no event samples recorded</p>')
                       + "</figure>")
    if not figures:
        return ('<h2 id="plots">Pacing</h2><p class="muted">no pacing case ran in this '
                "run</p>")
    return '<h2 id="plots">Pacing</h2>' + "".join(figures)


def render_html(doc: Mapping[str, Any], *, evidence_prefix: str = "") -> str:
    """The whole page for a results.json document (see the module docstring)."""
    overall = str(doc["summary"].get("overall", "?"))
    title = f"sndif certification: {overall} ({doc['backend'].get('spec')})"
    body = "".join([_head(doc), _identity(doc), _areas(doc),
                    _clauses(doc, evidence_prefix), _cases(doc, evidence_prefix),
                    _coverage(doc), _plots(doc)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")


__all__ = ["render_html", "sorted_clauses"]
