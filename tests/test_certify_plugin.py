"""The certification plugin: pytest outcomes become case and clause verdicts, results.json
is valid after every case, exit statuses 0/1/3, NONSTRICT and --certify-strict, the
progress line and the summary table; tiny fake suites run with no backend at all, and one
run against the reference backend shows a CRASH with its evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.report.registry import load_registry
from harness.report.results import write_atomic
from harness.report.verdicts import (
    SEVERITY,
    Phase,
    RunFacts,
    Verdict,
    clause_verdict,
    exit_status,
    judge_case,
    worst,
)
from harness.runner.verdicts import Outcome
from harness.runner.verdicts import Verdict as BackendVerdict

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120

FAKE_SUITE = """
import pytest
from harness.runner.supervisor import BackendStartError
from harness.runner.verdicts import BackendVerdictError, Outcome, Verdict
from harness.certify.outcomes import inconclusive, not_applicable

@pytest.fixture
def broken_fixture():
    raise RuntimeError("fixture broke")

@pytest.fixture
def dead_backend():
    raise BackendStartError("backend exec:./be did not reach InitWait: timeout; "
                            "it exited (killed by SIGSEGV)")

@pytest.fixture
def missing_backend():
    raise BackendStartError("cannot start backend exec:./nope: No such file")

@pytest.mark.clause("SND-C-09")
def test_pass():
    '''passes'''

@pytest.mark.clause("SND-C-09", "SND-G-01")
def test_fail_must():
    assert 0 == -22, "SND-C-09: expected status -22, got 0"

@pytest.mark.clause("SND-C-15")
def test_fail_should():
    assert False, "expected a negative status, got 0"

@pytest.mark.clause("SND-E-06:SHOULD")
def test_fail_should_part():
    assert False, "expected no CUR_POS while paused, got 2"

@pytest.mark.clause("SND-H-04")
def test_na():
    not_applicable("no volume control")

@pytest.mark.clause("SND-D-04")
def test_inconclusive():
    inconclusive("the sim lost a socket")

@pytest.mark.clause("SND-E-04", "AMBIG-1")
def test_observe(observe):
    observe("event id after re-OPEN", 3)

@pytest.mark.clause("SND-F-02")
def test_plain_skip():
    pytest.skip("needs a sound card")

@pytest.mark.clause("SND-F-03")
def test_harness_bug():
    {}["missing"]

@pytest.mark.clause("SND-F-04")
def test_fixture_error(broken_fixture):
    pass

@pytest.mark.clause("SND-A-09")
def test_backend_died(dead_backend):
    pass

@pytest.mark.clause("SND-A-12")
def test_backend_missing(missing_backend):
    pass

@pytest.mark.clause("SND-D-09", "SND-D-07")
def test_hang():
    raise BackendVerdictError(Verdict(Outcome.HANG, "1 request(s) timed out"))
"""

EXPECTED = {
    "test_pass": "PASS", "test_fail_must": "FAIL", "test_fail_should": "NONSTRICT",
    "test_fail_should_part": "NONSTRICT", "test_na": "N/A",
    "test_inconclusive": "INCONCLUSIVE", "test_observe": "INFO",
    "test_plain_skip": "INCONCLUSIVE", "test_harness_bug": "INCONCLUSIVE",
    "test_fixture_error": "INCONCLUSIVE", "test_backend_died": "CRASH",
    "test_backend_missing": "INCONCLUSIVE", "test_hang": "HANG",
}

OBSERVE_FIXTURE = """
import pytest

@pytest.fixture
def observe(request):
    from harness.certify.outcomes import observe as _observe
    return lambda what, value: _observe(request.node, what, value)
