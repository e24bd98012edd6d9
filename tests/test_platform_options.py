"""``--platform`` of fuzz and shell: sim (the default), real (this host's Xen, from dom0) and
xen-qemu (the same command run in dom0 of real Xen under QEMU). Here the choices' checks and
what dom0 is asked to run; tests/test_xen_qemu.py runs them on real Xen."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import build_parser, main
from harness.fuzz.reproducer import world_from_cli
from harness.world.spec import WorldSpecError
from harness.xenqemu.dom0_harness import harness_argv


def _no_xen() -> int:
    raise ConnectionError("no xenstored socket")


@pytest.mark.parametrize("argv", [["fuzz", "--budget", "5s"], ["shell", "-c", "1"]])
def test_real_without_xen_or_outside_dom0_is_a_usage_error(
        argv: list[str], monkeypatch, capsys, tmp_path: Path) -> None:
    import harness.xen.real.platform as real

    out = tmp_path / "out"
    monkeypatch.setattr(real, "own_domid", _no_xen)
    assert main([*argv, "--platform", "real", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--platform real: no Xen here (no xenstored socket)" in err, err
    monkeypatch.setattr(real, "own_domid", lambda: 5)
    assert main([*argv, "--platform", "real", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "runs in dom0 (this is domain 5)" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(("argv", "says"), [
    (["shell", "--platform", "xen-qemu"], "give it -c CODE or a SCRIPT"),
    (["fuzz", "--platform", "xen-qemu", "--catalogue"], "on the simulated Xen"),
    (["fuzz", "--platform", "xen-qemu", "--audio", "pulse"], "the host's sound is set up"),
    (["fuzz", "--platform", "xen-qemu", "--backend", "attach"], "a backend it can restart"),
    (["shell", "--platform", "xen-qemu", "-c", "1", "--out", "/tmp/a,b"],
     "QEMU cannot share a path with a comma"),
])
def test_xen_qemu_mistakes_before_any_boot(argv: list[str], says: str, monkeypatch,
                                           capsys) -> None:
    import harness.xenqemu.dom0_harness as dom0

    monkeypatch.setattr(dom0, "run_in_dom0", _must_not_boot)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err


def _must_not_boot(*args: object, **kw: object) -> tuple[int, str]:
    raise AssertionError("booted")


@pytest.mark.parametrize("argv", [
    ["fuzz", "--budget", "90s", "--defect", "ignore-stop", "--defect", "wrong-position",
     "--stop-at-first", "-n", "2", "--backend-env", "A=B", "--rules", "core,events",
     "--db", "none", "--seed", "7", "--vsnd", "[['card, sample-rates=48000', 'pcm, name=p',"
     " 'stream, type=p']]"],
    ["shell", "--backend", "exec:snd_be -v *:Debug", "--audio", "pulse", "--plain"],
])
def test_dom0_is_asked_for_the_same_command_on_real(argv: list[str]) -> None:
    """What the host was told, dom0 is told (by value, not by spelling), with only the
    platform and the output directory replaced."""
    parser = build_parser()
    ns = parser.parse_args([*argv, "--platform", "xen-qemu"])
    command = harness_argv(ns.parser, ns, [], platform="real", out="/o")
    assert command[1:4] == ["-m", "harness", argv[0]]
    again = parser.parse_args(command[3:])
    assert again.platform == "real" and again.out == "/o"
    for key, value in vars(ns).items():
        if key not in ("platform", "out", "parser", "handler"):
            assert getattr(again, key) == value, key


def test_shell_and_fuzz_on_xen_qemu_run_in_dom0_and_print_what_it_printed(
        monkeypatch, capsys, tmp_path: Path) -> None:
    import harness.xenqemu.dom0_harness as dom0

    asked: list[tuple[str, list[str], Path, float]] = []

    def run_in_dom0(name: str, argv: list[str], out: Path, *, cwd: Path,
                    budget: float = 0.0) -> tuple[int, str]:
        asked.append((name, argv, out, budget))
        return 1, f"{name} said this\n"

    monkeypatch.setattr(dom0, "run_in_dom0", run_in_dom0)
    out = tmp_path / "sh"
    assert main(["shell", "--platform", "xen-qemu", "--out", str(out), "-c",
                 "print(sr)", "a1"]) == 1
    assert capsys.readouterr().out == "shell said this\n"
    name, argv, where, _ = asked.pop()
    assert (name, where) == ("shell", out)
    # (the backend's start under emulation: longer than libxl's 10 s)
    assert argv[3:] == ["shell", "--out", str(out), "--platform", "real", "--start-timeout",
                        "120.0", "-c", "print(sr)", "a1"]
    script = tmp_path / "s.py"
    script.write_text("print(card)\n")
    assert main(["shell", "--platform", "xen-qemu", "--out", str(out), str(script)]) == 1
    argv = asked.pop()[1]
    assert argv[-1] == str(out / "shell-code.py")  # where dom0 sees it, whatever the cwd
    assert (out / "shell-code.py").read_text() == "print(card)\n"

    out = tmp_path / "fz"
    assert main(["fuzz", "--platform", "xen-qemu", "--out", str(out), "--budget", "30s",
                 "--db", "none"]) == 1
    name, argv, where, budget = asked.pop()
    assert (name, where) == ("fuzz", out)
    again = build_parser().parse_args(argv[3:])
    # slower answers under emulation: a longer wait before a request is probed
    assert again.platform == "real" and again.request_timeout == 10.0
    assert again.start_timeout == 120.0
    assert again.budget == 30.0 and budget > 30 * 20


def test_a_fuzz_world_on_real_xen_round_trips() -> None:
    spec = world_from_cli(["--backend", "reference", "--platform", "real",
                           "--frontend-domid", "0", "--start-timeout", "120"])
    assert (spec.platform, spec.frontend_domid, spec.backend_domid) == ("real", 0, 0)
    assert (spec.init_timeout, spec.connect_timeout) == (120.0, 120.0)
    default = world_from_cli([])
    assert default.platform == "sim" and default.init_timeout == 10.0
    with pytest.raises(SystemExit):  # argparse's own error, naming the value
        world_from_cli(["--start-timeout", "0.5"])
    with pytest.raises(WorldSpecError, match="--audio pulse: the host's sound is set up"):
        world_from_cli(["--platform", "real", "--audio", "pulse"])
    # files need no sound device: ALSA's file plugin for a C backend on a real host too
    assert world_from_cli(["--platform", "real", "--backend", "exec:be", "--audio",
                           "alsa-file"]).audio == "alsa-file"
