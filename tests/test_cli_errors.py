"""User mistakes on the command line: a clear message naming what was wrong, status 2,
never a traceback, nothing left behind."""

from __future__ import annotations

import pytest

from harness.cli import main


@pytest.mark.parametrize(("argv", "says"), [
    (["sim", "run", "--dir", "/proc/no-such-dir"], "/proc/no-such-dir"),
    (["demo", "--out", "/proc/no-such-dir"], "/proc/no-such-dir"),
    (["demo", "--seconds", "0"], "must be positive"),
    (["bench", "sim", "--seconds", "-1"], "must be positive"),
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
