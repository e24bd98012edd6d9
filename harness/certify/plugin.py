"""The certification pytest plugin: suite outcomes → case and clause verdicts, a live
progress line, a per-area summary table, ``results.json`` and the exit status.

    pytest suites/ -p harness.certify.plugin --backend reference --report-dir DIR \\
        --junitxml DIR/junit.xml [--certify-strict] [--profile FILE]

(``sndif-harness certify`` runs exactly this.) Options:

* ``--report-dir DIR``: switches the reporting on. ``DIR/results.json`` is rewritten
  atomically after every case (schema: :mod:`harness.report.results`); the backend
  supervisor's files (``backend.log``, ``verdicts.jsonl``, ``cases/``) go to
  ``DIR/backend`` unless ``--backend-out`` says otherwise (``DIR/backend-gwN`` per
  pytest-xdist worker).
* ``--certify-strict``: a broken SHOULD is FAIL, not NONSTRICT. pytest 9 owns
  ``--strict`` (its own strict mode); given on the command line, it is honoured too.
* ``--profile FILE``: the backend's declared features (:mod:`harness.certify.profile`),
  checked by ``suites/test_profile.py``; recorded in results.json.

Terminal: with ``--report-dir`` and no ``-v``, one progress line (cases done/total, the
area, counts by verdict) replaces pytest's dots, rewritten in place on a terminal and one
line per case in a log; with ``-v`` pytest's own per-case lines stay. Failures are listed
by pytest as usual; the per-area table and the overall verdict come last.

Without ``--report-dir`` the plugin only checks the ``clause`` markers. A marker citing an
unknown clause is a usage error naming the case. Each case's verdict and clauses are also
added to its ``user_properties``, so ``--junitxml`` carries them as ``<property>``
elements (``clauses``, ``verdict``, and ``sndif-case``: the results.json case object).

At the end of the run ``report.html`` (self-contained: inline CSS and SVG plots) and
``report.md`` are rendered from the final results.json document (:mod:`harness.report.html`,
:mod:`harness.report.markdown`; ``sndif-harness report`` re-renders them later). A pacing
case's ``sndif-pacing`` user property (its measured distribution and events) is copied
into its results.json case as ``evidence.pacing``.

Verdicts and the exit status (0 pass, 1 a MUST/REF clause failed or the backend crashed or
hung, 3 harness/environment failure): :mod:`harness.report.verdicts`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform as platform_mod
import shlex
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.certify.outcomes import OBSERVED
from harness.report.registry import Citation, Registry, RegistryError, load_registry
from harness.report.results import (
    CaseRecord,
    Results,
    now_iso,
    write_atomic,
    write_text_atomic,
)
from harness.report.verdicts import SEVERITY, Phase, Verdict, judge_case

CASE_PROPERTY = "sndif-case"
RESULTS_FILE = "results.json"
HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
#: The user property a pacing case puts its measured distribution in (a dict).
PACING_PROPERTY = "sndif-pacing"
# the cases as Allure results (when allure-pytest writes them: --alluredir)
pytest_plugins = ("harness.certify.allure_results",)
_CITES = pytest.StashKey[list[Citation]]()
_PHASES = pytest.StashKey[list[Phase]]()
_DURATION = pytest.StashKey[float]()
_EXCERPT_LINES = 40
_SHORT = {Verdict.INCONCLUSIVE: "INCONCL", Verdict.NONSTRICT: "NONSTRICT",
          Verdict.UNTESTED: "UNTESTED"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sndif-certify", "sndif certification report")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write the certification report (results.json, per-case evidence) "
                         "to DIR, show progress and a per-area summary, and exit 0/1/3")
    group.addoption("--certify-strict", action="store_true", default=False,
                    help="a broken SHOULD clause is FAIL (default: NONSTRICT, not failing)")
    group.addoption("--clauses", default=None, metavar="ID,ID,...",
                    help="run only the cases that cite one of these clauses (e.g. the "
                         "clauses a change touches)")
    group.addoption("--profile", default=None, metavar="FILE",
                    help="the backend's profile: declared optional features, checked by "
                         "suites/test_profile.py")


def _strict(config: pytest.Config) -> bool:
    return bool(config.getoption("certify_strict")
                or "--strict" in config.invocation_params.args)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "clause(*ids): the clause IDs (SND-X-nn, AMBIG-n) a "
                                       "case judges")
    report_dir = config.getoption("report_dir")
    if not report_dir:
        return
    out = Path(report_dir)
    if out.exists() and not out.is_dir():
        raise pytest.UsageError(f"--report-dir {report_dir}: not a directory")
    workerinput = getattr(config, "workerinput", None)
    if hasattr(config.option, "backend_out") and not config.option.backend_out:
        # the supervisor's evidence inside the report; one directory per xdist worker
        if workerinput is not None:
            config.option.backend_out = str(out / f"backend-{workerinput['workerid']}")
        elif not config.getoption("numprocesses", None):
            config.option.backend_out = str(out / "backend")
    if workerinput is None:
        config.pluginmanager.register(CertifyReporter(config, load_registry(), out),
                                      "sndif-certify-reporter")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Resolve every ``clause`` marker against the registry, once, before anything runs."""
    registry = load_registry()
    errors = []
    for item in items:
        cites: list[Citation] = []
        for mark in item.iter_markers("clause"):
            if not mark.args:
                errors.append(f"{item.nodeid}: @pytest.mark.clause() names no clause")
            for ref in mark.args:
                try:
                    cites.append(registry.cite(ref))
                except RegistryError as exc:
                    errors.append(f"{item.nodeid}: @pytest.mark.clause: {exc}")
        item.stash[_CITES] = list({c.ref: c for c in cites}.values())
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise pytest.UsageError(errors[0] + more)
    wanted = config.getoption("clauses")
    if wanted:
        ids = {w.strip() for w in wanted.split(",") if w.strip()}
        for ref in ids:
            try:
                registry.cite(ref)
            except RegistryError as exc:
                raise pytest.UsageError(f"--clauses: {exc}") from None
        keep = [i for i in items if ids & {c.clause.id for c in i.stash.get(_CITES, [])}]
        drop = [i for i in items if i not in keep]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase; after teardown, judge the case and attach the verdict to the
    report (``user_properties``: it travels to the xdist controller and into JUnit)."""
    report = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    phases = item.stash.setdefault(_PHASES, [])
    phases.append(Phase(call.when, report.outcome, exc,
                        text=report.longreprtext if not report.passed else "",
                        wasxfail=hasattr(report, "wasxfail")))
    item.stash[_DURATION] = item.stash.get(_DURATION, 0.0) + report.duration
    if call.when == "teardown" and item.config.getoption("report_dir"):
        case = _judge_item(item, phases, item.stash[_DURATION])
        report.user_properties.extend([
            ("clauses", " ".join(case["clauses"])), ("verdict", case["verdict"]),
            (CASE_PROPERTY, json.dumps(case, default=str))])
    return report


def _judge_item(item: pytest.Item, phases: list[Phase], duration: float) -> dict[str, Any]:
    cites = item.stash.get(_CITES, [])
    observations = [v for k, v in item.user_properties if k == OBSERVED]
    j = judge_case(phases, cites, observed=bool(observations),
                   strict=_strict(item.config))
    evidence = _evidence(item, j.backend, j.verdict)
    pacing = next((v for k, v in item.user_properties if k == PACING_PROPERTY), None)
    if pacing is not None:
        evidence["pacing"] = pacing
    rec = CaseRecord(item.nodeid, j.verdict, cites, duration, j.phase, j.message,
                     j.expected, j.actual, j.absolute, observations, j.backend, evidence)
    return rec.as_dict()


def _evidence(item: pytest.Item, backend: dict[str, Any] | None, verdict: Verdict
              ) -> dict[str, Any]:
    """Where the case's trace and backend log are (the supervisor's files)."""
    sup = getattr(item, "funcargs", {}).get("backend_supervisor")
    ev: dict[str, Any] = {"trace": None, "backend_log": None, "log_excerpt": ""}
    if sup is None:
        return ev
    with contextlib.suppress(Exception):  # evidence is best effort, never a failure
        trace = Path(sup.case_trace_path(item.nodeid))
        ev["trace"] = str(trace) if trace.exists() else None
        ev["backend_log"] = str(sup.log_path)
        if backend and backend.get("log_excerpt"):
            ev["log_excerpt"] = backend["log_excerpt"]
        elif verdict not in (Verdict.PASS, Verdict.NA):
            lines = sup.case_log(item.nodeid).rstrip("\n").splitlines()
            ev["log_excerpt"] = "\n".join(lines[-_EXCERPT_LINES:])
    return ev


class CertifyReporter:
    """The controller's side (the only side without xdist): results, terminal output,
    exit status."""

    def __init__(self, config: pytest.Config, registry: Registry, out: Path) -> None:
        self.config = config
        self.registry = registry
        self.out = out
        self.path = out / RESULTS_FILE
        self.total = 0
        self.results = Results(registry, run=_run_facts(config, out),
                               backend=_backend_identity(config), strict=_strict(config))
        self._tr: Any = None
        self._live = False  # a progress line is on the terminal, not yet ended
        self._report_error = ""  # why report.html/report.md could not be written

    # -- collection and terminal set-up ----------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self._tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if self._tr is not None and self._quiet():
            # the progress line replaces pytest's dots and file names
            self._tr.showfspath = False
            if hasattr(self._tr, "_show_progress_info"):
                self._tr._show_progress_info = False
        self._write()

    def _quiet(self) -> bool:
        return self.config.get_verbosity() <= 0

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        self.results.run["cases_collected"] = self.total

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.total = max(self.total, len(ids))
        self.results.run["cases_collected"] = self.total

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.results.facts.harness_failed = True
            self.results.facts.reasons.append(f"collection error in {report.nodeid or '.'}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config
                                 ) -> tuple[str, str, str] | None:
        if not self._quiet() or hasattr(report, "wasxfail"):
            return None
        category: str = report.outcome
        if report.when != "call" and report.failed:
            category = "error"
        elif report.when != "call" and report.passed:
            category = ""
        return category, "", ""

    # -- per case --------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        raw = next((v for k, v in report.user_properties if k == CASE_PROPERTY), None)
        # set as a JSON string by the case fixture (user_properties values are typed object)
        rec = self._record(report, json.loads(raw) if isinstance(raw, str) and raw else None)
        self.results.add(rec)
        self._write()
        self._progress(rec)

    def _record(self, report: pytest.TestReport, case: dict[str, Any] | None) -> CaseRecord:
        if case is None:  # judged nowhere (a worker without the plugin): harness failure
            return CaseRecord(report.nodeid, Verdict.INCONCLUSIVE, [],
                              message="the certification plugin did not judge this case")
        ev = dict(case["evidence"])
        for key in ("trace", "backend_log"):
            if ev.get(key):
                with contextlib.suppress(ValueError):
                    ev[key] = str(Path(ev[key]).resolve().relative_to(self.out.resolve()))
        return CaseRecord(
            case["nodeid"], Verdict(case["verdict"]),
            [self.registry.cite(r) for r in case["clauses"]], case["duration"],
            case["phase"], case["message"], case["expected"], case["actual"],
            case["absolute"], case["observations"], case["backend"], ev)

    def _progress(self, rec: CaseRecord) -> None:
        tr = self._tr
        if tr is None or not self._quiet():
            return
        counts = Counter(r.verdict for r in self.results.cases.values())
        area = rec.citations[0].clause.area if rec.citations else "?"
        line = (f"certify {len(self.results.cases)}/{self.total or '?'} area {area}: "
                + " ".join(f"{v.value} {counts[v]}" for v in SEVERITY if counts[v]))
        if tr.isatty:
            tr.rewrite(line, erase=True)
            self._live = True
        else:
            tr.write_line(line)

    # -- end of run ------------------------------------------------------------------------

    def pytest_internalerror(self) -> None:
        self.results.facts.harness_failed = True
        self.results.facts.reasons.append("internal error of the harness")

    def pytest_keyboard_interrupt(self) -> None:
        self.results.facts.harness_failed = True
        self.results.facts.reasons.append("interrupted")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._live and self._tr is not None:
            self._tr.write("\n")
            self._live = False
        if exitstatus == pytest.ExitCode.USAGE_ERROR:
            return
        facts = self.results.facts
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR and not facts.harness_failed:
            facts.harness_failed = True
            facts.reasons.append("internal error of the harness")
        if exitstatus == pytest.ExitCode.INTERRUPTED and not facts.harness_failed:
            facts.harness_failed = True
            facts.reasons.append("the run was interrupted")
        self.results.finish("interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED
                            else "finished")
        status, _ = self.results.exit_status()
        self.results.run["exit_status"] = status
        self._write(final=True)
        self._write_reports()
        session.exitstatus = status

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        doc = self.results.document(final=True)
        tr.write_sep("=", "sndif certification: clauses judged on the backend, per area")
        cols = [v for v in SEVERITY]
        head = ["AREA", *(_SHORT.get(v, v.value) for v in cols)]
        rows = []
        for area, info in doc["summary"]["areas"].items():
            rows.append([f"{area} {info['title']}",
                         *(str(info["clauses"].get(v.value, 0)) for v in cols)])
        total = doc["summary"]["clauses"]
        rows.append(["all", *(str(total.get(v.value, 0)) for v in cols)])
        width = max(len(r[0]) for r in [head, *rows])
        widths = [max(len(h), 3) for h in head[1:]]
        for row in [head, *rows]:
            tr.write_line(row[0].ljust(width) + "  " + "  ".join(
                c.rjust(w) for c, w in zip(row[1:], widths, strict=True)))
        tr.write_line(f"({doc['summary']['not_judged_on_backend']} frontend/toolstack "
                      "clauses are not judged on a backend)")
        for cid in doc["summary"]["failing_clauses"][:20]:
            clause = self.registry[cid]
            cases = [c for c in doc["cases"] if any(r.split(":")[0] == cid
                                                    for r in c["clauses"])
                     and c["verdict"] in ("FAIL", "CRASH", "HANG")]
            first = cases[0] if cases else None
            why = (first["message"].splitlines() or [""])[0][:120] if first else ""
            tr.write_line(f"  {cid} [{clause.level}] {clause.requirement[:90]}")
            if first:
                tr.write_line(f"      {first['verdict']} {first['nodeid']}: {why}")
        strict = " (strict: SHOULD clauses count)" if self.results.strict else ""
        status = self.results.run.get("exit_status")
        tr.write_line(f"overall: {doc['summary']['reason']}{strict}; exit status {status}",
                      bold=True, red=status != 0, green=status == 0)
        tr.write_line(f"report: {self.path}")
        if self._report_error:
            tr.write_line(f"report.html/report.md not written: {self._report_error}",
                          red=True)
        else:
            tr.write_line(f"report: {self.out / HTML_FILE} and {MARKDOWN_FILE}")

    def _write(self, final: bool = False) -> None:
        write_atomic(self.path, self.results.document(final=final))

    def _write_reports(self) -> None:
        """report.html and report.md from the final results.json document. A rendering
        bug must not cost the run its verdict: it is said at the end, not raised."""
        doc = self.results.document(final=True)
        try:
            from harness.report.html import render_html
            from harness.report.markdown import render_markdown

            write_text_atomic(self.out / HTML_FILE, render_html(doc))
            write_text_atomic(self.out / MARKDOWN_FILE, render_markdown(doc))
        except Exception as exc:  # said in the terminal summary
            self._report_error = f"{type(exc).__name__}: {exc}"


def _run_facts(config: pytest.Config, out: Path) -> dict[str, Any]:
    return {"started": now_iso(), "harness_version": harness.__version__,
            "platform": config.getoption("platform", "sim"),
            "command_line": list(sys.argv),
            "pytest_args": [str(a) for a in config.invocation_params.args],
            "python": platform_mod.python_version(), "pytest": pytest.__version__,
            "strict": _strict(config), "profile": config.getoption("profile"),
            "report_dir": str(out), "cases_collected": 0}


def _backend_identity(config: pytest.Config) -> dict[str, Any]:
    text = config.getoption("backend", None)
    defects = list(config.getoption("defect", None) or [])
    ident: dict[str, Any] = {"spec": text, "kind": None, "defects": defects,
                             "out_dir": config.getoption("backend_out", None),
                             "binary": None}
    if text is None:
        return ident
    try:
        from harness.world.backend_spec import parse_backend_spec

        spec = parse_backend_spec(text, defects)
    except Exception:  # the root conftest reports a bad spec as a usage error
        return ident
    ident["kind"] = spec.kind
    if spec.kind == "exec" and spec.argv:
        ident["binary"] = _binary(spec.argv[0])
        ident["command"] = shlex.join(spec.argv)
    return ident


def _binary(name: str) -> dict[str, Any]:
    """Path and sha256 of an exec backend's program; ``version`` stays null until a
    backend-specific way to ask it exists."""
    found = shutil.which(name) or (name if Path(name).is_file() else None)
    info: dict[str, Any] = {"path": found or name, "sha256": None, "version": None}
    if found:
        h = hashlib.sha256()
        with contextlib.suppress(OSError), open(found, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            info["sha256"] = h.hexdigest()
        info["path"] = str(Path(found).resolve())
    return info
