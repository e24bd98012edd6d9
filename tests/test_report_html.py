"""report.html from the results.json of real certify runs (the reference backend, correct
and with a HW_PARAM_QUERY defect): self-contained, verdict and every registry clause
shown, failures first, untrusted text escaped, evidence links that resolve, the pacing
plot; re-rendered by ``sndif-harness report``; opened by headless Chromium."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from requires import unavailable

from harness.cli import main as cli_main
from harness.report.html import anchor, render_html
from harness.report.registry import load_registry
from harness.report.results import SCHEMA

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 300
BROWSER_TIMEOUT = 60
DEFECT = "hw-query-wider-than-asked"
PACING_CASE = "suites/test_e_positions.py::test_pacing_follows_period"
HOSTILE = "<script>alert('pwned')</script>"


def certify_run(out: Path, *args: str) -> dict[str, Any]:
    """A small certify run (HW_PARAM_QUERY suite) in a process of its own: its results."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "suites/test_f_hw_query.py", "--report-dir", str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    path = out / "results.json"
    if not path.exists():
        pytest.fail(f"no results.json (exit {r.returncode}):\n{r.stdout[-3000:]}\n"
                    f"{r.stderr[-2000:]}")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("good")
    return out, certify_run(out, PACING_CASE)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bad")
    return out, certify_run(out, "--defect", DEFECT)


def overall_shown(page: str) -> str:
    m = re.search(r'<div id="overall"[^>]*>([^<]*)</div>', page)
    assert m, "no overall verdict element"
    return m.group(1)


def assert_self_contained(page: str) -> None:
    low = page.lower()
    for needle in ("http", "src=", "<link", "@import", "<script", "<iframe", "<object"):
        assert needle not in low, f"external reference or script: {needle!r}"
    # the plots refer to their own clip paths and markers only
    assert not re.search(r"url\((?!#)", low), "a url() to something outside the page"


def test_the_plugin_writes_both_reports_atomically(good: tuple[Path, dict[str, Any]],
                                                   bad: tuple[Path, dict[str, Any]]) -> None:
    for out, doc in (good, bad):
        assert (out / "report.html").is_file() and (out / "report.md").is_file()
        assert not list(out.glob("*.part")), "a temporary file was left behind"
        # the plugin's page is exactly the rendering of its final results.json
        assert (out / "report.html").read_text() == render_html(doc)


def test_page_is_self_contained_and_shows_the_verdict(good: tuple[Path, dict[str, Any]],
                                                       bad: tuple[Path, dict[str, Any]]
                                                       ) -> None:
    for out, doc, want in ((*good, "PASS"), (*bad, "FAIL")):
        page = (out / "report.html").read_text()
        assert_self_contained(page)
        assert doc["summary"]["overall"] == want
        assert overall_shown(page) == want
        assert doc["summary"]["reason"] in page.replace("&#x27;", "'")


def test_every_registry_clause_is_listed(bad: tuple[Path, dict[str, Any]]) -> None:
    page = (bad[0] / "report.html").read_text()
    missing = [c.id for c in load_registry() if f'id="{anchor("clause", c.id)}"' not in page]
    assert not missing, f"clauses missing from the page: {missing}"


def test_failures_come_before_passes(bad: tuple[Path, dict[str, Any]]) -> None:
    out, doc = bad
    page = (out / "report.html").read_text()
    by_verdict: dict[str, list[str]] = {}
    for c in doc["clauses"]:
        by_verdict.setdefault(c["verdict"], []).append(c["id"])
    assert by_verdict.get("FAIL") and by_verdict.get("PASS"), by_verdict.keys()

    def pos(cid: str) -> int:
        return page.index(f'id="{anchor("clause", cid)}"')

    order = ["FAIL", "NONSTRICT", "PASS", "UNTESTED"]
    present = [v for v in order if v in by_verdict]
    for worse, better in itertools.pairwise(present):
        assert max(map(pos, by_verdict[worse])) < min(map(pos, by_verdict[better])), \
            f"a {worse} clause comes after a {better} one"
    # the cases' details too: the failing cases first
    case_pos = {c["nodeid"]: page.index(f'id="{anchor("case", c["nodeid"])}"')
                for c in doc["cases"]}
    failing = [case_pos[c["nodeid"]] for c in doc["cases"] if c["verdict"] == "FAIL"]
    passing = [case_pos[c["nodeid"]] for c in doc["cases"] if c["verdict"] == "PASS"]
    assert failing and passing and max(failing) < min(passing)


def test_failure_messages_and_evidence_links(bad: tuple[Path, dict[str, Any]]) -> None:
    out, doc = bad
    page = (out / "report.html").read_text()
    failed = [c for c in doc["cases"] if c["verdict"] == "FAIL"]
    first_line = failed[0]["message"].splitlines()[0]
    assert first_line.replace("'", "&#x27;") in page
    links = re.findall(r'href="([^"#][^"]*)"', page)
    assert links, "no evidence link"
    for link in links:
        assert (out / link).is_file(), f"evidence link to nothing: {link}"
    assert failed[0]["evidence"]["trace"] in links


