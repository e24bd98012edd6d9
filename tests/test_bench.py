"""``sndif-harness bench``: the CI smoke. ``bench all --quick`` runs every group, prints
every row and writes valid JSON; no timing is ever asserted (the machine is shared: the
figures are for people, whether a target holds is printed, not gated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bench import GROUPS
from harness.bench.table import HOLDS, Row, format_table, write_json
from harness.cli import main

ROW_KEYS = {"figure", "value", "unit", "reference", "reference_name", "ratio", "target",
            "holds", "note", "extra"}
#: every figure of the issue's table, by group, as the bench names it (a prefix)
EXPECTED = {
    "codec": ["encode+decode 64-byte message, fast codec"],
    "ring": ["event-channel notify round trip (2 processes)"],
    "requests": ["request round trip, reference backend, 1 outstanding",
                 "pipelined requests, ring kept full",
                 "request round trip, snd_be (C), 1 outstanding"],
    "fuzz": ["fuzz: malformed requests executed and checked"],
    "certify": ["certify wall time, reference backend",
                "peak memory of the harness during certify", "certify -n 2"],
    "pacing": ["pacing: harness receive vs backend send of CUR_POS, p99 error"],
    "scale": ["scale  1 guests: request latency p99 per guest",
              "scale  1 guests: harness CPU per guest",
              "scale  4 guests: request latency p99 per guest",
              "scale  4 guests: harness CPU per guest"],
    "sim": ["sim: xenstore read round trips", "sim: event-channel notify round trips"],
}


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-c",
                           "import sys; from harness.cli import main; sys.exit(main())",
                           "bench", "all", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def _load(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert {"group", "quick", "when", "seconds", "host", "rows"} <= set(doc)
    assert doc["quick"] is True
    for row in doc["rows"]:
        assert set(row) == ROW_KEYS, row
        assert row["holds"] in HOLDS
        assert isinstance(row["figure"], str) and row["target"]
        if row["value"] is None:  # not measurable here: the row must say why
            assert row["holds"] == "printed" and row["note"].startswith("unavailable")
    return doc


def test_bench_all_quick_writes_every_group_and_row(quick_bench: tuple[Path, str]) -> None:
    out, stdout = quick_bench
    for group in GROUPS:
        doc = _load(out / f"{group}.json")
        assert doc["group"] == group
        figures = [r["figure"] for r in doc["rows"]]
        for want in EXPECTED[group]:
            assert any(f.startswith(want) for f in figures), (group, want, figures)
        assert not any(f.endswith("the group failed") for f in figures), figures
    everything = _load(out / "all.json")
    assert len(everything["rows"]) == sum(len(_load(out / f"{g}.json")["rows"])
                                          for g in GROUPS)
    # the table: a line per row with its target and holds, and the summary
    for row in everything["rows"]:
        line = next((ln for ln in stdout.splitlines() if ln.startswith(row["figure"])), None)
        assert line is not None, row["figure"]
        assert row["target"] in line and row["holds"] in line
    assert "targets hold" in stdout


def test_bench_all_quick_leaves_nothing_running(quick_bench: tuple[Path, str]) -> None:
    out, _ = quick_bench
    mine = subprocess.run(["pgrep", "-f", "sndif-bench-"], capture_output=True, text=True)
    assert mine.stdout.strip() == "", "a bench process outlived the run"
    assert not list(out.glob(".*.json.*")), "a temporary JSON file was left behind"


def test_one_group_alone_writes_its_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "codec", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fast codec:" in out and "target" in out
    doc = _load(tmp_path / "codec.json")
    assert [r["figure"] for r in doc["rows"]] == EXPECTED["codec"]


@pytest.mark.parametrize(("argv", "says"), [
    (["bench", "all", "--skip", "nope"], "invalid choice"),
    (["bench", "sim", "--seconds", "0"], "out of range"),
    (["bench", "codec", "--repeats", "1000"], "out of range (1 .. 100)"),
    (["bench", "nope"], "invalid choice"),
])
def test_bench_usage_errors_exit_2(argv: list[str], says: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err


def test_table_and_json_of_rows(tmp_path: Path) -> None:
    rows = [Row("a figure", 1234.5, "/s", reference=2000.0, reference_name="raw", ratio=0.6,
                target=">= 0.5 of raw", holds="yes"),
            Row("not here", None, "ms", holds="printed", note="unavailable: no tool")]
    text = format_table(rows)
    assert "a figure" in text and ">= 0.5 of raw" in text and "[1] unavailable: no tool" in text
    write_json(tmp_path / "g.json", "g", rows, quick=True, seconds=1.0)
    doc = json.loads((tmp_path / "g.json").read_text())
    assert [r["figure"] for r in doc["rows"]] == ["a figure", "not here"]
    assert os.listdir(tmp_path) == ["g.json"]  # the temporary file was renamed into place
    with pytest.raises(ValueError):
        Row("bad", 1.0, "s", holds="maybe")
