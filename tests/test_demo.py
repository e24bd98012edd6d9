"""The end-to-end demo command: it passes on the reference pair, fails when a check does,
and leaves a complete trace (XenStore ops, ring traffic, grant accounting)."""

from __future__ import annotations

import collections
from pathlib import Path

from harness.cli import main
from harness.demo import run_demo
from harness.trace import load


def test_demo_passes_and_writes_a_complete_trace(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seconds", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "verdict: PASS" in text and "[FAIL]" not in text
    assert "byte-identical" in text and "captured exactly" in text
    records = list(load(out / "trace.jsonl"))
    kinds = collections.Counter(r.kind for r in records)
    for kind in ("xs", "watch", "state", "req", "resp", "evt", "notify", "map", "unmap"):
        assert kinds[kind] > 0, kind
    maps = collections.Counter((r.domid, r.fields["ref"]) for r in records if r.kind == "map")
    unmaps = collections.Counter((r.domid, r.fields["ref"]) for r in records
                                 if r.kind == "unmap")
    assert maps == unmaps  # every mapping of the frontend's pages was undone
    assert (out / "trace.txt").read_text().count("\n") == len(records)


def test_demo_fails_when_a_check_fails(tmp_path: Path) -> None:
    lines: list[str] = []
    assert not run_demo(tmp_path, seconds=0.3, echo=lines.append, capture_source="sine:440")
    assert any(line.startswith("  [FAIL] captured exactly") for line in lines)
    assert lines[-1] == "verdict: FAIL"


def test_demo_refuses_a_non_empty_output_dir(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep").write_text("x")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert main(["demo", "--seconds", "0"]) == 2
