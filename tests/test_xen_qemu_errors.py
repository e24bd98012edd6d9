"""The real-Xen tier's commands fail in one line on stderr, naming the stage, with the
status their documentation gives: 3 when the host lacks a tool (every command); for a
stage that failed, 1 from ``xen-qemu prepare/run`` (their 1 is "a stage failed") and 3
from ``certify``, ``certify-frontend``, ``fuzz`` and ``shell`` (whose 1 is a verdict, a
finding or the code's). No boot needed."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness.xenqemu.prepare as prep
from harness.cli import main
from harness.xenqemu import XenQemuError

COMMANDS = {
    "prepare": (["xen-qemu", "prepare"], 1),
    "run": (["xen-qemu", "run", "--backend", "reference"], 1),
    "certify": (["certify", "--platform", "xen-qemu"], 3),
    "certify-frontend": (["certify-frontend", "--frontend", "linux"], 3),
    "fuzz": (["fuzz", "--platform", "xen-qemu"], 3),
    "shell": (["shell", "--platform", "xen-qemu", "-c", "print(card)"], 3),
}


def _argv(name: str, tmp: Path) -> list[str]:
    argv, _ = COMMANDS[name]
    out = "--out" if argv[0] in ("fuzz", "shell") or argv[:2] == ["xen-qemu", "run"] else \
        "--report-dir" if argv[0].startswith("certify") else None
    return [*argv, *([out, str(tmp / "out")] if out else [])]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_missing_host_tool_is_status_3_in_one_line(name: str, tmp_path: Path, capsys,
                                                     monkeypatch) -> None:
    monkeypatch.setattr(prep, "missing_host_tools", lambda: ["qemu-system-x86"])
    assert main(_argv(name, tmp_path)) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "prepare/host-tools" in err and "apt-get install qemu-system-x86" in err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_failed_stage_is_named_with_the_commands_status(name: str, tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    def broken(*_a: object, **_k: object) -> None:
        raise XenQemuError("prepare/download", "apt-get download failed: no network")

    monkeypatch.setattr(prep, "missing_host_tools", lambda: [])
    monkeypatch.setattr(prep, "resolve_versions", broken)
    assert main(_argv(name, tmp_path)) == COMMANDS[name][1]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "stage prepare/download: apt-get download failed" in err
