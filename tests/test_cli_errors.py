"""User mistakes on the command line: a clear message naming what was wrong, status 2,
never a traceback, nothing left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli import main


@pytest.mark.parametrize(("argv", "says"), [
    (["sim", "run", "--dir", "/proc/no-such-dir"], "/proc/no-such-dir"),
    (["demo", "--out", "/proc/no-such-dir"], "/proc/no-such-dir"),
    (["demo", "--seconds", "0"], "out of range (0.5 .. 600 s)"),
    (["demo", "--seconds", "inf"], "out of range"),
    (["demo", "--seconds", "1e12"], "out of range"),
    (["demo", "--seconds", "0.05"], "out of range"),
    (["bench", "sim", "--seconds", "-1"], "out of range"),
    (["bench", "sim", "--seconds", "inf"], "out of range"),
    (["bench", "codec", "--iterations", "100000000000"], "out of range (1 .. 1000000)"),
    (["bench", "codec", "--iterations", "1e20"], "not an integer"),
    (["sim", "exec", "--timeout", "nan", "--", "true"], "out of range"),
    (["sim", "exec", "--timeout", "-1", "--", "true"], "out of range"),
    (["sim", "exec", "--timeout", "0", "--", "true"], "out of range"),
    (["ls", ""], "no message type named ''"),
    (["defects", "--area", ""], "unknown area ''"),
    (["certify", "--case-timeout", "inf"], "finite number > 0"),
    (["sim", "exec", "--domid", "-3", "--", "true"], "out of range"),
    (["sim", "exec", "--domid", "0x7ff0", "--", "true"], "out of range"),
    (["sim", "exec", "--domid", "one", "--", "true"], "not a domain id"),
    (["sim", "exec"], "no command given"),
    (["dissect", "--as", "req", "zz"], "hex"),
    (["defects", "no-such-defect"], "unknown defect"),
    (["no-such-command"], "invalid choice"),
])
def test_mistakes_exit_2_with_a_message(argv: list[str], says: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def _run(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, timeout=60, **kw)


def test_dissect_with_stdin_closed() -> None:
    proc = _run(["dissect", "-"], stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "no hex digits" in proc.stderr, proc.stderr
    proc = subprocess.run(f"{sys.executable} -m harness dissect - <&-", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "no standard input" in proc.stderr and "Traceback" not in proc.stderr


def test_output_to_a_full_device_or_a_closed_pipe() -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "harness", "ls"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2 and "No space left" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(f"{sys.executable} -m harness ls | head -1", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("XenSndReq") and proc.stderr == "", proc.stderr


def test_ctrl_c_while_the_program_starts_is_quiet() -> None:
    """Ctrl-C while the commands' modules are imported ends with 130 and no traceback."""
    code = ("import sys; sys.argv[0] = 'sndif-harness'\n"
            "import os, signal, harness.cli\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "import time; time.sleep(5)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr


def test_ctrl_c_while_the_parser_is_built(monkeypatch, capsys) -> None:
    import harness.cli as cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["ls"]) == 130
    assert "interrupted" in capsys.readouterr().err