def test_expected_and_actual_are_shown(bad: tuple[Path, dict[str, Any]]) -> None:
    doc = copy.deepcopy(bad[1])
    case = next(c for c in doc["cases"] if c["verdict"] == "FAIL")
    case["expected"], case["actual"] = "status 0", "status -22"
    page = render_html(doc)
    start = page.index(f'id="{anchor("case", case["nodeid"])}"')
    detail = page[start:page.index("</div>", start)]
    assert 'class="expected-actual"' in detail
    assert "status 0" in detail and "status -22" in detail


def test_hostile_text_is_escaped(bad: tuple[Path, dict[str, Any]]) -> None:
    doc = copy.deepcopy(bad[1])
    case = next(c for c in doc["cases"] if c["verdict"] == "FAIL")
    case["message"] = f"backend said {HOSTILE}"
    case["evidence"]["log_excerpt"] = f'<img src=x onerror="alert(1)"> {HOSTILE}'
    case["observations"] = [{"what": HOSTILE, "value": HOSTILE}]
    case["evidence"]["trace"] = 'javascript:alert(1)"><script>'
    doc["backend"]["spec"] = f"exec:{HOSTILE}"
    page = render_html(doc)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert 'href="javascript' not in page


def test_pacing_evidence_and_plot(good: tuple[Path, dict[str, Any]]) -> None:
    out, doc = good
    pacing_cases = [c for c in doc["cases"] if c["nodeid"].startswith(PACING_CASE)]
    assert len(pacing_cases) == 2, [c["nodeid"] for c in doc["cases"]]
    for case in pacing_cases:
        pacing = case["evidence"]["pacing"]
        samples = pacing["samples"]
        assert 40 <= len(samples["t_ms"]) == len(samples["position"]) <= 500
        assert pacing["interval_ms"]["count"] >= 40 and pacing["ideal_interval_ms"] > 0
    page = (out / "report.html").read_text()
    plots = page[page.index('id="plots"'):]
    assert plots.count("<svg") == 2
    assert "position against time" in plots and "interval histogram" in plots


def test_report_command_rerenders_with_working_links(bad: tuple[Path, dict[str, Any]],
                                                     tmp_path: Path) -> None:
    out, _ = bad
    target = tmp_path / "elsewhere" / "page.html"
    target.parent.mkdir()
    assert cli_main(["report", "html", str(out / "results.json"), "-o", str(target)]) == 0
    page = target.read_text()
    assert overall_shown(page) == "FAIL"
    links = re.findall(r'href="([^"#][^"]*)"', page)
    assert links and all((target.parent / link).resolve().is_file() for link in links)


@pytest.mark.parametrize("content, says", [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ('{"schema": "other/1"}', "not a results.json"),
    (json.dumps({"schema": SCHEMA, "run": {}}), "'backend' missing"),
])
def test_bad_results_file_is_a_one_line_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
        says: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    for fmt in ("html", "md"):
        assert cli_main(["report", fmt, str(path)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and says in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "report.html").exists()


# -- the browser -----------------------------------------------------------------------------

def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable("no chromium for the browser test: apt-get install chromium")
    return exe


def browse(exe: str, page: Path, profile: Path, *args: str) -> tuple[str, str]:
    """Headless Chromium on ``page`` (file://): (stdout, stderr). Its whole process group is
    killed on timeout, so no renderer is left behind."""
    argv = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args,
            page.resolve().as_uri()]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s")
    return out, err


def console_errors(stderr: str, page: Path) -> list[str]:
    """The page's console messages (we ship no script: any is an error) and uncaught
    exceptions."""
    uri = page.resolve().as_uri()
    return [line for line in stderr.splitlines()
            if (":CONSOLE" in line and uri in line) or "Uncaught" in line]


def test_console_check_sees_errors(tmp_path: Path) -> None:
    """The check below is able to fail: a page with a script error is caught."""
    exe = chromium()
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><p>x</p><script>no_such_function()</script>")
    _, err = browse(exe, broken, tmp_path / "profile", "--dump-dom")
    assert console_errors(err, broken)


def test_chromium_renders_the_report(bad: tuple[Path, dict[str, Any]],
                                     tmp_path: Path) -> None:
    exe = chromium()
    page = bad[0] / "report.html"
    dom, err = browse(exe, page, tmp_path / "profile", "--dump-dom")
    assert not console_errors(err, page), console_errors(err, page)
    assert 'id="verdict-table"' in dom and 'id="clause-table"' in dom
    assert overall_shown(dom) == "FAIL"
    shot = tmp_path / "report.png"  # kept under the test's tmp dir as an artifact
    browse(exe, page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000, "the screenshot is (nearly) blank"
