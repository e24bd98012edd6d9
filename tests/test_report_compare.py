"""``sndif-harness report compare``: the reference backend next to a defective one (real
runs), clause by clause; the clauses the defect breaks come first, marked, in HTML and in
Markdown; snd_be's CI run joins when it exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.report.compare import clause_rows, make_runs

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]
DEFECT = "no-initwait-after-fe-close"  # breaks SND-A-16 (and its cases)
SUBSET = "test_versions_published or test_frontend_close_returns_backend_to_initwait"
SND_BE_RESULTS = ROOT / "reports" / "ci-snd_be" / "results.json"  # written by .ci/test


def _certify(out: Path, *extra: str) -> Path:
    r = subprocess.run([*CLI, "certify", "-k", SUBSET, "--report-dir", str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    return out / "results.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("compare")
    return _certify(base / "good"), _certify(base / "bad", "--defect", DEFECT)


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _differing(good: Path, bad: Path) -> list[str]:
    """The clauses whose verdicts differ, from the documents themselves."""
    g = {c["id"]: c["verdict"] for c in _doc(good)["clauses"]}
    b = {c["id"]: c["verdict"] for c in _doc(bad)["clauses"]}
    return [cid for cid in g if g[cid] != b.get(cid)]


def test_the_defect_shows_as_differences_first(runs: tuple[Path, Path]) -> None:
    good, bad = runs
    differ = _differing(good, bad)
    assert "SND-A-16" in differ, differ  # the defect's clause: the runs must disagree
    rows = clause_rows(make_runs([(good, _doc(good)), (bad, _doc(bad))]))
    marked = [r.key for r in rows if r.differs]
    assert sorted(marked) == sorted(differ)
    assert [r.key for r in rows[:len(marked)]] == marked  # differences first
    a16 = next(r for r in rows if r.key == "SND-A-16")
    assert a16.verdicts == ("PASS", "FAIL")


def test_html_side_by_side(runs: tuple[Path, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = runs
    out = tmp_path / "cmp.html"
    assert main(["report", "compare", str(good), str(bad), "-o", str(out)]) == 0
    page = out.read_text()
    # self-contained: no external reference, no script
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page
    assert f"reference +defect {DEFECT} (bad)" in page and "reference (good)" in page
    table = page.split('id="compare-clauses"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr( class=\"diff\")?><td class=\"mark\">[^<]*</td><td><code>"
                      r"([^<]+)</code>", table)
    diff_ids = [cid for cls, cid in rows if cls]
    assert sorted(diff_ids) == sorted(_differing(good, bad))
    assert [cid for _, cid in rows[:len(diff_ids)]] == diff_ids  # first
    a16 = table.split("<code>SND-A-16</code>", 1)[1].split("</tr>", 1)[0]
    assert a16.index("v-PASS") < a16.index("v-FAIL")  # a column per run, in order
    assert "compare-cases" in page  # the failing cases differ too


def test_markdown_side_by_side(runs: tuple[Path, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = runs
    assert main(["report", "compare", str(good), str(bad), "--format", "md", "-o", "-"]) == 0
    text = capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if "`SND-A-16`" in ln)
    assert line.startswith("| **≠** |") and line.endswith("| **PASS** | **FAIL** |")
    assert f"{len(_differing(good, bad))} of " in text


def test_format_follows_the_output_suffix(runs: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = runs
    out = tmp_path / "c.md"
    assert main(["report", "compare", str(good), str(bad), "-o", str(out)]) == 0
    assert out.read_text().startswith("# sndif certification: runs compared")


@pytest.mark.parametrize(("argv", "why"), [
    (["report", "compare", "{good}"], "give at least two results.json"),
    (["report", "compare", "{good}", "{missing}"], "no such file"),
    (["report", "html", "{good}", "{good}"], "give one results.json, not 2"),
    (["report", "html", "{good}", "--format", "md"], "--format: only for report compare"),
])
def test_usage_errors(runs: tuple[Path, Path], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str], argv: list[str], why: str) -> None:
    good, _ = runs
    args = [a.format(good=good, missing=tmp_path / "none.json") for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert why in err and len(err.strip().splitlines()) == 1


def test_the_single_report_still_renders(runs: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    good, _ = runs
    out = tmp_path / "r.html"
    assert main(["report", "html", str(good), "-o", str(out)]) == 0
    assert "sndif certification report" in out.read_text()


def test_snd_be_next_to_the_reference(runs: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    if not SND_BE_RESULTS.is_file():
        pytest.skip(f"no {SND_BE_RESULTS} (.ci/test certifies snd_be before the tests)")
    good, bad = runs
    out = tmp_path / "three.md"
    assert main(["report", "compare", str(good), str(bad), str(SND_BE_RESULTS),
                 "-o", str(out)]) == 0
    text = out.read_text()
    header = next(ln for ln in text.splitlines() if ln.startswith("|  | clause |"))
    assert header.count("|") == 7 and "exec:snd\\_be" in header  # a column per run
    snd = {c["id"]: c["verdict"] for c in _doc(SND_BE_RESULTS)["clauses"]}
    cid = next(iter(snd))
    row = next(ln for ln in text.splitlines() if f"`{cid}`" in ln)
    assert snd[cid] in row.split("|")[-2]
