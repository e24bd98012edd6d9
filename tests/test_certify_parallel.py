"""``certify -n 2``: two workers, each with its own world (simulated Xen, backend,
device), give the same cases and verdicts as one process, in one results.json."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from requires import unavailable

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _certify(out: Path, *args: str) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-m", "harness", "certify", "-k", "test_f_ or "
                        "test_h_", "--report-dir", str(out), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    return {c["nodeid"]: c["verdict"] for c in results["cases"]}


def test_two_workers_give_the_same_verdicts_as_one(tmp_path: Path) -> None:
    if importlib.util.find_spec("xdist") is None:
        unavailable("pytest-xdist is not installed (pip install -e '.[test]')")
    one = _certify(tmp_path / "one")
    two = _certify(tmp_path / "two", "-n", "2")
    assert len(one) >= 10 and one == two
    assert sorted(p.name for p in (tmp_path / "two").glob("backend-gw*")) == \
        ["backend-gw0", "backend-gw1"]  # a world per worker
