"""Several certification runs side by side, clause by clause (``sndif-harness report
compare``): a column per run, labelled by the backend's identity and the run's directory;
the rows where the runs disagree first, marked; then the cases whose verdicts differ.

Rendered from results.json documents alone, as one self-contained HTML page (inline CSS,
no script, every text escaped) or as Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.html import badge, esc
from harness.report.markdown import code, md

_ABSENT = "—"  # the run has no such clause/case (another registry, a -k run)


@dataclass(frozen=True)
class Run:
    label: str
    doc: Mapping[str, Any]


@dataclass(frozen=True)
class Row:
    key: str  # clause id or case nodeid
    info: str  # the clause's level and requirement ("" for a case)
    verdicts: tuple[str | None, ...]  # per run; None: not in that run

    @property
    def differs(self) -> bool:
        return len(set(self.verdicts)) > 1


def run_label(doc: Mapping[str, Any], source: str | Path) -> str:
    """``reference +defect open-wrong-id (run-dir)``, ``exec:snd_be sha256:52eca74be48b
    (run-dir)``: the backend's identity and where the run's results are."""
    be = doc.get("backend") or {}
    ident = str(be.get("spec") or be.get("kind") or "?")
    binary = be.get("binary") or {}
    if be.get("kind") == "exec" and binary.get("path"):
        ident = f"exec:{Path(str(binary['path'])).name}"  # the full command is too wide
    if binary.get("sha256"):
        ident += f" sha256:{str(binary['sha256'])[:12]}"
    if be.get("defects"):
        ident += " +defect " + ",".join(map(str, be["defects"]))
    return f"{ident} ({Path(source).resolve().parent.name})"


def make_runs(docs: Sequence[tuple[str | Path, Mapping[str, Any]]]) -> list[Run]:
    """Runs labelled by :func:`run_label`; a label repeated gets ``#2``, ``#3``."""
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for source, doc in docs:
        label = run_label(doc, source)
        seen[label] = seen.get(label, 0) + 1
        runs.append(Run(label if seen[label] == 1 else f"{label} #{seen[label]}", doc))
    return runs


def _rows(keyed: list[dict[str, Mapping[str, Any]]], info: Mapping[str, str]) -> list[Row]:
    order = list(dict.fromkeys(k for per_run in keyed for k in per_run))
    rows = [Row(k, info.get(k, ""),
                tuple(str(r[k].get("verdict")) if k in r else None for r in keyed))
            for k in order]
    return [r for r in rows if r.differs] + [r for r in rows if not r.differs]


def clause_rows(runs: Sequence[Run]) -> list[Row]:
    """Every clause of any run (registry order), differing rows first."""
    keyed = [{str(c["id"]): c for c in r.doc["clauses"]} for r in runs]
    info: dict[str, str] = {}
    for per_run in keyed:
        for cid, c in per_run.items():
            info.setdefault(cid, f"[{c.get('level')}] {c.get('requirement') or ''}")
    return _rows(keyed, info)


def case_rows(runs: Sequence[Run]) -> list[Row]:
    """The cases whose verdicts differ between the runs (absent counts as different)."""
    keyed = [{str(c["nodeid"]): c for c in r.doc["cases"]} for r in runs]
    return [r for r in _rows(keyed, {}) if r.differs]


