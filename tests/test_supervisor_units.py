"""The supervisor's pure parts: backend spec parsing, sanitizer report extraction,
verdict rendering."""

from __future__ import annotations

import pytest

from harness.runner.sanitizers import find_reports
from harness.runner.verdicts import Finding, Outcome, Verdict, signal_name
from harness.world.backend_spec import BackendSpec, BackendSpecError, parse_backend_spec


def test_parse_kinds() -> None:
    assert parse_backend_spec("reference") == BackendSpec("reference")
    assert parse_backend_spec(" Reference ", ["hang-on-hw-query"]).defects == (
        "hang-on-hw-query",)
    assert parse_backend_spec("attach") == BackendSpec("attach")
    spec = parse_backend_spec("exec:'./my be' -v --dom {domid}")
    assert spec.kind == "exec" and spec.argv == ("./my be", "-v", "--dom", "{domid}")
    assert spec.command(domid=3, frontend_domid=1, devid=0, out="o", python="py") == [
        "./my be", "-v", "--dom", "3"]
    assert str(spec) == "exec:'./my be' -v --dom '{domid}'"
    shell = parse_backend_spec("exec:sh -c 'test -e f && { exit 4; }; echo ${HOME} {out}'")
    assert shell.command(domid=0, frontend_domid=1, devid=0, out="o", python="py")[2] == \
        "test -e f && { exit 4; }; echo ${HOME} o"


def test_reference_command_carries_defects() -> None:
    argv = parse_backend_spec("reference", ["a-b", "c"]).command(
        domid=0, frontend_domid=1, devid=0, out="o", python="py")
    assert argv[:3] == ["py", "-m", "harness.backends.reference"]
    assert argv[-4:] == ["--defect", "a-b", "--defect", "c"]


@pytest.mark.parametrize(("text", "defects", "names"), [
    ("bogus", (), "unknown kind 'bogus'"),
    ("exec:", (), "exec needs a command"),
    ("exec:   ", (), "exec needs a command"),
    ("exec:'unterminated", (), "does not parse"),
    ("exec:be {domain}", (), "unknown placeholder {domain}"),
    ("attach:42", (), "takes no argument"),
    ("attach", ("hang-on-hw-query",), "defects apply only to --backend reference"),
    ("reference", ("bad name!",), "not a defect name"),
])
def test_bad_specs_name_the_bad_part(text: str, defects: tuple[str, ...], names: str) -> None:
    with pytest.raises(BackendSpecError, match=None) as info:
        parse_backend_spec(text, defects)
    assert names in str(info.value)


ASAN = """\
some output before
=================================================================
==4242==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6210 at pc 0x1 bp 0x2
READ of size 1 at 0x6210 thread T0
    #0 0x55 in main asan_backend.c:170
SUMMARY: AddressSanitizer: heap-buffer-overflow asan_backend.c:170 in main
Shadow bytes around the buggy address:
  0x0c047fff7fb0: 00 00
==4242==ABORTING
after
"""


def test_asan_report_extracted_whole() -> None:
    (r,) = find_reports(ASAN)
    assert r.tool == "AddressSanitizer" and r.complete
    assert r.summary == "heap-buffer-overflow asan_backend.c:170 in main"
    assert r.text.startswith("=====") and r.text.endswith("==4242==ABORTING")
    assert "some output" not in r.text and "after" not in r.text


def test_partial_leak_and_ubsan_reports() -> None:
    partial = "==7==ERROR: AddressSanitizer: SEGV on unknown address\n    #0 0x1 in f\n"
    (r,) = find_reports(partial)
    assert not r.complete and "SEGV" in r.headline
    lsan = ("==9==ERROR: LeakSanitizer: detected memory leaks\nDirect leak of 8 byte(s)\n"
            "SUMMARY: AddressSanitizer: 8 byte(s) leaked in 1 allocation(s).\n")
    (r,) = find_reports(lsan)
    assert r.tool == "LeakSanitizer" and r.summary == "8 byte(s) leaked in 1 allocation(s)."
    ubsan = ("be.c:12:7: runtime error: signed integer overflow: 2147483647 + 1\n"
             "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior be.c:12:7 in\n")
    (r,) = find_reports(ubsan)
    assert r.tool == "UndefinedBehaviorSanitizer" and r.complete
    assert find_reports("ERROR: nothing to see\nSUMMARY: fine\n") == []


def test_verdict_describe_and_dict() -> None:
    v = Verdict(Outcome.CRASH, "backend killed by SIGABRT", exit_status=-6,
                signal=signal_name(-6), log_excerpt="last words",
                findings=(Finding("grant-leak", "grefs [8]"),))
    text = v.describe()
    assert text.splitlines()[0] == "CRASH: backend killed by SIGABRT"
    assert "signal: SIGABRT" in text and "finding: grant-leak: grefs [8]" in text
    assert "last words" in text
    assert v.as_dict()["outcome"] == "CRASH"
    assert signal_name(1) is None and signal_name(None) is None
    assert Outcome.HANG.backend_failure and not Outcome.FAIL.backend_failure