"""


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    pytester.makeconftest(OBSERVE_FIXTURE)  # the root conftest's, without the backend
    out = pytester.path / "report"
    # in process: fast; the plugin keeps no state between runs
    result = pytester.runpytest_inprocess("-p", "harness.certify.plugin", "-p",
                                          "no:cacheprovider", "--report-dir", str(out), *args)
    path = out / "results.json"
    return result, json.loads(path.read_text()) if path.exists() else {}


def _cases(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["nodeid"].split("::")[-1]: c for c in doc["cases"]}


def test_fake_suite_verdicts_report_and_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fake=FAKE_SUITE)
    junit = pytester.path / "junit.xml"
    result, doc = _run(pytester, f"--junitxml={junit}")
    cases = _cases(doc)
    assert {k: v["verdict"] for k, v in cases.items()} == EXPECTED
    assert result.ret == 1  # MUST clauses failed, and a HANG
    # evidence of a failure: the message, expected and actual
    fail = cases["test_fail_must"]
    assert fail["message"].startswith("SND-C-09: expected status -22, got 0")
    assert (fail["expected"], fail["actual"]) == ("status -22", "0")
    assert cases["test_hang"]["absolute"] and cases["test_hang"]["backend"]["outcome"] == "HANG"
    assert "SIGSEGV" in cases["test_backend_died"]["message"]
    assert cases["test_observe"]["observations"] == [
        {"what": "event id after re-OPEN", "value": 3}]
    assert cases["test_na"]["message"] == "no volume control"
    assert cases["test_fixture_error"]["phase"] == "setup"
    # JUnit carries each case's clauses and verdict
    xml = junit.read_text()
    assert '<property name="clauses" value="SND-C-09 SND-G-01" />' in xml
    assert '<property name="verdict" value="NONSTRICT" />' in xml
    # per clause: the worst of the cases citing it
    clauses = {c["id"]: c for c in doc["clauses"]}
    assert len(clauses) == len(load_registry())
    c09 = clauses["SND-C-09"]  # PASS and FAIL cases: FAIL
    assert c09["verdict"] == "FAIL" and len(c09["cases"]) == 2
    assert c09["requirement"] and c09["level"] == "MUST"
    assert clauses["SND-C-15"]["verdict"] == "NONSTRICT"
    assert clauses["SND-E-06"]["verdict"] == "NONSTRICT"  # only its SHOULD part was cited
    assert clauses["SND-D-07"]["verdict"] == "HANG"  # a supervisor verdict is not lowered
    assert clauses["SND-H-04"]["verdict"] == "N/A"
    assert clauses["AMBIG-1"]["verdict"] == "INFO"
    assert clauses["SND-B-03"]["verdict"] == "UNTESTED" and clauses["SND-B-03"]["cases"] == []
    summary = doc["summary"]
    assert summary["overall"] == "FAIL" and summary["exit_status"] == 1
    assert "SND-C-09" in summary["failing_clauses"]
    assert "SND-C-15" not in summary["failing_clauses"]
    assert doc["run"]["state"] == "finished" and doc["run"]["cases_done"] == len(EXPECTED)
    assert doc["schema"] == "sndif-harness/results/1"
    # the terminal: a progress line per case, the per-area table, the overall verdict
    out = result.stdout.str()
    n = len(EXPECTED)
    assert f"certify 1/{n} area C: PASS 1" in out
    assert f"certify {n}/{n} area D:" in out
    result.stdout.re_match_lines([
        r"AREA +CRASH +HANG +FAIL +NONSTRICT +INCONCL +INFO +PASS +N/A +UNTESTED",
        r"C Open/close and buffer sharing +0 +0 +1 +1 +0 +0 +0 +0 +\d+",
        r"overall: FAIL: .*SND-C-09.*exit status 1",
    ], consecutive=False)
    assert "test_fake.py ." not in out  # the progress line replaces pytest's dots


@pytest.mark.parametrize(("strict", "ret", "verdict"), [
    ((), 0, "NONSTRICT"), (("--certify-strict",), 1, "FAIL")])
def test_nonstrict_fails_only_with_strict(pytester: pytest.Pytester, strict: tuple[str, ...],
                                         ret: int, verdict: str) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.clause("SND-C-09")
        def test_ok():
            pass

        @pytest.mark.clause("SND-F-05")
        def test_should():
            assert False, "expected the same space twice, got two"
        """)
    result, doc = _run(pytester, *strict)
    assert result.ret == ret
    assert _cases(doc)["test_should"]["verdict"] == verdict
    assert doc["run"]["strict"] is bool(strict)


@pytest.mark.parametrize(("body", "ret", "reason"), [
    ("@pytest.mark.clause('SND-C-09')\ndef test_ok():\n    pass\n", 0, "PASS"),
    ("from harness.certify.outcomes import inconclusive\n"
     "@pytest.mark.clause('SND-C-09')\ndef test_i():\n    inconclusive('no sim')\n", 3,
     "every case was inconclusive"),
    ("def helper():\n    pass\n", 3, "no case ran"),
    ("@pytest.mark.clause('SND-C-09')\ndef test_ok():\n    pass\nimport no_such_module\n",
     3, "collection error"),
])
def test_exit_status(pytester: pytest.Pytester, body: str, ret: int, reason: str) -> None:
    pytester.makepyfile("import pytest\n" + body)
    result, doc = _run(pytester)
    assert result.ret == ret, result.stdout.str()
    assert reason in doc["summary"]["reason"]


