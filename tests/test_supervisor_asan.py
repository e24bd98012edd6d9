"""A C backend built with AddressSanitizer (tests/c/asan_backend.c: maps the request ring,
and on the first request reads past the end of a heap copy of it), run by the supervisor
through ``exec:`` on the simulated Xen, yields a CRASH carrying the AddressSanitizer
report; the supervisor restarts it and the run goes on."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from requires import unavailable

from harness.frontend.errors import Disconnected, RequestTimeout
from harness.runner.supervisor import SupervisorConfig, running_supervisor
from harness.runner.verdicts import Outcome
from harness.world.backend_spec import parse_backend_spec
from harness.world.spec import WorldSpec
from harness.xen.sim.clibs import build

C_DIR = Path(__file__).parent / "c"
LIBS = ["-lxenstore", "-lxenevtchn", "-lxengnttab"]


@pytest.fixture(scope="module")
def asan_backend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [s for s in ("libxenstore.so.4", *build.SONAMES)
               if build.debian_library(s) is None]
    if not build.have_gcc():
        missing.append("gcc")
    if missing:
        unavailable(f"missing {', '.join(missing)}: apt-get install libxen-dev gcc")
    out = tmp_path_factory.mktemp("asan") / "asan_backend"
    proc = subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-fsanitize=address",
         "-fno-omit-frame-pointer", "-o", str(out), str(C_DIR / "asan_backend.c"), *LIBS],
        capture_output=True, text=True)
    if proc.returncode != 0 and "asan" in proc.stderr.lower():
        unavailable(f"gcc -fsanitize=address does not link (libasan?): {proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    return out


def test_asan_report_is_a_crash_with_the_report(tmp_path: Path, asan_backend: Path) -> None:
    spec = parse_backend_spec("exec:" + shlex.join([str(asan_backend),
                                                    "/local/domain/{domid}/backend/vsnd"]))
    world = WorldSpec(backend=spec, request_timeout_ms=1000, kill_grace=2.0,
                      # LeakSanitizer needs ptrace, which some CI containers forbid
                      backend_env={"ASAN_OPTIONS": "detect_leaks=0"})
    cfg = SupervisorConfig(world=world, probe_timeout=0.5, hang_timeout=1.0)
    with running_supervisor(tmp_path, cfg) as sup:
        with sup.case("suite::test_open") as case:
            # the backend died on the request: released at its death or at the timeout,
            # whichever the supervisor sees first (ASan takes a while to write its report)
            with pytest.raises((RequestTimeout, Disconnected)):
                case.dev.stream("0/0").open(48000, "s16_le", 2, 65536, 4096)
        v = case.verdict
        assert v is not None and v.outcome is Outcome.CRASH, v
        assert v.report is not None
        assert "ERROR: AddressSanitizer: heap-buffer-overflow" in v.report
        assert "READ of size 1" in v.report and "asan_backend.c" in v.report
        assert "SUMMARY: AddressSanitizer: heap-buffer-overflow" in v.report
        assert v.exit_status == 1 and v.signal is None  # ASan's default exitcode
        assert "AddressSanitizer" in v.detail and v.needs_restart
        assert "asan_backend: request seen" in sup.case_log("suite::test_open")

        # restarted: a fresh process that connects again; the case below only checks the
        # connection (any request would trip the bug again)
        with sup.case("suite::test_connected") as case:
            assert all(s.connected for s in case.dev.streams)
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS, \
            case.verdict.describe()
        assert sup.starts == 2
