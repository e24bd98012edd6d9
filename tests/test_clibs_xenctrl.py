"""An unmodified C program linked against Debian's libxenctrl runs on the sim through
``run_as_domain``: the simulated calls answer from the sim, the others fail with ENOSYS,
nothing crashes (also with LD_BIND_NOW=1). Plus the behaviour of ``run_as_domain`` itself:
prefixed streaming, exit status, timeout and process-group kill, ``sim exec``."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from requires import need_xen_c_toolchain

from harness.xen.sim import simexec
from harness.xen.sim.clibs import build
from harness.xen.sim.runner import Sim, running_sim

C_DIR = Path(__file__).parent / "c"


def need_toolchain() -> None:
    need_xen_c_toolchain()


def compile_c(src: Path, out: Path, libs: list[str]) -> Path:
    """Compile ``src`` against Debian's headers and libraries, the ordinary way."""
    need_toolchain()
    proc = subprocess.run(["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(out),
                           str(src), *libs], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def xc_enosys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(C_DIR / "xc_enosys.c", tmp_path_factory.mktemp("c") / "xc_enosys",
                     ["-lxenctrl"])


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.mark.parametrize("bind_now", [False, True], ids=["lazy", "LD_BIND_NOW"])
def test_unsimulated_xenctrl_calls_answer_enosys(sim: Sim, xc_enosys: Path,
                                                 bind_now: bool) -> None:
    out = Lines()
    env = {"LD_BIND_NOW": "1"} if bind_now else {}
    status = simexec.run_as_domain([str(xc_enosys), "2"], runner=sim, domid=0, env=env,
                                   output=out, timeout=30)
    assert status == 0, out.text()
    assert "[dom0] PASSED: 0 failure(s)" in out.text()
    assert "FAIL " not in out.text()


def test_getinfolist_sees_created_domains(sim: Sim, xc_enosys: Path) -> None:
    sim.create_domain(7, "seven")
    out = Lines()
    assert simexec.run_as_domain([str(xc_enosys), "3"], runner=sim, output=out) == 0, \
        out.text()


def test_xenctrl_control_ops_are_for_domain_0(sim: Sim, xc_enosys: Path) -> None:
    out = Lines()
    status = simexec.run_as_domain([str(xc_enosys), "2"], runner=sim, domid=1, output=out)
    assert status == 1
    assert "FAIL xc_domain_getinfolist" in out.text()


def test_run_as_domain_streams_with_prefix_and_returns_status(sim: Sim) -> None:
    need_toolchain()
    out = Lines()
    status = simexec.run_as_domain(
        ["sh", "-c", 'echo "out $XEN_SIM_DOMID $XENSTORED_PATH"; echo err >&2; exit 3'],
        runner=sim, domid=1, name="guest", output=out)
    assert status == 3
    assert ("stdout", f"[guest] out 1 {sim.xenstored_path(1)}") in out.lines
    assert ("stderr", "[guest] err") in out.lines


def test_run_as_domain_creates_the_domain(sim: Sim) -> None:
    need_toolchain()
    assert simexec.run_as_domain(["true"], runner=sim, domid=5, name="five",
                                 output=Lines()) == 0
    assert any(d.domid == 5 and d.name == "five" for d in sim.control.list_domains())


def test_ld_library_path_points_at_the_replacements(sim: Sim) -> None:
    need_toolchain()
    out = Lines()
    simexec.run_as_domain(["sh", "-c", "echo $LD_LIBRARY_PATH"], runner=sim, output=out,
                          prefix="")
    first = out.lines[0][1].split(os.pathsep)[0]
    assert build._complete(Path(first))


def test_timeout_kills_the_process_group(sim: Sim, tmp_path: Path) -> None:
    need_toolchain()
    pidfile = tmp_path / "child.pid"
    out = Lines()
    t0 = time.monotonic()
    status = simexec.run_as_domain(
        ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], runner=sim, timeout=0.5,
        output=out)
    assert status == simexec.TIMEOUT_STATUS
    assert time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the program's child survived the timeout")
    assert any("timeout" in line for _, line in out.lines)


def test_exec_command_starts_a_sim_when_none_runs(monkeypatch: pytest.MonkeyPatch,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    need_toolchain()
    monkeypatch.delenv("XEN_SIM_DIR", raising=False)
    args = argparse.Namespace(command=["--", "sh", "-c", "echo hello $XEN_SIM_DOMID"],
                              domid=2, name="two", dir=None, timeout=30)
    assert simexec.exec_command(args) == 0
    assert "[two] hello 2" in capfd.readouterr().out


def test_exec_command_uses_a_running_sim(capfd: pytest.CaptureFixture[str]) -> None:
    need_toolchain()
    with running_sim() as sim:
        args = argparse.Namespace(command=["sh", "-c", "echo $XEN_SIM_DIR"], domid=0,
                                  name=None, dir=sim.dir, timeout=30)
        assert simexec.exec_command(args) == 0
        assert f"[dom0] {sim.dir}" in capfd.readouterr().out


def test_exec_command_registers_in_a_parser() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    from harness.cli import sim_cmd

    sim_cmd._register_exec(sub)
    args = parser.parse_args(["exec", "--domid", "3", "--", "prog", "-x"])
    assert args.domid == 3 and args.command == ["--", "prog", "-x"]
    assert args.handler is sim_cmd._exec


def test_no_command_is_a_usage_error() -> None:
    # the simulator raises its own error (it must not import the CLI); sim_cmd translates
    with pytest.raises(simexec.SimUsageError):
        simexec.exec_command(argparse.Namespace(command=["--"], domid=0, name=None))


def test_missing_program_is_a_usage_error(sim: Sim) -> None:
    need_toolchain()
    missing = shutil.which("definitely-not-a-program-xyz") or "/nonexistent/prog"
    with pytest.raises(simexec.SimUsageError):
        simexec.exec_command(argparse.Namespace(command=[missing], domid=0, name=None,
                                                dir=sim.dir, timeout=5))