def test_unknown_clause_is_a_usage_error_naming_the_case(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.clause("SND-C-99")
        def test_x():
            pass
        """)
    result = pytester.runpytest_subprocess("-p", "harness.certify.plugin", timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "test_x: @pytest.mark.clause: unknown clause 'SND-C-99'" in err
    assert "Traceback" not in err


def test_results_json_is_valid_after_every_case(pytester: pytest.Pytester) -> None:
    """A later case reads the file the plugin wrote after the earlier ones."""
    pytester.makepyfile("""
        import json, os, pytest

        @pytest.mark.clause("SND-C-09")
        def test_1():
            pass

        @pytest.mark.clause("SND-C-09")
        def test_2(request):
            path = os.path.join(request.config.getoption("report_dir"), "results.json")
            doc = json.load(open(path))
            assert doc["run"]["state"] == "running", doc["run"]
            assert [c["nodeid"].split("::")[1] for c in doc["cases"]] == ["test_1"]
            assert doc["summary"]["overall"] == "RUNNING"
        """)
    result, doc = _run(pytester)
    assert result.ret == 0, result.stdout.str()
    assert [c["verdict"] for c in doc["cases"]] == ["PASS", "PASS"]
    assert not list((pytester.path / "report").glob("*.part"))


def test_write_atomic_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_atomic(path, {"a": 1})

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        write_atomic(path, {"a": Unprintable()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_severity_order_and_aggregation() -> None:
    assert [v.value for v in SEVERITY] == [
        "CRASH", "HANG", "FAIL", "NONSTRICT", "INCONCLUSIVE", "INFO", "PASS", "N/A",
        "UNTESTED"]
    assert worst([Verdict.PASS, Verdict.INFO, Verdict.NA]) is Verdict.INFO
    assert worst([]) is Verdict.UNTESTED
    assert clause_verdict(Verdict.FAIL, "SHOULD", absolute=False, strict=False) \
        is Verdict.NONSTRICT
    assert clause_verdict(Verdict.FAIL, "SHOULD", absolute=False, strict=True) \
        is Verdict.FAIL
    assert clause_verdict(Verdict.FAIL, "AMBIG", absolute=False, strict=False) is Verdict.INFO
    assert clause_verdict(Verdict.FAIL, "MAY", absolute=True, strict=False) is Verdict.FAIL


def test_case_verdict_from_phases() -> None:
    reg = load_registry()
    must, should = [reg.cite("SND-C-09")], [reg.cite("SND-C-15")]
    failed = Phase("call", "failed", AssertionError("expected 1, got 2"))
    assert judge_case([failed], must + should, observed=False, strict=False).verdict \
        is Verdict.FAIL
    assert judge_case([failed], should, observed=False, strict=False).verdict \
        is Verdict.NONSTRICT
    assert judge_case([failed], [reg.cite("AMBIG-7")], observed=False, strict=False).verdict \
        is Verdict.INFO
    leak = BackendVerdict(Outcome.FAIL, "resources left behind")
    from harness.runner.verdicts import BackendVerdictError

    j = judge_case([Phase("call", "failed", BackendVerdictError(leak))], should,
                   observed=False, strict=False)
    assert (j.verdict, j.absolute) == (Verdict.FAIL, True)
    error = BackendVerdictError(BackendVerdict(Outcome.ERROR, "checking failed"))
    assert judge_case([Phase("call", "failed", error)], must, observed=False,
                      strict=False).verdict is Verdict.INCONCLUSIVE
    # a teardown error does not hide the body's failure
    phases = [failed, Phase("teardown", "failed", RuntimeError("x"))]
    assert judge_case(phases, must, observed=False, strict=False).verdict is Verdict.FAIL


def test_exit_status_rules() -> None:
    ok = RunFacts()
    assert exit_status([Verdict.PASS, Verdict.NONSTRICT], [], ok)[0] == 0
    assert exit_status([Verdict.PASS, Verdict.FAIL], ["SND-C-09"], ok)[0] == 1
    assert exit_status([Verdict.CRASH], [], ok)[0] == 1  # G-07, whatever was cited
    assert exit_status([], [], ok)[0] == 3
    assert exit_status([Verdict.INCONCLUSIVE], [], ok)[0] == 3
    assert exit_status([Verdict.PASS], [], RunFacts(True, ["interrupted"])) == (
        3, "INCONCLUSIVE: interrupted")
    assert exit_status([Verdict.FAIL], ["SND-G-01"], RunFacts(True, ["interrupted"]))[0] == 1


def _certify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, "certify", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def test_certify_usage_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    for args, message in [
        (["--report-dir", str(tmp_path / "full")], "exists and is not an empty directory"),
        (["--profile", str(tmp_path / "nope.toml")], "nope.toml: no such file"),
        (["-n", "0"], "must be at least 1"),
        (["--audio", "alsa-file"], "the reference backend plays to WAV files"),
        (["--unique-id", "x{nope}"], "unknown field {nope}"),
        (["--backend-env", "1X=2"], "expected NAME=VALUE"),
        (["--vsnd", "[['card, sample-rates=abc']]"], "--vsnd"),
    ]:
        r = _certify(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert message in r.stderr.strip().splitlines()[-1]  # after argparse's usage, if any


def test_certify_passes_options_through() -> None:
    import argparse

    from harness.cli import certify_cmd

    parser = argparse.ArgumentParser()
    certify_cmd.register(parser.add_subparsers(), None)  # type: ignore[arg-type]
    args = parser.parse_args(["certify", "--backend", "exec:./be", "--strict", "-k", "open",
                              "--audio", "pulse", "--case-timeout", "2"])
    argv = certify_cmd.pytest_args(args, Path("r"), Path("suites"))
    assert argv[:8] == ["suites", "-p", "harness.certify.plugin", "-p", "no:hypothesispytest",
                        "--report-dir", "r", f"--junitxml={Path('r') / 'junit.xml'}"]
    text = " ".join(argv)
    assert "--backend exec:./be" in text and "--certify-strict" in text
    assert "-k open" in text and "--audio pulse" in text and "--case-timeout 2.0" in text
    assert "--vsnd" not in text and "--config" not in text and "-n" not in argv


def test_certify_runs_the_suites_and_writes_the_report(tmp_path: Path) -> None:
    """No case matches: the run is INCONCLUSIVE (3), and the report says so."""
    out = tmp_path / "rep"
    r = _certify("-k", "no_case_has_this_name_xyz", "--report-dir", str(out), cwd=ROOT)
    assert r.returncode == 3, r.stdout + r.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["summary"]["reason"] == "INCONCLUSIVE: no case ran"
    assert (out / "junit.xml").is_file()


def test_against_the_reference_backend_crash_with_evidence(pytester: pytest.Pytester) -> None:
    """With the real supervisor: a defect that aborts the backend is a CRASH whose trace
    and backend log are in the report directory; the next case passes."""
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makepyfile(test_mini="""
        import pytest

        @pytest.mark.clause("SND-D-07")
        def test_a_crash(backend_case):
            backend_case.dev.stream(0).trigger("start")  # no OPEN: the defect aborts

        @pytest.mark.clause("SND-C-09")
        def test_b_after(backend_case):
            pb = backend_case.dev.stream(0)
            assert pb.open(48000, "s16_le", 2, 65536, 4096).ok
            assert pb.close().ok
        """)
    out = pytester.path / "report"
    result = pytester.runpytest_subprocess(
        "-p", "harness.certify.plugin", "-p", "no:cacheprovider", "--report-dir", str(out),
        "--defect", "abort-on-trigger-before-open", "--case-timeout", "1", timeout=TIMEOUT)
    assert result.ret == 1, result.stdout.str()
    cases = _cases(json.loads((out / "results.json").read_text()))
    crash = cases["test_a_crash"]
    assert crash["verdict"] == "CRASH" and "SIGABRT" in crash["message"]
    assert crash["evidence"]["backend_log"] == "backend/backend.log"
    assert (out / crash["evidence"]["trace"]).is_file()
    assert "TRIGGER without OPEN" in crash["evidence"]["log_excerpt"]
    assert cases["test_b_after"]["verdict"] == "PASS"


def test_a_case_that_judges_a_start_failure_itself_is_judged_by_its_assertion() -> None:
    """``raise AssertionError(...) from None`` over a BackendStartError (the A-09 case):
    FAIL on the cited MUST; the bare start failure (e.g. in setup) stays INCONCLUSIVE."""
    from harness.world.world import BackendStartError

    reg = load_registry()
    cites = [reg.cite("SND-A-09")]
    start = BackendStartError("backend x did not reach InitWait: state '1' after 10 s")
    try:
        try:
            raise start
        except BackendStartError:
            raise AssertionError("SND-A-09: did not reach InitWait") from None
    except AssertionError as exc:
        own = exc
    assert judge_case([Phase("call", "failed", own)], cites, observed=False,
                      strict=False).verdict is Verdict.FAIL
    assert judge_case([Phase("setup", "failed", start)], cites, observed=False,
                      strict=False).verdict is Verdict.INCONCLUSIVE
