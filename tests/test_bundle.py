"""``sndif-harness bundle``: a real, complete certification run packed and verified; every
kind of tampering (a changed byte, a missing file, an extra file, an unsafe member) and
every kind of incompleteness fails the verification, saying what is wrong."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.report.bundle import MANIFEST, README

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete certify run of the reference backend (the whole suite: a bundle of a
    partial run does not verify)."""
    out = tmp_path_factory.mktemp("bundle") / "run"
    r = subprocess.run([*CLI, "certify", "--report-dir", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def bundle(report: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "cert.tar.gz"
    assert main(["bundle", str(report), "-o", str(out)]) == 0
    return out


def _verify(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    rc = main(["bundle", "verify", str(path)])
    out, err = capsys.readouterr()
    return rc, out + err


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            out[m.name] = fh.read() if fh is not None else b""
        return out


def _repack(src: Path, dst: Path, edit: Callable[[dict[str, bytes]], None],
            extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    files = _members(src)
    edit(files)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tar)
    return dst


def test_a_fresh_bundle_verifies(bundle: Path, report: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verify(capsys, bundle)
    assert rc == 0, out
    assert "verified" in out
    files = _members(bundle)
    assert all(n.startswith("cert/") for n in files)
    have = {n.removeprefix("cert/") for n in files}
    on_disk = {p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file()}
    assert on_disk <= have  # every file of the report directory
    assert {"results.json", "junit.xml", "report.html", "report.md",
            "backend/backend.log", README, MANIFEST} <= have
    assert any(n.startswith("backend/cases/") for n in have)  # the traces
    # the manifest is sha256sum's format, and right
    for line in files[f"cert/{MANIFEST}"].decode().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(files[f"cert/{name}"]).hexdigest() == digest
    readme = files[f"cert/{README}"].decode()
    doc = json.loads(files["cert/results.json"])
    assert " ".join(doc["run"]["command_line"][1:]) in readme  # how to reproduce
    assert "sndif-harness bundle verify cert.tar.gz" in readme


def test_the_same_report_gives_the_same_bytes(bundle: Path, report: Path,
                                              tmp_path: Path) -> None:
    again = tmp_path / "cert.tar.gz"
    assert main(["bundle", str(report), "-o", str(again)]) == 0
    assert again.read_bytes() == bundle.read_bytes()


def test_a_changed_byte_fails(bundle: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    def flip(files: dict[str, bytes]) -> None:
        data = bytearray(files["cert/junit.xml"])
        data[len(data) // 2] ^= 0x01
        files["cert/junit.xml"] = bytes(data)

    rc, out = _verify(capsys, _repack(bundle, tmp_path / "t.tar.gz", flip))
    assert rc == 1, out
    assert "hash mismatch: junit.xml" in out and "does NOT verify (1 problem(s))" in out


def test_a_missing_file_fails(bundle: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verify(capsys, _repack(bundle, tmp_path / "t.tar.gz",
                                      lambda f: f.pop("cert/report.md")))
    assert rc == 1, out
    assert "missing file: report.md" in out


def test_an_extra_file_fails(bundle: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    def add(files: dict[str, bytes]) -> None:
        files["cert/backend/smuggled.txt"] = b"not certified\n"

    rc, out = _verify(capsys, _repack(bundle, tmp_path / "t.tar.gz", add))
    assert rc == 1, out
    assert "extra file: backend/smuggled.txt" in out


def test_a_missing_manifest_fails(bundle: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verify(capsys, _repack(bundle, tmp_path / "t.tar.gz",
                                      lambda f: f.pop(f"cert/{MANIFEST}")))
    assert rc == 1 and f"no {MANIFEST}" in out


@pytest.mark.parametrize("name", ["cert/../../evil.sh", "/etc/evil.sh", "../evil.sh"])
def test_an_unsafe_member_fails(bundle: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str], name: str) -> None:
    rc, out = _verify(capsys, _repack(bundle, tmp_path / "t.tar.gz",
                                      lambda f: f.update({name: b"#!/bin/sh\n"})))
    assert rc == 1, out
    assert f"unsafe member {name!r}" in out
    assert not (tmp_path / "evil.sh").exists()  # nothing was extracted anywhere


def test_a_link_member_fails(bundle: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    def link(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("cert/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)

    rc, out = _verify(capsys, _repack(bundle, tmp_path / "t.tar.gz", lambda f: None, link))
    assert rc == 1 and "unsafe member 'cert/passwd': not a regular file" in out


def _bundle_of(doc: dict[str, Any], tmp_path: Path) -> Path:
    d = tmp_path / "report"
    d.mkdir()
    (d / "results.json").write_text(json.dumps(doc))
    out = tmp_path / "c.tar.gz"
    assert main(["bundle", str(d), "-o", str(out)]) == 0
    return out


@pytest.fixture
def doc(report: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((report / "results.json").read_text())
    return copy.deepcopy(loaded)


def test_its_own_results_alone_verify(doc: dict[str, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _verify(capsys, _bundle_of(doc, tmp_path))  # the control of the next tests
    assert rc == 0, out


def test_an_incomplete_run_fails(doc: dict[str, Any], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    doc["run"].update(complete=False, state="running")
    rc, out = _verify(capsys, _bundle_of(doc, tmp_path))
    assert rc == 1 and "the run is marked incomplete (state running" in out


def test_a_must_clause_without_verdict_fails(doc: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    judged = next(c for c in doc["clauses"]
                  if c["level"] == "MUST" and c["judged_on_backend"] and not c["untestable"])
    judged["verdict"] = "UNTESTED"
    rc, out = _verify(capsys, _bundle_of(doc, tmp_path))
    assert rc == 1, out
    assert "1 MUST clause(s) without a verdict and not listed untestable: " \
           f"{judged['id']}" in out


def test_a_skip_without_reason_fails(doc: dict[str, Any], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    case = doc["cases"][0]
    case.update(verdict="N/A", message="")
    rc, out = _verify(capsys, _bundle_of(doc, tmp_path))
    assert rc == 1 and f"case {case['nodeid']} was skipped (N/A) without a reason" in out


def test_a_profile_outside_the_report_is_packed(doc: dict[str, Any], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "my-backend.toml"
    profile.write_text("[features]\ncapture = true\n")
    doc["run"]["profile"] = str(profile)
    bundle = _bundle_of(doc, tmp_path)
    assert _members(bundle)["c/profile/my-backend.toml"] == profile.read_bytes()
    rc, out = _verify(capsys, bundle)
    assert rc == 0, out


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(tmp_path / "none.tar.gz")]) == 2
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    assert main(["bundle", "verify", str(tmp_path / "junk.tar.gz")]) == 2
    assert main(["bundle", str(tmp_path), "-o", str(tmp_path / "x.tar.gz")]) == 2
    assert main(["bundle", "verify"]) == 2
    err = capsys.readouterr().err
    assert "none.tar.gz: no such file" in err
    assert "junk.tar.gz: not a gzip-compressed tar archive" in err
    assert "no results.json (not a certify report directory)" in err
    assert "give the bundle to verify" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 4
