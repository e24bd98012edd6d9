"""report.md from the results.json of real certify runs (the reference backend, correct and
with a HW_PARAM_QUERY defect): verdict, identity, per-area table, the failing clauses with
their cases and messages, the untested clauses; untrusted text cannot break out."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from test_report_html import DEFECT, certify_run

from harness.cli import main as cli_main
from harness.report.markdown import code, fenced, md, render_markdown


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("good")
    return out, certify_run(out)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bad")
    return out, certify_run(out, "--defect", DEFECT)


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_verdict_identity_and_area_table(good: tuple[Path, dict[str, Any]],
                                         bad: tuple[Path, dict[str, Any]]) -> None:
    for (out, doc), want in ((good, "PASS"), (bad, "FAIL")):
        text = (out / "report.md").read_text()
        assert text == render_markdown(doc)  # the plugin's file is the final rendering
        assert re.search(rf"^\*\*Overall: {want}\*\*", text, re.M), text[:300]
        assert "- **backend**: reference" in text
        table = section(text, "Clauses judged on the backend, per area")
        for area, info in doc["summary"]["areas"].items():
            row = next(line for line in table.splitlines()
                       if line.startswith(f"| {area} "))
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[1:] == [str(info["clauses"].get(v, 0)) for v in
                                 ("CRASH", "HANG", "FAIL", "NONSTRICT", "INCONCLUSIVE",
                                  "INFO", "PASS", "N/A", "UNTESTED")], row
    assert "injected defects**: " + md(DEFECT) in (bad[0] / "report.md").read_text()


def test_failing_clauses_with_cases_and_messages(good: tuple[Path, dict[str, Any]],
                                                 bad: tuple[Path, dict[str, Any]]) -> None:
    out, doc = bad
    failing = section((out / "report.md").read_text(), "Clauses not passing")
    assert doc["summary"]["failing_clauses"]
    for cid in doc["summary"]["failing_clauses"]:
        assert f"### FAIL {code(cid)}" in failing
    for case in doc["cases"]:
        if case["verdict"] == "FAIL":
            assert code(case["nodeid"]) in failing
            assert case["message"].splitlines()[0] in failing
        if case["verdict"] == "PASS":
            assert code(case["nodeid"]) not in failing
    # worst first: the FAIL clauses before the NONSTRICT one
    assert failing.index("### FAIL") < failing.index("### NONSTRICT")
    assert section((good[0] / "report.md").read_text(),
                   "Clauses not passing").splitlines()[2] == "none"


def test_untested_clauses_with_why(bad: tuple[Path, dict[str, Any]]) -> None:
    out, doc = bad
    untested = section((out / "report.md").read_text(), "Untested clauses")
    judged_untested = [c for c in doc["clauses"]
                       if c["judged_on_backend"] and c["verdict"] == "UNTESTED"]
    assert judged_untested
    for c in judged_untested:
        line = next(x for x in untested.splitlines() if x.startswith(f"- {code(c['id'])} "))
        if c["untestable"]:
            assert "untestable: " + md(c["untestable"]) in line
    not_judged = [c["id"] for c in doc["clauses"] if not c["judged_on_backend"]]
    assert not any(f"- {code(cid)} " in untested for cid in not_judged)
    assert f"## Untested clauses ({len(judged_untested)})" in untested


def test_hostile_text_cannot_break_out(bad: tuple[Path, dict[str, Any]]) -> None:
    doc = copy.deepcopy(bad[1])
    case = next(c for c in doc["cases"] if c["verdict"] == "FAIL")
    case["message"] = "got ```\n# pwned\n<script>x</script>\n```` more"
    case["nodeid"] = "x|y `<b>z</b>"
    clause = next(c for c in doc["clauses"] if c["verdict"] == "FAIL")
    clause["cases"] = ["x|y `<b>z</b>"]
    clause["requirement"] = "*not* [a](link) <b>bold</b> | cell"
    text = render_markdown(doc)
    # the message sits verbatim inside a fence longer than any backtick run in it (code:
    # shown as text by any viewer); outside the fence nothing hostile is left raw
    start = text.index("  `````text\n  got ```\n  # pwned\n  <script>x</script>\n")
    end = text.index("\n  `````\n", start) + 9
    outside = text[:start] + text[end:]
    assert "<script" not in outside and "<b>" not in outside.replace("``x\\|y `<b>z</b>``", "")
    assert "``x\\|y `<b>z</b>``" in text  # inside inline code: shown literally
    assert r"\*not\* \[a\](link) &lt;b>bold&lt;/b> \| cell" in text
    assert fenced("a ``` b").startswith("````text\n")


def test_report_command_writes_markdown(bad: tuple[Path, dict[str, Any]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out, doc = bad
    target = tmp_path / "r.md"
    assert cli_main(["report", "md", str(out / "results.json"), "-o", str(target)]) == 0
    assert target.read_text() == render_markdown(doc)
    capsys.readouterr()
    assert cli_main(["report", "md", str(out / "results.json"), "-o", "-"]) == 0
    assert capsys.readouterr().out == render_markdown(doc)
