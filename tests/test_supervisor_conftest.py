"""The root conftest: its options parse (bad values are usage errors naming the bad part),
and its fixtures turn a backend CRASH into a clear test failure carrying the verdict while
the run goes on against the restarted backend."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parent.parent / "conftest.py"
TIMEOUT = 120


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    return pytester


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "bogus"], "--backend 'bogus': unknown kind 'bogus'"),
    (["--backend", "exec:"], "exec needs a command"),
    (["--backend", "exec:'./be"], "does not parse"),
    (["--backend", "attach", "--defect", "hang-on-hw-query"],
     "defects apply only to --backend reference"),
    (["--defect", "no-such-defect"], "no-such-defect"),
    (["--restart-policy", "sometimes"], "invalid choice: 'sometimes'"),
    (["--case-timeout", "0"], "--case-timeout must be > 0"),
    (["--platform", "real", "--backend-domid", "3"], "a backend in another domain must be "
                                                      "running already"),
    (["--platform", "real"], "--platform real: no Xen here"),  # (this host has none)
    (["--audio", "alsa-file"], "the reference backend plays to WAV files"),
    (["--unique-id", "{sink}"], "unknown field {sink}"),
    (["--backend-env", "NOEQUALS"], "expected NAME=VALUE"),
    (["--config", "/nonexistent.toml"], "--config /nonexistent.toml: no such file"),
    (["--vsnd", "[['card, sample-rates=x']]"], "--vsnd"),
    (["--profile", "/nonexistent.toml"], "--profile /nonexistent.toml"),
    (["--pacing-band", "2"], "--pacing-band '2': expected LOW:HIGH"),
    (["--pacing-band", "1.2:2"], "need 0 < LOW < 1 < HIGH"),
    (["--pacing-min-intervals", "3"], "at least 10 intervals"),
])
def test_bad_options_are_usage_errors(inner: pytest.Pytester, args: list[str],
                                      message: str) -> None:
    inner.makepyfile("def test_nothing():\n    pass\n")
    result = inner.runpytest_subprocess(*args, timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_options_parse_into_the_supervisor_config(inner: pytest.Pytester) -> None:
    inner.makepyfile("""
        import conftest
        import pytest

        @pytest.mark.world_options
        def test_config(request):
            c = conftest.supervisor_config(request.config)
            w = c.world
            assert w.backend.kind == "exec" and w.backend.argv == ("./be", "-v", "x y")
            assert w.backend_domid == 2 and c.restart_policy == "every-case"
            assert w.request_timeout_ms == 1500 and c.hang_timeout == 1.5
            assert w.audio_mode == "pulse" and dict(w.backend_env) == {"A": "1=2"}
            assert w.unique_id == "pulse<{device}>"
            assert [s.type for p in w.card.pcms for s in p.streams] == ["p"]
        """)
    result = inner.runpytest_subprocess(
        "--backend", "exec:./be -v 'x y'", "--backend-domid", "2",
        "--restart-policy", "every-case", "--case-timeout", "1.5", "--audio", "pulse",
        "--backend-env", "A=1=2", "--unique-id", "pulse<{device}>",
        "--vsnd", "[['card, sample-rates=48000', 'pcm, name=p', 'stream, type=p']]",
        timeout=TIMEOUT)
    result.assert_outcomes(passed=1)


def test_fixtures_report_a_crash_and_the_run_goes_on(inner: pytest.Pytester,
                                                     tmp_path: Path) -> None:
    inner.makepyfile(test_mini="""
        def test_a_crash(backend_case):
            backend_case.dev.stream(0).trigger("start")  # no OPEN: the defect aborts

        def test_b_after(backend_case):
            pb = backend_case.dev.stream(0)
            assert pb.open(48000, "s16_le", 2, 65536, 4096).ok
            assert pb.close().ok

        def test_c_own_failure(backend_case):
            assert 1 + 1 == 3
        """)
    out = tmp_path / "run"
    result = inner.runpytest_subprocess(
        "--defect", "abort-on-trigger-before-open", "--case-timeout", "1",
        "--backend-out", str(out), "-p", "no:cacheprovider", timeout=TIMEOUT)
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    assert "BackendVerdictError: CRASH: backend killed by SIGABRT" in text
    assert "signal: SIGABRT" in text and "TRIGGER without OPEN: aborting" in text
    assert "assert (1 + 1) == 3" in text  # an ordinary failure stays ordinary
    log = (out / "backend.log").read_text()
    for name in ("test_a_crash", "test_b_after", "test_c_own_failure"):
        assert f"==== case test_mini.py::{name} ====" in log
    assert log.count("==== start #") == 2
    verdicts = (out / "verdicts.jsonl").read_text()
    assert '"outcome":"CRASH"' in verdicts.replace(" ", "")


@pytest.mark.parametrize("args", [["--backend", "exec:/bin/false"],
                                  ["--defect", "hang-on-hw-query"],
                                  ["--restart-policy=every-case"]])
def test_backend_options_for_tests_without_a_backend_are_usage_errors(
        inner: pytest.Pytester, args: list[str]) -> None:
    """An option that chooses the backend, given to tests that use none, would be silently
    ignored (and the run would pass against nothing): a usage error instead."""
    inner.makepyfile("def test_nothing():\n    pass\n")
    result = inner.runpytest_subprocess(*args, timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    flag = args[0].split("=")[0]
    result.stderr.fnmatch_lines([f"*{flag}: none of the 1 selected test(s) runs against a "
                                 "backend*"])


def test_backend_options_reach_tests_that_read_them(inner: pytest.Pytester) -> None:
    """A test that uses the backend (here: marked as reading the world options itself, as
    fuzz reproducers do) takes the option: no usage error."""
    inner.makepyfile("import pytest\n\n@pytest.mark.world_options\n"
                     "def test_reads(request):\n"
                     "    assert request.config.getoption('defect') == ['hang-on-hw-query']\n")
    result = inner.runpytest_subprocess("--defect", "hang-on-hw-query", "-p",
                                        "no:cacheprovider", timeout=TIMEOUT)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
