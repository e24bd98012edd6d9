"""``sndif-harness xen-qemu batch``: harness commands planned before the one boot (every
one checked: nothing boots when one cannot run), run in dom0 in turn (a share and a
stage each), then finished in order with their own outcome. The boot itself is faked
here; tests/test_xen_qemu.py runs a batch on real Xen."""

from __future__ import annotations

from pathlib import Path

import pytest

import harness.xenqemu.batch as batch
import harness.xenqemu.prepare as prep
from harness.cli import main
from harness.xenqemu.dom0_harness import BATCH


@pytest.fixture
def boots(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list, list[Path]]]:
    """Each boot the batch asks for: its steps and shares; what dom0 said is faked."""
    calls: list[tuple[list, list[Path]]] = []

    def boot_steps(prepared, out, steps, shares, say):  # type: ignore[no-untyped-def]
        calls.append((steps, shares))
        for step, _budget in steps:  # what dom0 writes: its console output at least
            (Path(step.out_in_chroot) / f"{step.name}.log").write_text("...")
        return [(1, "campaign: a finding\n"), (0, "dom0 says 4\n")][:len(steps)]

    monkeypatch.setattr(batch, "boot_steps", boot_steps)
    monkeypatch.setattr(prep, "prepare", lambda **_kw: object())
    return calls


def test_commands_are_planned_booted_once_and_finished_in_order(
        boots, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    fuzz, shell = tmp_path / "fuzz", tmp_path / "shell"
    rc = main(["xen-qemu", "batch", "--out", str(tmp_path / "boot"),
               f"fuzz --budget 30s --out {fuzz}", f"shell --out {shell} -c 'print(1)'"])
    out = capsys.readouterr().out
    assert rc == 1  # the highest: the campaign's finding
    ((steps, shares),) = boots
    assert [s.stage for s, _ in steps] == ["1-fuzz", "2-shell"]
    assert shares == [fuzz.resolve(), shell.resolve()]
    for (step, _), d in zip(steps, (fuzz, shell), strict=True):  # as each runs alone
        argv = step.argv
        assert argv[3] == step.name and argv[argv.index("--platform") + 1] == "real"
        assert argv[argv.index("--out") + 1] == str(d.resolve()), argv
    # each finished with its own outcome, in order
    assert out.index("== sndif-harness fuzz") < out.index("campaign: a finding") \
        < out.index("== exit 1") < out.index("== sndif-harness shell") \
        < out.index("dom0 says 4") < out.index("== exit 0"), out
    script = (tmp_path / "boot" / "dom0-run.sh").read_text()
    for n, d in ((1, fuzz), (2, shell)):
        assert f"out{n} /out{n}" in script and f"mount -o bind /out{n} /host{d.resolve()}" \
            in script, script
        assert f"mark stage {n}-{('fuzz', 'shell')[n - 1]}-done rc=$rc" in script
    assert BATCH.outcome is None and not BATCH.active


def test_a_certification_is_finished_into_its_own_report_dir(
        boots, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """certify refuses a report dir with files in it; the batch's second pass does not."""
    report = tmp_path / "r"
    rc = main(["xen-qemu", "batch", "--out", str(tmp_path / "boot"),
               f"certify -k test_a_ --report-dir {report}"])
    out = capsys.readouterr()
    assert rc == 1 and "== exit 1" in out.out, out
    assert "not an empty directory" not in out.err
    (step, _), = boots[0][0]
    assert step.name == "certify" and step.out_in_chroot == str(report.resolve())


@pytest.mark.parametrize(("commands", "why"), [
    (["run --backend snd_be"], "not one of certify, fuzz, shell"),
    (["fuzz --platform sim"], "a batch runs on --platform xen-qemu"),
    (["certify --frontend-domid 1"], "the certification in a guest boots its own"),
    (["fuzz --budget forever"], "command 1 (fuzz --budget forever --platform xen-qemu) "
                                "ended with status 2"),
    (["shell"], "ended with status 2"),  # no prompt in dom0: code or a script
    (["fuzz --out {d}/a", "fuzz --out {d}/a/b"], "each command needs an out directory"),
    (["fuzz --out {d}/boot/f"], "each command needs an out directory"),
    (["fuzz 'unclosed"], "No closing quotation"),
])
def test_a_command_that_cannot_run_in_a_batch_stops_it_before_the_boot(
        commands: list[str], why: str, boots, tmp_path: Path,
        capsys) -> None:  # type: ignore[no-untyped-def]
    rc = main(["xen-qemu", "batch", "--out", str(tmp_path / "boot"),
               *(c.format(d=tmp_path) for c in commands)])
    err = capsys.readouterr().err
    assert rc == 2 and why in err, err
    assert boots == [] and not (tmp_path / "boot" / "dom0-run.sh").exists()
    assert not BATCH.active and BATCH.outcome is None
