"""Allure results from certify runs (harness/certify/allure_results.py) and
``sndif-harness report allure`` (harness/cli/allure_cmd.py): labels from the clause
registry, the status from the harness verdict, protocol steps, evidence attachments, and
the HTML built offline with the npm package allure 3."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from requires import unavailable

from harness.certify import allure_results as ar
from harness.cli import allure_cmd
from harness.cli import main as cli_main
from harness.report.registry import LEVELS, load_registry
from harness.report.verdicts import Verdict
from harness.trace import TraceRecord

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]
RUN_TIMEOUT = 600
BUILD_TIMEOUT = 300
BROWSER_TIMEOUT = 120
BROWSER_ATTEMPTS = 3


def _certify(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "certify", "--report-dir", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          stdin=subprocess.DEVNULL)


def _results(report_dir: Path) -> dict[str, dict[str, Any]]:
    """allure-results by the case's nodeid-like name (module file::test name)."""
    out = {}
    for f in (report_dir / "allure-results").glob("*-result.json"):
        r = json.loads(f.read_text())
        out[r["name"]] = r
    return out


def _labels(result: dict[str, Any], name: str) -> list[str]:
    return [lb["value"] for lb in result["labels"] if lb["name"] == name]


def _attachment(report_dir: Path, result: dict[str, Any], name: str) -> str:
    att = [a for a in result.get("attachments", []) if a["name"] == name]
    assert att, f"no attachment {name!r} in {[a['name'] for a in result['attachments']]}"
    return (report_dir / "allure-results" / att[0]["source"]).read_text()


def _case_name(nodeid: str) -> str:
    return nodeid.split("::", 1)[1]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The reference backend on areas A and F, plus the pacing cases (their plot)."""
    out = tmp_path_factory.mktemp("allure") / "ref"
    r = _certify(out, "-k", "test_a_ or test_f_ or test_pacing_follows_period")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def defect_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A backend answering with +errno: a FAIL whose evidence is a violation."""
    out = tmp_path_factory.mktemp("allure") / "defect"
    r = _certify(out, "-k", "test_f_ and impossible", "--defect", "positive-status")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


# -- pure parts ----------------------------------------------------------------------------

def test_groups_stories_and_severities() -> None:
    reg = load_registry()
    assert ar.clause_group(reg["SND-A-04"], reg) == "SND-A-01…09"
    assert ar.clause_group(reg["SND-A-10"], reg) == "SND-A-10…19"
    last = max(int(c.id[-2:]) for c in reg if c.id.startswith("SND-A-"))
    assert ar.clause_group(reg["SND-A-20"], reg) == f"SND-A-20…{last:02d}"
    ambig = next(c for c in reg if c.is_ambiguity)
    assert ar.clause_group(ambig, reg) == f"AMBIG (area {ambig.area})"
    for clause in reg:
        s = ar.story(clause)
        assert s.startswith(clause.id + " ") and "\n" not in s and len(s) <= 120
    assert set(ar.SEVERITY_OF_LEVEL) == set(LEVELS)
    cite = reg.cite
    assert ar.severity([cite("SND-F-06"), cite("SND-F-02")]) == "critical"  # MUST wins
    assert ar.severity([cite("SND-A-04")]) == "minor"  # SHOULD
    assert ar.severity([cite("SND-E-06:SHOULD")]) == "minor"  # the level cited, not the
    assert ar.severity([cite("SND-E-06")]) == "critical"  # clause's primary one
    assert {v.value for v in Verdict} == set(ar.STATUS_OF_VERDICT)
    assert ar.STATUS_OF_VERDICT["NONSTRICT"] == ar.STATUS_OF_VERDICT["INFO"] == "passed"


def test_steps_are_capped_and_violations_kept() -> None:
    from allure_commons.model2 import TestResult

    req = "0e00090000000000" + "00" * 56
    records = [TraceRecord(1_000_000 * i, "req", 1, {"raw": req, "stream": "0/0"})
               for i in range(ar.MAX_STEPS + 50)]
    records.append(TraceRecord(10**12, "violation", 1, {
        "violation": "positive_status", "clauses": ["SND-G-01"], "message": "late one",
        "raw": req}))
    result = TestResult()
    ar._Decorator(None, result, None).steps(records)  # type: ignore[arg-type]
    names = [s.name for s in result.steps]
    assert len(names) == ar.MAX_STEPS + 2
    assert names[0].startswith("send sndif req id=14 HW_PARAM_QUERY")
    assert "late one" in names[-2] and result.steps[-2].status == "failed"
    assert names[-1].startswith("… 50 more protocol actions")


def test_hexdump() -> None:
    text = ar.hexdump(bytes(range(20)))
    assert text.splitlines() == [
        "0000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  " + "." * 16,
        "0010  10 11 12 13" + " " * 36 + "  ....",
    ]


