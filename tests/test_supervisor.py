"""Acceptance of the backend supervisor on the simulated Xen: the reference backend run as
an external program (``exec:`` with its command line, i.e. exactly like a foreign binary)
with injected defects crashes and hangs; the supervisor gives CRASH and HANG within the
configured timeouts, restarts it, and the next case passes on the new process. Plus: log
marking per case, the every-case restart policy, the resource-leak check, a backend that
closes its device, a backend that ignores SIGTERM, a backend that never starts, attach."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import Disconnected, RequestTimeout
from harness.procs import stop_process
from harness.runner.supervisor import (
    BackendStartError,
    Supervisor,
    SupervisorConfig,
    running_supervisor,
)
from harness.runner.verdicts import Outcome
from harness.trace import load
from harness.world.backend_spec import parse_backend_spec
from harness.world.spec import WorldSpec
from harness.xen.sim.platform import SimPlatform
from harness.xen.sim.runner import running_sim
from protocol_models import codec
from protocol_models.constants import Op, PcmFormat

RATE, FMT, CH, BUFFER, PERIOD = 48000, PcmFormat.S16_LE, 2, 65536, 4096
REQUEST_MS = 1000  # the frontend's request timeout in these tests
HANG_S = 1.0
PROBE_S = 0.5
# a crash/hang case: the request timeout, the probe(s), a little judging
DETECT_BOUND_S = REQUEST_MS / 1000 + 2 * PROBE_S + 1.5

REFERENCE_ARGV = [sys.executable, "-m", "harness.backends.reference", "--domid", "{domid}",
                  "--frontend-domid", "{frontend_domid}", "--devid", "{devid}",
                  "--out", "{out}/wav", "--log-level", "WARNING"]


def exec_reference(*defects: str, prefix: list[str] | None = None) -> str:
    """``exec:`` + the reference backend's own command line: supervised as a foreign
    program would be."""
    argv = [*(prefix or []), *REFERENCE_ARGV]
    for d in defects:
        argv += ["--defect", d]
    return "exec:" + shlex.join(argv)


WORLD_KEYS = ("request_timeout_ms", "kill_grace", "init_timeout", "backend_env")


def config(backend: str, **kw: object) -> SupervisorConfig:
    base: dict[str, object] = dict(request_timeout_ms=REQUEST_MS, hang_timeout=HANG_S,
                                   probe_timeout=PROBE_S, kill_grace=2.0)
    base.update(kw)
    world = WorldSpec(backend=parse_backend_spec(backend),
                      **{k: base.pop(k) for k in WORLD_KEYS if k in base})  # type: ignore
    return SupervisorConfig(world=world, **base)  # type: ignore[arg-type]


def play_a_few_periods(dev: FrontendDevice) -> None:
    """OPEN, WRITE 4 periods, START, wait for 3 CUR_POS events, STOP, CLOSE: no
    HW_PARAM_QUERY and no TRIGGER before OPEN, so neither defect fires."""
    pb = dev.stream("0/0")
    assert pb.open(RATE, FMT, CH, BUFFER, PERIOD).ok
    assert pb.write(0, bytes(4 * PERIOD)).ok
    before = len(pb.events)
    assert pb.trigger("start").ok
    assert pb.wait_for(lambda: len(pb.events) >= before + 3, 5.0), pb.events
    assert pb.trigger("stop").ok
    resp = pb.close()
    assert resp is not None and resp.ok


def test_a_crash_releases_the_waiting_request_at_once(tmp_path: Path) -> None:
    """The backend dies while a request waits: the caller is released with Disconnected
    as soon as the death is seen, not after the (here 30 s) request timeout."""
    spec = exec_reference("abort-on-trigger-before-open")
    with running_supervisor(tmp_path, config(spec, request_timeout_ms=30_000)) as sup:
        with sup.case("suite::test_trigger_before_open") as case:
            with pytest.raises(Disconnected, match="backend is gone"):
                case.dev.stream("0/0").trigger("start")
        assert case.verdict is not None and case.verdict.outcome is Outcome.CRASH
        assert case.verdict.signal == "SIGABRT"
        assert case.verdict.elapsed < 10, "the caller waited for its 30 s timeout"


def test_a_crash_releases_a_raw_collect_at_once(tmp_path: Path) -> None:
    """The same for a request sent raw (as suites and fuzzing do): ``collect`` returns
    as soon as the death is seen, with no response, not after its 30 s timeout."""
    spec = exec_reference("abort-on-trigger-before-open")
    with running_supervisor(tmp_path, config(spec, request_timeout_ms=30_000)) as sup:
        with sup.case("suite::test_raw_trigger_before_open") as case:
            stream = case.dev.stream("0/0")
            stream.send_raw(stream.core.build(Op.TRIGGER, type=0))
            t0 = time.monotonic()
            assert stream.collect(1, timeout=30) == []
            assert time.monotonic() - t0 < 10, "collect waited for its timeout"
        assert case.verdict is not None and case.verdict.outcome is Outcome.CRASH


def test_crash_is_detected_restarted_and_the_next_case_passes(tmp_path: Path) -> None:
    spec = exec_reference("abort-on-trigger-before-open")
    with running_supervisor(tmp_path, config(spec)) as sup:
        assert sup.spec.kind == "exec" and sup.starts == 1
        first = sup.proc
        assert first is not None

        with sup.case("suite::test_trigger_before_open") as case:
            case.dev.stream("0/0").trigger("start")  # the defect: SIGABRT
        v = case.verdict
        assert v is not None and v.outcome is Outcome.CRASH, v
        assert v.signal == "SIGABRT" and v.exit_status == -6
        assert "TRIGGER without OPEN: aborting" in v.log_excerpt
        assert v.needs_restart and v.elapsed < DETECT_BOUND_S, v.elapsed
        assert first.returncode == -6

        with sup.case("suite::test_playback") as case:
            play_a_few_periods(case.dev)
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS, \
            case.verdict.describe()
        assert sup.starts == 2 and sup.proc is not first

        # the log: each case's part holds what the backend said during that case
        assert "aborting" in sup.case_log("suite::test_trigger_before_open")
        assert "aborting" not in sup.case_log("suite::test_playback")
        log = sup.log_path.read_text()
        assert log.index("==== case suite::test_trigger_before_open ====") \
            < log.index("==== backend died: killed by SIGABRT ====") \
            < log.index("==== restart: backend killed by SIGABRT ====") \
            < log.index("==== case suite::test_playback ====")
    verdicts = [json.loads(line) for line in sup.verdicts_path.read_text().splitlines()]
    assert [(v["nodeid"], v["outcome"]) for v in verdicts] == [
        ("suite::test_trigger_before_open", "CRASH"), ("suite::test_playback", "PASS")]
    assert verdicts[0]["signal"] == "SIGABRT"
    # a trace per case: each holds that case's traffic only
    crash = list(load(sup.case_trace_path("suite::test_trigger_before_open")))
    play = list(load(sup.case_trace_path("suite::test_playback")))
    ops = [codec.decode_req(bytes.fromhex(r.fields["raw"])).operation
           for r in crash if r.kind == "req"]
    assert ops and ops[0] == Op.TRIGGER
    assert {codec.decode_req(bytes.fromhex(r.fields["raw"])).operation
            for r in play if r.kind == "req"} >= {Op.OPEN, Op.WRITE, Op.TRIGGER, Op.CLOSE}
    assert any(r.kind == "evt" for r in play) and not any(r.kind == "evt" for r in crash)


def test_hang_is_detected_killed_restarted_and_the_next_case_passes(tmp_path: Path) -> None:
    spec = exec_reference("hang-on-hw-query")
    with running_supervisor(tmp_path, config(spec)) as sup:
        hung = sup.proc
        assert hung is not None
        t0 = time.monotonic()
        with sup.case("suite::test_query") as case:
            with pytest.raises(RequestTimeout):
                case.dev.stream("0/0").hw_param_query()
            raise RequestTimeout("0/0", 0, "HW_PARAM_QUERY", REQUEST_MS)  # as a suite would
        v = case.verdict
        assert v is not None and v.outcome is Outcome.HANG, v
        assert time.monotonic() - t0 < DETECT_BOUND_S
        assert "probe HW_PARAM_QUERY got no answer" in v.detail and "0/0" in v.detail
        # judged alive (a hang, not a crash), then stopped within the case: it yielded to
        # SIGTERM, so the teardown is no finding
        assert hung.poll() == 0 and not v.findings, v.describe()

        with sup.case("suite::test_open_close") as case:
            pb = case.dev.stream("0/0")
            assert pb.open(RATE, FMT, CH, BUFFER, PERIOD).ok
            assert pb.close().ok  # type: ignore[union-attr]
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS, \
            case.verdict.describe()
        assert hung.poll() is not None and sup.starts == 2  # killed and replaced


def test_hang_caught_by_the_case_is_still_a_hang(tmp_path: Path) -> None:
    """A case that swallows the timeout: the frontend's trace still counts it, and the
    ring watchdog sees req_prod ahead of rsp_prod."""
    with running_supervisor(tmp_path, config(exec_reference("hang-on-hw-query"))) as sup:
        with sup.case("quiet") as case:
            with pytest.raises(RequestTimeout):
                case.dev.stream("0/1").hw_param_query()
            time.sleep(HANG_S + 0.3)  # let the watchdog measure the stall
        v = case.verdict
        assert v is not None and v.outcome is Outcome.HANG, v
        assert "request(s) timed out" in v.detail
        assert "ring 0/1: req_prod ahead of rsp_prod" in v.detail


def test_a_hung_backend_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = [sys.executable, "-c",
                "import runpy, signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "signal.signal = lambda *a: None; sys.argv[0] = 'be'; "
                "runpy.run_module('harness.backends.reference', run_name='__main__')"]
    spec = "exec:" + shlex.join([*stubborn, *REFERENCE_ARGV[3:], "--defect",
                                 "hang-on-hw-query"])
    with running_supervisor(tmp_path, config(spec, kill_grace=0.5)) as sup:
        old = sup.proc
        assert old is not None
        with sup.case("hang") as case:
            case.dev.stream("0/0").hw_param_query()
        v = case.verdict
        assert v is not None and v.outcome is Outcome.HANG
        # the teardown that needed SIGKILL is a finding of the case that caused it
        assert [f.kind for f in v.findings] == ["kill-needed"], v.describe()
        assert old.returncode == -9  # stopped within the case, not at the next one
        with sup.case("next") as case:
            assert case.dev.stream("0/0").close().ok  # type: ignore[union-attr]
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
        assert old.returncode == -9
        assert "did not stop within 0.5 s of SIGTERM: SIGKILL" in sup.log_path.read_text()


def test_restart_every_case(tmp_path: Path) -> None:
    with running_supervisor(tmp_path, config("reference", restart_policy="every-case")) \
            as sup:
        pids = []
        for i in range(3):
            with sup.case(f"case{i}") as case:
                assert sup.proc is not None
                pids.append(sup.proc.pid)
                pb = case.dev.stream(0)
                assert pb.open(RATE, FMT, CH, BUFFER, PERIOD).ok  # left open: no leak
            assert case.verdict is not None and case.verdict.outcome is Outcome.PASS, \
                case.verdict.describe()
        assert len(set(pids)) == 3 and sup.starts == 3
        assert sup.log_path.read_text().count("==== restart: policy every-case ====") == 2


@pytest.mark.parametrize("defects", [(), ("keep-mapped-after-close",)],
                         ids=["clean", "keep-mapped-after-close"])
def test_leak_check_finds_pages_kept_mapped(tmp_path: Path, defects: tuple[str, ...]
                                            ) -> None:
    with running_supervisor(tmp_path, config(exec_reference(*defects))) as sup:
        with sup.case("open-close") as case:
            pb = case.dev.stream(0)
            assert pb.open(RATE, FMT, CH, BUFFER, PERIOD).ok
            refs = list(pb.shbuf.buf_grefs)  # type: ignore[union-attr]
            assert pb.close().ok  # type: ignore[union-attr]
        v = case.verdict
        assert v is not None
        if not defects:
            assert v.outcome is Outcome.PASS and v.findings == (), v.describe()
            return
        assert v.outcome is Outcome.FAIL, v.describe()
        (finding,) = [f for f in v.findings if f.kind == "grant-leak"]
        # the frontend saw the busy revokes too: C-12, a MUST violation of its own
        assert {f.kind for f in v.findings} == {"grant-leak", "protocol-violation"}
        assert finding.evidence["refs"] == sorted(refs)  # the 16 buffer pages, no more
        assert "still maps 16 page(s)" in v.describe()


def test_backend_closing_its_device_is_a_verdict_and_a_restart(tmp_path: Path) -> None:
    with running_supervisor(tmp_path, config("reference")) as sup:
        with sup.case("gives-up") as case:
            # what a backend that gives up does (state Closed) while the FE is connected
            sup.world.tool_store.write(f"{sup.be_path}/state", "6")
        v = case.verdict
        assert v is not None and v.outcome is Outcome.FAIL and v.needs_restart
        assert "backend state Closed (6) while connected" in v.detail
        with sup.case("after") as case:
            play_a_few_periods(case.dev)
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
        assert sup.starts == 2


def test_a_backend_that_never_reaches_initwait_is_a_clear_error(tmp_path: Path) -> None:
    # reported as soon as it exits, not when the (here 30 s) InitWait timeout runs out
    cfg = config("exec:sh -c 'echo no device for me; exit 3'", init_timeout=30.0)
    t0 = time.monotonic()
    with pytest.raises(BackendStartError) as info:
        with running_supervisor(tmp_path, cfg):
            pass
    assert time.monotonic() - t0 < 5
    text = str(info.value)
    assert "did not reach InitWait" in text and "exit status 3" in text
    assert "no device for me" in text


def test_attach_watches_a_backend_it_did_not_start(tmp_path: Path) -> None:
    with running_sim() as sim:
        sim.create_domain(1, "guest")
        argv = parse_backend_spec(exec_reference()).command(
            domid=0, frontend_domid=1, devid=0, out=str(tmp_path), python=sys.executable)
        env = {**sim.env(0), "PYTHONPATH": os.pathsep.join(sys.path)}
        with open(tmp_path / "own.log", "wb") as log:
            proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True)
        try:
            sup = Supervisor(SimPlatform(sim), config("attach"), tmp_path / "sup")
            try:
                sup.start()
                assert sup.proc is None
                with sup.case("attached") as case:
                    play_a_few_periods(case.dev)
                assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
            finally:
                sup.close()
            assert proc.poll() is None  # never stopped by the supervisor
        finally:
            stop_process(proc)


def test_a_failed_restart_fails_the_next_case_setup_and_is_retried(tmp_path: Path) -> None:
    once = tmp_path / "started-once"
    script = (f"test -e {shlex.quote(str(once))} && {{ echo refusing; exit 4; }}; "
              f"touch {shlex.quote(str(once))}; exec \"$@\"")
    spec = "exec:" + shlex.join(["sh", "-c", script, "sh", *REFERENCE_ARGV, "--defect",
                                 "abort-on-trigger-before-open"])
    # a failed start is seen at its exit: no need for a short timeout (load varies)
    with running_supervisor(tmp_path, config(spec, init_timeout=20.0)) as sup:
        with sup.case("crash") as case:
            case.dev.stream(0).trigger("start")
        assert case.verdict is not None and case.verdict.outcome is Outcome.CRASH
        for attempt in ("next", "again", "third"):
            with pytest.raises(BackendStartError, match=f"restart before {attempt} failed"
                               ) as info:
                sup.begin_case(attempt)
            assert "exit status 4" in str(info.value) and "refusing" in str(info.value)
        assert sup.starts == 4
        # three failed restarts in a row: the run stops trying, and says why, at once
        t0 = time.monotonic()
        with pytest.raises(BackendStartError, match="the last 3 restarts failed") as info:
            sup.begin_case("fourth")
        assert "exit status 4" in str(info.value) and time.monotonic() - t0 < 1
        assert sup.starts == 4


def test_a_must_violation_the_frontend_records_fails_the_case(tmp_path: Path) -> None:
    """The case asserts nothing; the backend fails a STOP before OPEN with +EBADF (G-01),
    which the frontend records as a violation: the supervisor fails the case, citing it.
    The correct backend's -EBADF passes."""
    for defects, outcome in (((), Outcome.PASS), (("positive-status",), Outcome.FAIL)):
        out = tmp_path / "-".join(defects or ("correct",))
        with running_supervisor(out, config(exec_reference(*defects))) as sup:
            with sup.case("quiet") as case:
                case.dev.stream("0/0").trigger("stop")  # not open: a failure status
        v = case.verdict
        assert v is not None and v.outcome is outcome, v.describe() if v else None
        if outcome is Outcome.FAIL:
            (finding,) = v.findings
            assert finding.kind == "protocol-violation"
            assert "positive_status (SND-G-01)" in finding.detail