def _overall(doc: Mapping[str, Any]) -> str:
    return str((doc.get("summary") or {}).get("overall", "?"))


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;color:#222;
padding:0 1em}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-family:ui-monospace,monospace;font-size:12px}
tr.diff td{background:#fff4c2}tr.diff td.mark{font-weight:bold;color:#c62828}
.v{font-weight:bold;padding:0 .35em;border-radius:.2em;white-space:nowrap}
.v-PASS{background:#1e7e34;color:#fff}.v-FAIL,.v-CRASH,.v-HANG{background:#c62828;color:#fff}
.v-NONSTRICT{background:#ef8f00;color:#fff}.v-INCONCLUSIVE{background:#6a4c93;color:#fff}
.v-INFO{background:#1565c0;color:#fff}.v-NA{background:#9e9e9e;color:#fff}
.v-UNTESTED{background:#e0e0e0;color:#333}.v-RUNNING{background:#f9a825;color:#222}
.muted{color:#777}
"""


def _verdict_cell(v: str | None) -> str:
    return f"<td>{badge(v)}</td>" if v is not None else f'<td class="muted">{_ABSENT}</td>'


def _html_table(runs: Sequence[Run], rows: Sequence[Row], first: str, with_info: bool,
                table_id: str) -> str:
    head = ["", first, *(["requirement"] if with_info else []), *(r.label for r in runs)]
    out = [f'<table id="{table_id}"><thead><tr>',
           *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        cls = ' class="diff"' if row.differs else ""
        out.append(f'<tr{cls}><td class="mark">{"≠" if row.differs else ""}</td>'
                   f"<td><code>{esc(row.key)}</code></td>"
                   + (f"<td>{esc(row.info)}</td>" if with_info else "")
                   + "".join(_verdict_cell(v) for v in row.verdicts) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_compare_html(runs: Sequence[Run]) -> str:
    clauses = clause_rows(runs)
    cases = case_rows(runs)
    differ = sum(r.differs for r in clauses)
    ident = ["<table id=\"runs\"><thead><tr><th>run</th><th>overall</th><th>state</th>"
             "<th>started</th><th>cases</th><th>results</th></tr></thead><tbody>"]
    for r in runs:
        run = r.doc.get("run") or {}
        ident.append(f"<tr><td>{esc(r.label)}</td><td>{badge(_overall(r.doc))}</td>"
                     f"<td>{esc(run.get('state'))}</td><td>{esc(run.get('started'))}</td>"
                     f"<td>{esc(run.get('cases_done'))}</td>"
                     f"<td><code>{esc(run.get('report_dir'))}</code></td></tr>")
    ident.append("</tbody></table>")
    body = [
        "<h1>sndif certification: runs compared</h1>", "".join(ident),
        f'<p id="summary">{differ} of {len(clauses)} clauses differ between the runs; '
        f"{len(cases)} cases differ.</p>",
        "<h2>Clauses (differences first, marked ≠)</h2>",
        _html_table(runs, clauses, "clause", True, "compare-clauses"),
        "<h2>Cases whose verdicts differ</h2>",
        _html_table(runs, cases, "case", False, "compare-cases") if cases
        else "<p>none</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>sndif certification: runs compared</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


# -- Markdown --------------------------------------------------------------------------------

def _md_table(runs: Sequence[Run], rows: Sequence[Row], first: str, with_info: bool
              ) -> list[str]:
    head = ["", first, *(["requirement"] if with_info else []), *(md(r.label) for r in runs)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ["**≠**" if row.differs else "", code(row.key),
                 *([md(row.info)] if with_info else []),
                 *((f"**{md(v)}**" if row.differs else md(v)) if v is not None else _ABSENT
                   for v in row.verdicts)]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render_compare_markdown(runs: Sequence[Run]) -> str:
    clauses = clause_rows(runs)
    cases = case_rows(runs)
    differ = sum(r.differs for r in clauses)
    out = ["# sndif certification: runs compared", ""]
    for r in runs:
        run = r.doc.get("run") or {}
        out.append(f"- {md(r.label)}: **{md(_overall(r.doc))}** ({md(run.get('state'))}, "
                   f"{md(run.get('cases_done'))} cases, started {md(run.get('started'))})")
    out += ["", f"{differ} of {len(clauses)} clauses differ between the runs; "
                f"{len(cases)} cases differ.", "",
            "## Clauses (differences first, marked ≠)", ""]
    out += _md_table(runs, clauses, "clause", True)
    out += ["", "## Cases whose verdicts differ", ""]
    out += _md_table(runs, cases, "case", False) if cases else ["none"]
    return "\n".join(out) + "\n"


__all__ = ["Row", "Run", "case_rows", "clause_rows", "make_runs", "render_compare_html",
           "render_compare_markdown", "run_label"]
