"""Baselines: the verdicts a backend is expected to get, and the gate that fails a CI job
only when a run differs from them.

``baseline.toml`` (schema ``sndif-harness/baseline/1``), written by
:func:`render_baseline` from a results.json and meant to be committed and edited::

    schema = "sndif-harness/baseline/1"
    created = "2026-12-05T11:23:46Z"        # when, and from which run (informative)
    source = "reports/x/results.json"
    backend = "reference"

    [cases]                                  # nodeid -> expected verdict
    "suites/test_a_xenstore.py::test_a_01" = "PASS"
    "suites/test_g_errors.py::test_g_03" = { verdict = "FAIL", reason = "" }

    [clauses]                                # clause id -> verdict (coverage)
    "SND-A-01" = "PASS"

A case that did not pass gets an inline table with a ``reason``: why the failure is
accepted (left empty for a person to fill in; the gate shows it when the failure goes
away). ``[clauses]`` records the clause verdicts, so the gate sees a clause that was
judged and no longer is.

:func:`gate` compares a results.json document with a baseline; each difference is a
:class:`Change` of one kind (:data:`KINDS`). Every kind but ``new`` (a case the baseline
does not know, not failing) fails the gate.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report.verdicts import FAILING, SEVERITY

SCHEMA = "sndif-harness/baseline/1"
_FAILING = {v.value for v in FAILING}
_VERDICTS = {v.value for v in SEVERITY}
#: Verdicts whose case entry carries a ``reason`` (an accepted non-pass).
_NEEDS_REASON = _FAILING | {"NONSTRICT", "INCONCLUSIVE"}

#: Kinds of change, in the order the gate reports them, with their heading.
KINDS: dict[str, str] = {
    "incomplete": "the results are not a complete run",
    "regressed": "cases that got worse (now FAIL, CRASH or HANG)",
    "new-failing": "new failing cases (not in the baseline)",
    "fixed": "accepted failures now passing: tighten the baseline",
    "changed": "other verdict changes",
    "coverage": "clauses that lost their coverage (judged before, now UNTESTED or absent)",
    "gone": "cases in the baseline that did not run",
    "new": "new cases, not failing (not a change; add them to the baseline)",
}
#: Kinds that do not fail the gate.
NOT_FAILING = frozenset({"new"})


class BaselineError(ValueError):
    """A baseline file that cannot be read (the message is one line)."""


@dataclass(frozen=True)
class Expected:
    verdict: str
    reason: str = ""


@dataclass
class Baseline:
    cases: dict[str, Expected]
    clauses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    kind: str  # a key of KINDS
    name: str  # a case nodeid or a clause id
    before: str | None  # the baseline's verdict (None: not in the baseline)
    after: str | None  # the run's verdict (None: not in the run)
    detail: str = ""  # the run's message, or the accepted failure's reason


# -- creating --------------------------------------------------------------------------------

def baseline_from_results(doc: Mapping[str, Any], *, source: str = "") -> Baseline:
    """The baseline that expects exactly what ``doc`` (a results.json document) says."""
    cases = {str(c["nodeid"]): Expected(str(c["verdict"])) for c in doc["cases"]}
    clauses = {str(c["id"]): str(c["verdict"]) for c in doc["clauses"]}
    backend = doc.get("backend") or {}
    ident = str(backend.get("spec") or "")
    if backend.get("defects"):
        ident += " +defect " + ",".join(map(str, backend["defects"]))
    run = doc.get("run") or {}
    meta = {"created": str(run.get("finished") or run.get("started") or ""),
            "source": source, "backend": ident}
    return Baseline(cases, clauses, meta)


def _toml_str(text: str) -> str:
    # a JSON string is a TOML basic string, except that TOML forbids raw DEL and wants
    # other control characters escaped, which json.dumps does (\\u00XX) for all but DEL
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def render_baseline(base: Baseline) -> str:
    """The TOML text of ``base`` (our own writer: three string keys and two tables of
    strings or {verdict, reason} are all it holds)."""
    out = ["# sndif-harness baseline: the verdicts this backend is expected to get.",
           "# `sndif-harness gate --baseline THIS RESULTS.json` fails on any difference.",
           "# A case that does not pass has a `reason`: say why the failure is accepted.",
           f"schema = {_toml_str(SCHEMA)}"]
    out += [f"{k} = {_toml_str(v)}" for k, v in base.meta.items()]
    out += ["", "[cases]"]
    for nodeid, exp in base.cases.items():
        if exp.verdict in _NEEDS_REASON or exp.reason:
            value = (f"{{ verdict = {_toml_str(exp.verdict)}, "
                     f"reason = {_toml_str(exp.reason)} }}")
        else:
            value = _toml_str(exp.verdict)
        out.append(f"{_toml_str(nodeid)} = {value}")
    out += ["", "[clauses]"]
    out += [f"{_toml_str(cid)} = {_toml_str(v)}" for cid, v in base.clauses.items()]
    return "\n".join(out) + "\n"


# -- reading ---------------------------------------------------------------------------------

def _verdict(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in _VERDICTS:
        raise BaselineError(f"{where}: {value!r} is not a verdict (one of "
                            f"{', '.join(sorted(_VERDICTS))})")
    return value


def parse_baseline(data: Mapping[str, Any], where: str = "baseline") -> Baseline:
    """A :class:`Baseline` from parsed TOML, checked; :class:`BaselineError` if not."""
    if data.get("schema") != SCHEMA:
        raise BaselineError(f"{where}: not a baseline of schema {SCHEMA} (schema = "
                            f"{data.get('schema')!r})")
    raw_cases = data.get("cases", {})
    raw_clauses = data.get("clauses", {})
    if not isinstance(raw_cases, dict) or not isinstance(raw_clauses, dict):
        raise BaselineError(f"{where}: [cases] and [clauses] must be tables")
    cases: dict[str, Expected] = {}
    for nodeid, value in raw_cases.items():
        at = f"{where}: cases.{json.dumps(nodeid)}"
        if isinstance(value, dict):
            unknown = set(value) - {"verdict", "reason"}
            if unknown:
                raise BaselineError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
            reason = value.get("reason", "")
            if not isinstance(reason, str):
                raise BaselineError(f"{at}: reason must be a string")
            cases[nodeid] = Expected(_verdict(value.get("verdict"), at), reason)
        else:
            cases[nodeid] = Expected(_verdict(value, at))
    clauses = {cid: _verdict(v, f"{where}: clauses.{cid}") for cid, v in raw_clauses.items()}
    meta = {k: str(v) for k, v in data.items() if k not in ("schema", "cases", "clauses")}
    return Baseline(cases, clauses, meta)


def read_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BaselineError(f"{path}: is a directory, not a baseline") from None
    except OSError as exc:
        raise BaselineError(f"{path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: not TOML ({str(exc).splitlines()[0]})") from None
    return parse_baseline(data, str(path))


# -- gating ----------------------------------------------------------------------------------

def _rank(verdict: str) -> int:
    names = [v.value for v in SEVERITY]
    return names.index(verdict) if verdict in names else len(names)


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:200] if lines else ""


def _complete(run: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a run ended normally (results.json of before the ``complete`` key: by its
    state)."""
    state = str(run.get("state"))
    complete = run.get("complete", state == "finished")
    if complete is True:
        return True, ""
    return False, (f"state {state}, {run.get('cases_done')} of "
                   f"{run.get('cases_collected')} cases done")