def test_a_backend_writing_xenstore_in_a_storm_fails_the_case(tmp_path: Path) -> None:
    """A process of the backend domain that rewrites a node in a loop (as snd_be does when
    its sound server is gone): the case fails with the write count as evidence. The
    harness's own toolstack writes, dom0 too, are not counted (a device removed and
    created again within a case is no storm)."""
    storm = ("from harness.xen.connect import connect_domain\n"
             "d = connect_domain(0)\n"
             "for i in range(300):\n"
             "    d.store.write('/local/domain/0/backend/storm', str(i))\n"
             "d.close()\n")
    with running_supervisor(tmp_path, config(exec_reference())) as sup:
        w = sup.world
        with sup.case("own-toolstack") as case:
            for i in range(300):
                w.tool_store.write("/local/domain/0/harness-own", str(i))
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
        with sup.case("storm") as case:
            env = {**w.platform.process_env(0), "PYTHONPATH": str(Path(__file__).parents[1])}
            subprocess.run([sys.executable, "-c", storm], env=env, check=True, timeout=60)
        v = case.verdict
        assert v is not None and v.outcome is Outcome.FAIL, v.describe() if v else None
        assert [f.kind for f in v.findings] == ["xenstore-storm"]
        assert v.findings[0].evidence["writes"] >= 300
        assert w.tool_store.read(f"{sup.be_path}/state") == b"4"