# -- a certify run's results ---------------------------------------------------------------

def test_every_case_is_an_allure_result_labelled_from_the_registry(
        reference_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = reference_run
    for name in ("results.json", "junit.xml", "report.html", "report.md"):
        assert (out / name).is_file(), name  # beside the Allure results, as before
    results = _results(out)
    reg = load_registry()
    assert len(results) == len(doc["cases"]) > 20
    for case in doc["cases"]:
        r = results[_case_name(case["nodeid"])]
        cites = [reg.cite(ref) for ref in case["clauses"]]
        assert sorted(_labels(r, "epic")) == sorted(
            {f"{c.clause.area} {reg.areas[c.clause.area]}" for c in cites})
        assert sorted(_labels(r, "feature")) == sorted(
            {ar.clause_group(c.clause, reg) for c in cites})
        assert sorted(_labels(r, "story")) == sorted({ar.story(c.clause) for c in cites})
        assert _labels(r, "severity") == [ar.severity(cites)]
        assert _labels(r, "verdict") == [case["verdict"]] == ["PASS"]
        assert r["status"] == "passed"
        for c in cites:
            assert c.clause.requirement in r["description"]


def test_a_passing_case_has_its_protocol_steps_and_evidence(
        reference_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = reference_run
    r = _results(out)["test_answers_are_deterministic_fixpoints"]
    assert _labels(r, "epic") == ["F HW_PARAM_QUERY negotiation"]
    assert _labels(r, "feature") == ["SND-F-01…07"]
    assert _labels(r, "story") == [ar.story(load_registry()["SND-F-05"])]
    assert _labels(r, "severity") == ["minor"]  # SND-F-05 is a SHOULD
    steps = [s["name"] for s in r["steps"]]
    assert any(s.startswith("send sndif req id=") and "HW_PARAM_QUERY" in s for s in steps)
    assert any(s.startswith("receive sndif resp id=") and "status=OK" in s for s in steps)
    assert all(s["status"] == "passed" for s in r["steps"])
    assert all(s["start"] <= s["stop"] for s in r["steps"])
    trace = _attachment(out, r, "trace (decoded)")
    assert "HW_PARAM_QUERY" in trace and " ms " in trace
    log = _attachment(out, r, "backend log (this case)")  # the supervisor marks its end
    assert "end suites/test_f_hw_query.py::test_answers_are_deterministic_fixpoints" in log
    record = json.loads(_attachment(out, r, "case record (results.json)"))
    assert record["verdict"] == "PASS"

    state = _results(out)["test_frontend_restart_returns_backend_to_initwait"]
    xs = _attachment(out, state, "XenStore transcript")
    assert " xs " in xs and "op=write" in xs and "/state" in xs
    assert any("state 2 (InitWait)" in s["name"] for s in state["steps"])


def test_a_pacing_case_has_its_plot(reference_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = reference_run
    pacing = [r for n, r in _results(out).items() if n.startswith("test_pacing_follows")]
    assert pacing
    for r in pacing:
        svg = _attachment(out, r, "pacing: position against time, interval histogram")
        root = ET.fromstring(svg)  # a standalone SVG file: namespaced, well-formed
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert "position against time" in svg and "interval histogram" in svg


def test_a_failing_case(defect_run: tuple[Path, dict[str, Any]]) -> None:
    out, doc = defect_run
    [case] = doc["cases"]
    assert case["verdict"] == "FAIL"
    r = _results(out)[_case_name(case["nodeid"])]
    assert r["status"] == "failed" and _labels(r, "verdict") == ["FAIL"]
    assert r["statusDetails"]["message"].startswith("FAIL: ")
    assert _labels(r, "story") == [ar.story(load_registry()["SND-F-06"])]
    assert "**Harness verdict: FAIL**" in r["description"]
    failed = [s for s in r["steps"] if s["status"] == "failed"]
    assert failed and all(s["name"].startswith("violation positive_status [SND-G-01]")
                          for s in failed)
    step_dump = (out / "allure-results" / failed[0]["attachments"][0]["source"]).read_text()
    assert re.match(r"0000  [0-9a-f]{2} 00 09 00 16 00 00 00", step_dump)  # status +22
    offending = _attachment(out, r, "offending messages (hexdump)")
    assert "violation positive_status" in offending and "status    = 22" in offending
    assert re.search(r"^0000  [0-9a-f]{2} 00 09 00 16", offending, re.M)
    ea = _attachment(out, r, "expected vs actual")
    assert "expected: 0 or -XEN_Exx" in ea and "actual:   22" in ea


def test_nonstrict_and_info_do_not_look_failed(tmp_path: Path) -> None:
    """A broken SHOULD (NONSTRICT) fails a pytest assertion but not the run: passed in
    Allure, with the verdict in the label and the status message."""
    out = tmp_path / "nonstrict"
    r = _certify(out, "-k", "test_f_ and impossible", "--defect", "hw-query-success-on-empty")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    [case] = json.loads((out / "results.json").read_text())["cases"]
    assert case["verdict"] == "NONSTRICT"
    res = _results(out)[_case_name(case["nodeid"])]
    assert res["status"] == "passed" and _labels(res, "verdict") == ["NONSTRICT"]
    assert res["statusDetails"]["message"].startswith("NONSTRICT (a SHOULD/MAY clause")


# -- report allure -------------------------------------------------------------------------

def _allure_or_skip() -> None:
    try:
        allure_cmd.find_allure()
    except allure_cmd.AllureUnavailable as exc:
        unavailable(str(exc))


def _offline() -> list[str]:
    """A prefix that runs a command without network (a new network namespace) where this
    user may make one: the build must not need the network."""
    if shutil.which("unshare") and os.geteuid() == 0:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["unshare", "-n"]
    return []


@pytest.fixture(scope="module")
def built(defect_run: tuple[Path, dict[str, Any]]) -> Path:
    _allure_or_skip()
    out, _ = defect_run
    r = subprocess.run([*_offline(), *CLI, "report", "allure", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    index = out / "allure-report" / "index.html"
    assert r.stdout.strip() == str(index.resolve())
    return index


def test_report_allure_builds_the_html_offline(built: Path) -> None:
    """One index.html with the data inlined (base64 JSON): opens from the file system."""
    text = built.read_text()
    assert not (built.parent / "data").exists()
    inlined = dict(re.findall(r'd\("(data/[^"]+)",\s*"([^"]+)"', text))
    tests = [json.loads(base64.b64decode(v)) for k, v in inlined.items()
             if k.startswith("data/test-results/")]
    assert [(t["name"], t["status"]) for t in tests] == [
        ("test_impossible_requests_are_refused", "failed")]
    assert any(k.startswith("data/attachments/") for k in inlined)


def test_report_allure_rebuilds_and_writes_elsewhere(
        built: Path, defect_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = defect_run
    assert cli_main(["report", "allure", str(out)]) == 0  # replaces the earlier report
    assert cli_main(["report", "allure", str(out / "allure-results"),
                     "-o", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "index.html").is_file()


def test_chromium_shows_the_report(built: Path, tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("no chromium for the browser test: apt-get install chromium")
    wanted = ("F HW_PARAM_QUERY negotiation", "SND-F-01…07", "SND-F-06",
              "test_impossible_requests_are_refused")
    # the app renders after its data files load, which virtual time does not wait for:
    # on a loaded machine a dump can come first (seen in CI under load). A later dump of
    # the same report must show the tree; a report that never renders fails all three.
    for attempt in range(BROWSER_ATTEMPTS):
        dom, err = _dump_dom(exe, built, tmp_path / f"profile{attempt}")
        assert "Uncaught" not in err, err[-2000:]
        body = dom.split("<body", 1)[-1]
        missing = [text for text in wanted if text not in body]
        if not missing:
            return
    # the tree the app rendered: epic, feature, story, then the case
    pytest.fail(f"after {BROWSER_ATTEMPTS} dumps the report lacks {missing}: {body[-1500:]}")


def _dump_dom(exe: str, page: Path, profile: Path) -> tuple[str, str]:
    argv = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        return proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s")


def test_report_allure_says_how_to_get_allure(
        defect_run: tuple[Path, dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = defect_run
    monkeypatch.setenv("SNDIF_ALLURE_HOME", str(tmp_path / "none"))
    monkeypatch.delenv("SNDIF_ALLURE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm, no allure
    assert cli_main(["report", "allure", str(out), "-o", str(tmp_path / "r")]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "Node.js" in err and f"allure@{allure_cmd.ALLURE_NPM_VERSION}" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, says", [
    (["NOPE"], "no such directory"),
    (["EMPTY"], "no Allure results"),
    (["RUN", "-o", "FILE"], "neither empty nor an Allure report"),
    (["RUN", "-o", "-"], "not a stream"),
    (["RUN", "--format", "md"], "only for report compare"),
    (["RUN", "RUN"], "give one report directory"),
])
def test_report_allure_usage_errors(argv: list[str], says: str,
                                    defect_run: tuple[Path, dict[str, Any]], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "FILE").write_text("x")
    names = {"NOPE": str(tmp_path / "nope"), "EMPTY": str(tmp_path / "EMPTY"),
             "RUN": str(defect_run[0]), "FILE": str(tmp_path / "FILE")}
    assert cli_main(["report", "allure", *[names.get(a, a) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err, err


def test_setup_installs_the_version_the_command_names() -> None:
    setup = (ROOT / ".ci" / "setup").read_text()
    assert f"allure@{allure_cmd.ALLURE_NPM_VERSION}" in setup
    assert f'"version": "{allure_cmd.ALLURE_NPM_VERSION}"' in setup