def gate(base: Baseline, doc: Mapping[str, Any], *, allow_gone: bool = False
         ) -> list[Change]:
    """Every difference between ``base`` and the results ``doc``, in :data:`KINDS` order,
    baseline order within a kind (new cases in the run's order)."""
    changes: list[Change] = []
    complete, why = _complete(doc.get("run") or {})
    if not complete:
        changes.append(Change("incomplete", "results.json", None, None, why))
    run_cases = {str(c["nodeid"]): c for c in doc["cases"]}
    for nodeid, exp in base.cases.items():
        case = run_cases.get(nodeid)
        if case is None:
            if not allow_gone:
                changes.append(Change("gone", nodeid, exp.verdict, None))
            continue
        now = str(case.get("verdict"))
        if now == exp.verdict:
            continue
        msg = _first_line(case.get("message"))
        if now in _FAILING and (exp.verdict not in _FAILING
                                or _rank(now) < _rank(exp.verdict)):
            changes.append(Change("regressed", nodeid, exp.verdict, now, msg))
        elif ((exp.verdict in _NEEDS_REASON and now in ("PASS", "INFO", "N/A"))
              or (exp.verdict in _FAILING and now == "NONSTRICT")):
            changes.append(Change("fixed", nodeid, exp.verdict, now, exp.reason))
        else:
            changes.append(Change("changed", nodeid, exp.verdict, now, msg))
    for nodeid, case in run_cases.items():
        if nodeid not in base.cases:
            now = str(case.get("verdict"))
            kind = "new-failing" if now in _FAILING else "new"
            changes.append(Change(kind, nodeid, None, now, _first_line(case.get("message"))))
    run_clauses = {str(c["id"]): str(c.get("verdict")) for c in doc["clauses"]}
    for cid, before in base.clauses.items():
        after = run_clauses.get(cid)
        if before != "UNTESTED" and after in (None, "UNTESTED"):
            changes.append(Change("coverage", cid, before, after))
    order = list(KINDS)
    return sorted(changes, key=lambda c: order.index(c.kind))  # stable: keeps the order


def failing(changes: Iterable[Change]) -> list[Change]:
    return [c for c in changes if c.kind not in NOT_FAILING]


def render_changes(changes: list[Change], *, baseline: str, results: str,
                   create_hint: str = "") -> str:
    """The gate's report: a heading per kind, a line per change (``-`` the baseline's
    verdict, ``+`` the run's), and the outcome last."""
    out = [f"gate: {results} against {baseline}"]
    for kind, title in KINDS.items():
        group = [c for c in changes if c.kind == kind]
        if not group:
            continue
        out.append(f"{title} ({len(group)}):")
        for c in group:
            if kind == "incomplete":
                out.append(f"  {c.name}")
            else:
                out.append(f"  {c.name}: {c.before or '(not in the baseline)'} -> "
                           f"{c.after or '(absent)'}")
            if kind == "fixed":
                out.append(f"      accepted because: {c.detail or '(no reason given)'}")
            elif c.detail:
                out.append(f"      {c.detail}")
        if kind == "fixed" and create_hint:
            out.append(f"  to tighten: {create_hint}")
    bad = failing(changes)
    if bad:
        counts = ", ".join(f"{sum(c.kind == k for c in bad)} {k}" for k in KINDS
                           if any(c.kind == k for c in bad))
        out.append(f"gate: FAIL: {len(bad)} change(s) against the baseline ({counts})")
    else:
        out.append("gate: PASS: no change against the baseline")
    return "\n".join(out) + "\n"


__all__ = ["KINDS", "NOT_FAILING", "SCHEMA", "Baseline", "BaselineError", "Change",
           "Expected", "baseline_from_results", "failing", "gate", "parse_baseline",
           "read_baseline", "render_baseline", "render_changes"]
