"""Campaign mode (issue 12): ``--budget`` durations, ``-n WORKERS`` with findings merged
and deduplicated, the live progress and coverage, results.json in the certification
format (phase FUZZ), determinism for a seed, and the example database (a directory, and a
real redis-server shared by two campaigns: a failure found by one is the first thing the
other replays)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from requires import unavailable

from harness.cli import main
from harness.cli.fuzz_cmd import duration
from harness.fuzz.campaign import Budget, run_machine
from harness.fuzz.driver import DriverConfig
from harness.fuzz.parallel import open_database, run_campaign
from harness.fuzz.reproducer import world_from_cli

pytestmark = pytest.mark.slow
DCFG = DriverConfig(request_timeout=0.5, probe_timeout=0.5)


def test_durations() -> None:
    assert duration("90s") == 90 and duration("10m") == 600 and duration("1h") == 3600
    assert duration("1.5m") == 90 and duration("45") == 45
    for bad in ("ten", "0s", "-1m", "5x"):
        with pytest.raises(Exception, match=r"duration|positive"):
            duration(bad)


def test_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["fuzz", "--budget", "soon"]) == 2
    assert main(["fuzz", "--rules", "core,nonsense"]) == 2
    assert "known rule groups" in capsys.readouterr().err
    afile = tmp_path / "f"
    afile.write_text("x")
    assert main(["fuzz", "--db", str(afile)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["fuzz", "--db", "ftp://x"]) == 2
    assert main(["fuzz", "-n", "0"]) == 2


def _first(seed: int, tmp: Path) -> list[str]:
    args = ["--backend", "reference", "--defect", "trust-offset-length"]
    r = run_machine(world_from_cli(args), args, tmp,
                    Budget(examples=200, seconds=120, shrink_seconds=1, steps=8, seed=seed),
                    DCFG, groups=["core"])
    assert "bounds" in r.first_steps, r.found
    return [s.raw.hex() for s in r.first_steps["bounds"]]


def test_the_same_seed_gives_the_same_first_finding(tmp_path: Path) -> None:
    a = _first(5, tmp_path / "a")
    assert a == _first(5, tmp_path / "b")
    assert a != _first(6, tmp_path / "c")  # and the seed matters


def test_two_workers_merge_their_findings_into_results_json(tmp_path: Path, capsys
                                                             ) -> None:
    out = tmp_path / "out"
    code = main(["fuzz", "--defect", "positive-status", "-n", "2", "--budget", "6s",
                 "--shrink-seconds", "2", "--db", "none", "--rules", "core",
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 1, text
    assert "with 2 worker(s)" in text and "coverage (requests by operation" in text
    for i in (0, 1):  # each worker its own world, both found it ...
        doc = json.loads((out / f"worker-{i}" / "findings.json").read_text())
        assert "status" in [f["oracle"] for f in doc["findings"]]
    merged = json.loads((out / "findings.json").read_text())
    statuses = [f for f in merged["findings"] if f["oracle"] == "status"]
    assert len(statuses) == 1  # ... once in the merged summary (same oracle, op)
    assert merged["stats"]["workers"] == 2 and merged["stats"]["coverage"]
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "sndif-harness/results/1"
    assert results["run"]["source"] == "FUZZ"
    case = next(c for c in results["cases"] if c["nodeid"] == "fuzz::status")
    assert case["phase"] == "FUZZ" and case["verdict"] == "FAIL"
    assert case["clauses"] and case["evidence"]["reproducer"] == "test_repro_status.py"
    assert results["summary"]["overall"] == "FAIL"
    assert (out / "report.html").is_file() and "fuzz::status" in (out / "report.md"
                                                                  ).read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server is not installed: apt-get install redis-server")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save",
                             "", "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), timeout=0.5):
                break
            assert proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not listen"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _crash_campaign(out: Path, db: str, seed: int) -> tuple[int, int]:
    world = ["--backend", "reference", "--defect", "abort-on-trigger-before-open"]
    r = run_campaign(world, out, Budget(examples=400, seconds=20, shrink_seconds=2,
                                        steps=8, seed=seed), DCFG, groups=["core"], db=db)
    assert "crash" in r.found, r.found
    return r.examples, r.workers[0].first_example["crash"]


def test_a_failure_in_redis_is_replayed_first_by_another_worker(tmp_path: Path) -> None:
    with redis_server(tmp_path) as url:
        assert open_database(url) is not None
        # worker A: a fresh database, it has to search
        _crash_campaign(tmp_path / "a", url, seed=11)
        # worker B, another seed: the first example it runs is A's failure, replayed
        _, first = _crash_campaign(tmp_path / "b", url, seed=99)
        assert first == 1, first
        # without the database the same seed has to search (the test can fail)
        _, first_alone = _crash_campaign(tmp_path / "c", "", seed=99)
        assert first_alone > 1


def test_a_directory_database_is_reused_across_runs(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    _crash_campaign(tmp_path / "a", db, seed=11)
    _, first = _crash_campaign(tmp_path / "b", db, seed=99)
    assert first == 1


def test_a_killed_campaign_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGTERM to ``sndif-harness fuzz -n 2``: the workers stop their backends and exit."""
    import os
    import signal
    import sys

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "fuzz", "-n", "2", "--budget",
                             "60s", "--rules", "core", "--db", "none", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 60
        logs = [out / f"worker-{i}" / "backend" / "backend.log" for i in (0, 1)]
        while not all(p.is_file() for p in logs):  # both worlds up
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2)
        workers = [int(x) for x in subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True,
            timeout=10).stdout.split()]
        assert len(workers) >= 2, workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    time.sleep(1)
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                        timeout=10).stdout
    left = [line for line in ps.splitlines()
            if str(out) in line and str(os.getpid()) not in line.split()[0]]
    assert not left, left
    for pid in workers:  # the worker processes themselves: gone (or zombies of init)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        assert state == "Z", (pid, state)