def test_after_a_failed_case_a_sanity_sequence_decides_on_a_restart(tmp_path: Path) -> None:
    with running_supervisor(tmp_path, config("reference")) as sup:
        faults = sup.world.faults
        assert faults is not None
        with sup.case("fails-harmlessly") as case:
            raise AssertionError("the case's own check failed")
        v = case.verdict
        assert v is not None and v.outcome is Outcome.FAIL and not v.findings, v.describe()
        assert not v.needs_restart  # the sanity sequence passed: the backend is fine
        with sup.case("breaks-the-platform") as case:
            faults.inject_fault(0, "grant.map", mode="always")  # the backend can map no more
            raise AssertionError("the case's own check failed")
        v = case.verdict
        assert v is not None and v.outcome is Outcome.FAIL and v.needs_restart, v.describe()
        assert [f.kind for f in v.findings] == ["sanity-failed"]
        assert "sanity OPEN" in v.findings[0].detail
        faults.clear_faults(0)
        with sup.case("next") as case:
            play_a_few_periods(case.dev)
        assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
        assert sup.starts == 2


def test_the_backend_log_is_capped_between_cases_and_read_in_bounded_parts(
        tmp_path: Path) -> None:
    """A backend that logs without end neither fills the disk nor the judge's memory: over
    ``log_cap`` the log is emptied before the next case (saying so), the current case's
    part is kept whole, and a part larger than the read limit is read as head and tail."""
    # the reference backend behind a shell that chatters into the log all the time
    chatter = ('L=$(printf %04000d 0); (while :; do echo "chatter $L"; sleep 0.01; done) & '
               'exec "$@"')
    chatty = exec_reference(prefix=["sh", "-c", chatter, "sh"])
    cap = 10_000
    with running_supervisor(tmp_path, config(chatty, log_cap=cap)) as sup:
        sizes, parts = [], []
        for i in range(6):
            with sup.case(f"suite::chatty_{i}") as case:
                for _ in range(40):
                    assert case.dev.stream("0/0").hw_param_query().ok
                time.sleep(0.1)  # some chatter in every case
            assert case.verdict is not None and case.verdict.outcome is Outcome.PASS
            part = sup.case_log(f"suite::chatty_{i}")
            assert "chatter" in part and f"end suite::chatty_{i}: PASS ====" in part
            sizes.append(sup.log_path.stat().st_size)
            parts.append(len(part))
        per_case = max(parts)
        assert per_case > cap // 4, "the backend did not log enough to test the cap"
        # bounded: never more than the cap plus one case's part (and the marker)
        assert max(sizes) < cap + 2 * per_case, sizes
        text = sup.log_path.read_text()
        assert "bytes dropped" in text
        with pytest.raises(KeyError):  # the dropped cases' parts are gone, and say so
            sup.case_log("suite::chatty_0")
        # a large part is read as its head and tail around what was skipped
        # one fixed end: the chatter goes on writing between the two reads
        end = sup.log_path.stat().st_size
        whole = sup.world.log_text(0, end)
        cut = sup.world.log_text(0, end, max_bytes=1000)
        assert len(whole) > 2000 and "bytes of the backend log skipped" in cut
        assert cut.startswith(whole[:200]) and cut.endswith(whole[-200:])


