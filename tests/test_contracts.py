"""The checked contracts of .ci/test fail when broken: an import that crosses the sealed
seam (or a layer) and a type error in a strictly typed module, each made in a temporary
copy of the tree. (.ci/test runs the same two checks on the real tree.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in the venv (pip install -e '.[test]')")
    return str(path)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for part in ("harness", "protocol_models"):
        shutil.copytree(ROOT / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_import_contracts_hold_and_catch_a_frontend_importing_the_simulator(tree: Path
                                                                            ) -> None:
    ok = _run([_tool("lint-imports"), "--no-cache"], tree)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _append(tree / "harness/frontend/driver.py", "\nimport harness.xen.sim.runner  # noqa\n")
    bad = _run([_tool("lint-imports"), "--no-cache"], tree)
    assert bad.returncode != 0
    assert "harness.frontend.driver -> harness.xen.sim.runner" in bad.stdout


def test_import_contracts_catch_the_models_importing_the_harness(tree: Path) -> None:
    _append(tree / "protocol_models/constants.py", "\nimport harness.trace  # noqa\n")
    bad = _run([_tool("lint-imports"), "--no-cache"], tree)
    assert bad.returncode != 0 and "protocol_models.constants -> harness.trace" in bad.stdout


def test_mypy_strict_catches_an_untyped_function_in_the_seam(tree: Path) -> None:
    target = "harness/xen/api.py"
    ok = _run([_tool("mypy"), "--no-incremental", target], tree)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _append(tree / target, "\n\ndef untyped(x):\n    return x\n")
    bad = _run([_tool("mypy"), "--no-incremental", target], tree)
    assert bad.returncode != 0 and "no-untyped-def" in bad.stdout, bad.stdout
