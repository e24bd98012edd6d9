"""The suites judge backends correctly: against the correct reference backend they give no
FAIL, CRASH or HANG (strict: not even a broken SHOULD); against every defect of the
reference backend's catalogue, at least one case citing one of the defect's clauses gives
FAIL, CRASH or HANG (a behaviour the catalogue marks as an AMBIG choice must instead be
reported INFO, observed, and fail nothing). Prints the defect-by-area kill matrix.

Each run is ``pytest suites/`` with the certification plugin, in a process of its own;
per defect only the cases citing its clauses run (``--clauses``), two runs at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.backends.reference.defects import CATALOGUE, Defect

ROOT = Path(__file__).resolve().parents[1]
KILLING = {"FAIL", "CRASH", "HANG"}
AREAS = "ABCDEFGH"
RUN_TIMEOUT = 600

pytestmark = pytest.mark.slow


#: what a defect needs of the card to show (the default card's buffers are 64 KiB)
EXTRA_ARGS = {
    "ignore-later-directory-pages": [
        "--vsnd", "[['card, sample-rates=48000, sample-formats=s16_le, buffer-size=8388608',"
        " 'pcm, name=dev0', 'stream, unique-id=pb, type=p', 'stream, unique-id=cap, "
        "type=c']]"],
}


def certify(out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """``pytest suites/`` with the plugin and a report under ``out``: (exit, results)."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            str(ROOT / "suites"), "--report-dir", str(out), "--certify-strict", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    path = out / "results.json"
    if not path.exists():
        pytest.fail(f"no results.json (exit {r.returncode}):\n{r.stdout[-3000:]}\n"
                    f"{r.stderr[-2000:]}")
    return r.returncode, json.loads(path.read_text())


def killing_cases(results: dict[str, Any], clauses: Sequence[str]) -> list[dict[str, Any]]:
    want = set(clauses)
    return [c for c in results["cases"] if c["verdict"] in KILLING
            and want & {ref.split(":")[0] for ref in c["clauses"]}]


def test_the_correct_reference_backend_passes_every_suite(tmp_path: Path) -> None:
    rc, results = certify(tmp_path / "correct")
    bad = [(c["nodeid"], c["verdict"], c["message"]) for c in results["cases"]
           if c["verdict"] in KILLING | {"NONSTRICT", "INCONCLUSIVE"}]
    assert not bad, f"the correct backend was judged wrong: {bad[:5]}"
    assert rc == 0 and results["summary"]["overall"] == "PASS"
    assert len(results["cases"]) >= 100


@pytest.mark.parametrize("defect", sorted(EXTRA_ARGS))
def test_the_correct_backend_passes_with_each_defects_card(tmp_path: Path, defect: str
                                                           ) -> None:
    """A card made for one defect (bigger buffers) does not fail the correct backend."""
    clauses = next(d.clauses for d in CATALOGUE if d.name == defect)
    rc, results = certify(tmp_path, "--clauses", ",".join(clauses), *EXTRA_ARGS[defect])
    verdicts = {c["nodeid"]: c["verdict"] for c in results["cases"]}
    assert rc == 0 and "PASS" in verdicts.values(), verdicts
    assert not set(verdicts.values()) & (KILLING | {"NONSTRICT", "INCONCLUSIVE"}), verdicts


def _verdicts(results: dict[str, Any]) -> str:
    """What the run gave instead (a missed defect's diagnosis in the CI log): verdict
    counts and the first message of a verdict that is neither PASS nor N/A."""
    counts: dict[str, int] = {}
    for c in results["cases"]:
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
    odd = next((c for c in results["cases"] if c["verdict"] not in ("PASS", "N/A")), None)
    return (", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            + (f"; {odd['nodeid']}: {odd['verdict']} {odd['message'][:300]}" if odd else ""))


def _run_defect(base: Path, defect: Defect
                ) -> tuple[Defect, list[dict[str, Any]], int, str]:
    clauses = [*defect.clauses, *([defect.ambiguity] if defect.ambiguity else [])]
    rc, results = certify(base / defect.name, "--defect", defect.name,
                          "--clauses", ",".join(clauses), *EXTRA_ARGS.get(defect.name, []))
    if defect.ambiguity:
        # allowed behaviour: reported (INFO, observed) on its AMBIG point, failing nothing
        kills = [c for c in results["cases"] if c["verdict"] == "INFO" and c["observations"]
                 and defect.ambiguity in c["clauses"]]
        assert not killing_cases(results, defect.clauses), \
            f"{defect.name}: a behaviour the spec allows was failed"
        return defect, kills, len(results["cases"]), _verdicts(results)
    kills = killing_cases(results, defect.clauses)
    assert rc == (1 if kills else rc), f"{defect.name}: a killing verdict must exit 1"
    return defect, kills, len(results["cases"]), _verdicts(results)


def test_every_catalogue_defect_is_caught(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda d: _run_defect(tmp_path, d), CATALOGUE))
    rows, missed = [], []
    for defect, kills, ran, why in runs:
        areas = {ref.split("-")[1] for c in kills for ref in c["clauses"]
                 if ref.startswith("SND-")}
        verdicts = sorted({c["verdict"] for c in kills})
        rows.append(f"{defect.name:30} {defect.area}  "
                    + " ".join(a if a in areas else "." for a in AREAS)
                    + f"  {len(kills):3}/{ran:<3} {' '.join(verdicts)}")
        if not kills:
            missed.append(f"{defect.name} ({why})")
    with capsys.disabled():
        print("\nkill matrix: defect, its area, the areas of the cases that caught it, "
              "killing/run cases, verdicts")
        print(f"{'defect':30} ar  {' '.join(AREAS)}")
        print("\n".join(rows))
        print(f"caught {len(runs) - len(missed)} of {len(runs)} defects")
    assert not missed, f"defects no case caught: {missed}"
