"""``sndif-harness baseline create`` and ``sndif-harness gate``: the gate passes on the run
its baseline was made from and fails, saying what changed, on each kind of change (the
variants are a real run's results.json with verdicts edited); ``certify --baseline``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.report.baseline import SCHEMA, read_baseline

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]
SUBSET = "test_a_ or test_d_"  # a short real run: the XenStore and trigger areas


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gate") / "run"
    r = subprocess.run([*CLI, "certify", "-k", SUBSET, "--report-dir", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    return doc


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _gate(capsys: pytest.CaptureFixture[str], baseline: Path, results: Path,
          *extra: str) -> tuple[int, str]:
    rc = main(["gate", "--baseline", str(baseline), str(results), *extra])
    out, err = capsys.readouterr()
    return rc, out + err


def _baseline(capsys: pytest.CaptureFixture[str], results: Path, out: Path) -> Path:
    assert main(["baseline", "create", str(results), "-o", str(out)]) == 0
    capsys.readouterr()
    return out


def _case(doc: dict[str, Any], verdict: str = "PASS", nth: int = 0) -> dict[str, Any]:
    case: dict[str, Any] = [c for c in doc["cases"] if c["verdict"] == verdict][nth]
    return case


@pytest.fixture
def setup(real: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
          ) -> tuple[dict[str, Any], Path]:
    """(a copy of the real results to edit, the baseline made from the unedited ones)."""
    results = _write(tmp_path / "base-results.json", real)
    return copy.deepcopy(real), _baseline(capsys, results, tmp_path / "baseline.toml")


def test_a_normal_run_is_marked_complete(real: dict[str, Any]) -> None:
    assert real["run"]["complete"] is True and real["run"]["state"] == "finished"


def test_baseline_file_lists_every_case_and_clause(setup: tuple[dict[str, Any], Path]
                                                   ) -> None:
    doc, baseline = setup
    data = tomllib.loads(baseline.read_text())
    assert data["schema"] == SCHEMA
    assert data["cases"] == {c["nodeid"]: c["verdict"] for c in doc["cases"]}
    assert data["clauses"] == {c["id"]: c["verdict"] for c in doc["clauses"]}


def test_identical_results_pass(setup: tuple[dict[str, Any], Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 0, out
    assert "gate: PASS: no change" in out


def test_a_passing_case_now_failing_is_a_regression(
        setup: tuple[dict[str, Any], Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    for verdict, case in zip(("FAIL", "CRASH", "HANG"), doc["cases"][:3], strict=True):
        case["verdict"] = verdict
        case["message"] = f"expected 0, got -22 ({verdict})"
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 1, out
    assert "cases that got worse (now FAIL, CRASH or HANG) (3):" in out
    for case in doc["cases"][:3]:
        assert f"{case['nodeid']}: PASS -> {case['verdict']}" in out
    assert "expected 0, got -22 (CRASH)" in out
    assert "gate: FAIL: 3 change(s) against the baseline (3 regressed)" in out


def test_a_new_failing_case(setup: tuple[dict[str, Any], Path], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    new = dict(copy.deepcopy(doc["cases"][0]), nodeid="suites/test_z.py::test_new",
               verdict="FAIL", message="it broke")
    quiet = dict(copy.deepcopy(doc["cases"][0]), nodeid="suites/test_z.py::test_quiet")
    doc["cases"] += [new, quiet]
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 1, out
    assert "new failing cases (not in the baseline) (1):" in out
    assert "suites/test_z.py::test_new: (not in the baseline) -> FAIL" in out
    # a new passing case is told, not a change
    assert "new cases, not failing" in out and "test_quiet" in out
    assert "(1 new-failing)" in out


def test_a_new_passing_case_alone_passes(setup: tuple[dict[str, Any], Path],
                                         tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    doc["cases"].append(dict(copy.deepcopy(doc["cases"][0]), nodeid="suites/t.py::test_n"))
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 0, out
    assert "suites/t.py::test_n" in out


def test_an_accepted_failure_now_passing_says_tighten(
        setup: tuple[dict[str, Any], Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    doc, _ = setup
    failing = copy.deepcopy(doc)
    target = _case(failing)
    target["verdict"] = "FAIL"
    baseline = _baseline(capsys, _write(tmp_path / "failing.json", failing),
                         tmp_path / "accepting.toml")
    text = baseline.read_text()
    line = f'"{target["nodeid"]}" = {{ verdict = "FAIL", reason = "" }}'
    assert line in text  # a reason to fill in
    baseline.write_text(text.replace(line, line.replace('reason = ""',
                                                        'reason = "vendor bug 42"')))
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 1, out
    assert "accepted failures now passing: tighten the baseline (1):" in out
    assert f"{target['nodeid']}: FAIL -> PASS" in out
    assert "accepted because: vendor bug 42" in out
    assert "to tighten: sndif-harness baseline create" in out

    # re-creating the baseline over the old one keeps the reasons still meant
    again = _baseline(capsys, _write(tmp_path / "failing.json", failing), baseline)
    assert read_baseline(again).cases[target["nodeid"]].reason == "vendor bug 42"


def test_a_clause_losing_its_coverage(setup: tuple[dict[str, Any], Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    judged = [c for c in doc["clauses"] if c["verdict"] == "PASS"]
    judged[0]["verdict"] = "UNTESTED"
    gone_id = judged[1]["id"]
    doc["clauses"] = [c for c in doc["clauses"] if c["id"] != gone_id]
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 1, out
    assert "clauses that lost their coverage" in out
    assert f"{judged[0]['id']}: PASS -> UNTESTED" in out
    assert f"{gone_id}: PASS -> (absent)" in out


def test_cases_gone(setup: tuple[dict[str, Any], Path], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    gone = doc["cases"].pop(0)
    results = _write(tmp_path / "r.json", doc)
    rc, out = _gate(capsys, baseline, results)
    assert rc == 1, out
    assert "cases in the baseline that did not run (1):" in out
    assert f"{gone['nodeid']}: PASS -> (absent)" in out
    rc, out = _gate(capsys, baseline, results, "--allow-gone")
    assert rc == 0, out


def test_other_verdict_changes(setup: tuple[dict[str, Any], Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    doc["cases"][0]["verdict"] = "INCONCLUSIVE"
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 1, out
    assert "other verdict changes (1):" in out
    assert f"{doc['cases'][0]['nodeid']}: PASS -> INCONCLUSIVE" in out


def test_incomplete_results_fail_the_gate(setup: tuple[dict[str, Any], Path],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    doc, baseline = setup
    doc["run"].update(complete=False, state="running")
    rc, out = _gate(capsys, baseline, _write(tmp_path / "r.json", doc))
    assert rc == 1, out
    assert "the results are not a complete run" in out and "state running" in out


@pytest.mark.parametrize(("text", "why"), [
    ('schema = "other"\n', "not a baseline of schema"),
    (f'schema = "{SCHEMA}"\n[cases]\n"a::b" = "GREAT"\n', "'GREAT' is not a verdict"),
    (f'schema = "{SCHEMA}"\n[cases]\n"a::b" = {{ verdict = "FAIL", why = "x" }}\n',
     "unknown key(s) why"),
    ("schema = [\n", "not TOML"),
])
def test_a_bad_baseline_is_a_usage_error(real: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], text: str,
                                         why: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    rc, out = _gate(capsys, bad, _write(tmp_path / "r.json", real))
    assert rc == 2
    assert why in out and len(out.strip().splitlines()) == 1 and "Traceback" not in out


def test_missing_files_are_usage_errors(real: dict[str, Any], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _gate(capsys, tmp_path / "none.toml", _write(tmp_path / "r.json", real))
    assert rc == 2 and "none.toml: no such file" in out
    baseline = _baseline(capsys, tmp_path / "r.json", tmp_path / "b.toml")
    (tmp_path / "junk.json").write_text("{")
    rc, out = _gate(capsys, baseline, tmp_path / "junk.json")
    assert rc == 2 and "junk.json: not JSON" in out
    assert main(["baseline", "create", str(tmp_path / "nope.json")]) == 2


def test_certify_with_baseline_exits_with_the_gate(real: dict[str, Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    # the baseline expects one case of the run to fail: the run passing it is a change
    failing = copy.deepcopy(real)
    target = _case(failing)
    target["verdict"] = "FAIL"
    baseline = _baseline(capsys, _write(tmp_path / "f.json", failing), tmp_path / "b.toml")
    r = subprocess.run([*CLI, "certify", "-k", SUBSET, "--report-dir",
                        str(tmp_path / "run"), "--baseline", str(baseline)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "accepted failures now passing: tighten the baseline (1):" in r.stdout
    assert f"{target['nodeid']}: FAIL -> PASS" in r.stdout


def test_certify_with_a_bad_baseline_stops_before_running(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = "x"\n')
    r = subprocess.run([*CLI, "certify", "--report-dir", str(tmp_path / "run"),
                        "--baseline", str(bad)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "not a baseline" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_certify_harness_failure_stays_3_with_a_baseline(real: dict[str, Any],
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    baseline = _baseline(capsys, _write(tmp_path / "r.json", real), tmp_path / "b.toml")
    r = subprocess.run([*CLI, "certify", "-k", "no_such_case_zzz", "--report-dir",
                        str(tmp_path / "run"), "--baseline", str(baseline)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "gate:" not in r.stdout