DAEMONIZE = ("import os, sys\n"
             "if os.fork(): os._exit(0)\n"  # the first process exits 0 at once
             "os.setsid()\n"
             "if os.fork(): os._exit(0)\n"
             "os.execvp(sys.argv[1], sys.argv[1:])\n")


def test_a_backend_that_daemonizes_stays_supervised(tmp_path: Path) -> None:
    """A backend that forks into a new session and lets its first process exit is still
    the backend: no CRASH for the exit, no second backend started beside it, and every
    process of it gone after the run."""
    from harness.world.backend_proc import processes_with

    spec = exec_reference(prefix=[sys.executable, "-c", DAEMONIZE])
    with running_supervisor(tmp_path, config(spec)) as sup:
        proc = sup.world.backend
        assert proc is not None
        for i in range(2):
            with sup.case(f"suite::daemonized_{i}") as case:
                play_a_few_periods(case.dev)
            assert case.verdict is not None and case.verdict.outcome is Outcome.PASS, \
                case.verdict.describe()
        assert proc.proc.poll() == 0 and proc.escaped  # the daemon serves
        assert sup.starts == 1
        daemon = processes_with(proc.token)
        assert daemon and os.getsid(daemon[0]) != os.getsid(0)
    assert processes_with(proc.token) == [], "the daemonized backend outlived the run"
