"""certify-frontend: the reference backend judging the frontend (harness/fejudge). The
correct reference frontend passes with a verdict for every frontend-side MUST clause;
every catalogued frontend defect is caught (its clauses FAIL or NONSTRICT); the
results.json is read by the reports and the gate like a certify run's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main as cli_main
from harness.cli.certify_frontend_cmd import run
from harness.fejudge.clauses import FE_CLAUSES, INVISIBLE
from harness.frontend.defects import CATALOGUE
from harness.report.registry import load_registry

FAILING = {"FAIL", "NONSTRICT"}


def _quiet(*args: Any, **kwargs: Any) -> None:
    pass


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("clean")
    status, doc = run("reference", [], out, echo=_quiet)
    assert doc is not None
    return status, doc, out


def test_the_reference_frontend_passes(clean: tuple[int, dict[str, Any], Path]) -> None:
    status, doc, _ = clean
    verdicts = {c["id"]: c for c in doc["clauses"]}
    assert status == 0, doc["summary"]["reason"]
    assert doc["run"]["judged"] == "frontend" and doc["frontend"]["name"] == "reference"
    assert not [c for c in FE_CLAUSES if verdicts[c]["verdict"] in FAILING]
    for c in FE_CLAUSES:  # every MUST one judged, or UNTESTED saying why no backend can
        if "MUST" in verdicts[c]["levels"] and verdicts[c]["verdict"] == "UNTESTED":
            assert verdicts[c]["untestable"], c
    musts = [c for c in FE_CLAUSES if load_registry()[c].level == "MUST"]
    judged = [c for c in musts if verdicts[c]["verdict"] == "PASS"]
    assert len(judged) >= len(musts) - 2, set(musts) - set(judged)
    assert all(c["phase"] == "FRONTEND" for c in doc["cases"])


def test_the_results_are_a_certification_document(
        clean: tuple[int, dict[str, Any], Path], tmp_path: Path) -> None:
    _, _, out = clean
    results = out / "results.json"
    assert cli_main(["report", "html", str(results), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "SND-B-14" in page and "Clauses judged on the frontend" in page
    # a complete certification, by the frontend's own clause set, bundled and verified
    assert cli_main(["bundle", str(out), "-o", str(tmp_path / "cert.tar.gz")]) == 0
    assert cli_main(["bundle", "verify", str(tmp_path / "cert.tar.gz")]) == 0
    base = tmp_path / "baseline.toml"
    assert cli_main(["baseline", "create", str(results), "-o", str(base)]) == 0
    assert cli_main(["gate", "--baseline", str(base), str(results)]) == 0
    # a backend-side clause is not missing from a frontend's certification
    doc = json.loads(results.read_text())
    assert {c["verdict"] for c in doc["clauses"]
            if c["id"] not in FE_CLAUSES and c["id"].startswith("SND-")} == {"N/A"}


@pytest.mark.parametrize("defect", CATALOGUE, ids=lambda d: d.name)
def test_every_frontend_defect_is_caught(defect: Any, tmp_path: Path) -> None:
    status, doc = run("reference", [defect.name], tmp_path, echo=_quiet)
    assert doc is not None
    verdicts = {c["id"]: c["verdict"] for c in doc["clauses"]}
    missed = [c for c in defect.clauses if verdicts[c] not in FAILING]
    seen = {c: verdicts[c] for c in FE_CLAUSES if verdicts[c] != "PASS"}
    assert not missed, f"{defect.name}: {missed} not failed (not PASS: {seen})"
    assert status == 1
    assert doc["frontend"]["defects"] == [defect.name]


def test_clauses_a_backend_cannot_see_are_frontend_clauses() -> None:
    assert set(INVISIBLE) <= set(FE_CLAUSES)
    registry = load_registry()
    for cid in FE_CLAUSES:
        assert registry[cid].side in ("FE", "FE/TS", "both"), cid


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["certify-frontend", "--fe-defect", "no-such"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such" in err[0]
    (tmp_path / "x").write_text("")
    assert cli_main(["certify-frontend", "--report-dir", str(tmp_path)]) == 2
    assert cli_main(["defects", "--frontend", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in listed] == [d.name for d in CATALOGUE]
