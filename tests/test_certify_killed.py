"""A certify run killed with SIGKILL mid-way loses nothing: results.json was valid at every
moment we looked, says the run is incomplete, holds the cases done so far, renders as a
report, and no process of the run (backend, simulated Xen, audio host) outlives it: not
the reference backend, and not snd_be, which does not notice its Xen is gone (it dies by
the PR_SET_PDEATHSIG the harness gives every backend process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from requires import need_snd_be_build

from harness.report.results import read_results

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]
_KILL_AFTER = 5  # cases in results.json before the kill
_START_TIMEOUT = 240.0
_GONE_TIMEOUT = 30.0


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the name in () may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` (by parent pid, whatever its session): pid → start
    time, so a recycled pid is not mistaken for it."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[1], []).append(pid)
            starts[pid] = st[2]
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out[child] = starts[child]
                todo.append(child)
    return out


def _alive(tree: dict[int, int]) -> list[int]:
    """The processes of ``tree`` still running (a zombie is dead)."""
    out = []
    for pid, start in tree.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def _mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment mentions ``text`` (the run's
    directories: a backend finds the sim's sockets through its environment)."""
    needle = text.encode()
    out = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        seen = b""
        for what in ("cmdline", "environ"):
            try:
                seen += Path(f"/proc/{pid}/{what}").read_bytes()
            except OSError:  # gone, or not ours to read
                continue
        st = _stat(pid)
        if needle in seen and st is not None and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd[:200]}")
    return "; ".join(out)


def _snd_be_world() -> tuple[list[str], str]:
    from harness.peers import snd_be

    need_snd_be_build()
    binary = str(snd_be.build_snd_be().binary)
    return (["--backend", f"exec:{binary} -v *:Debug", "--audio", "pulse",
             "--unique-id", "pulse<{device}>"], binary)


#: A backend that never looks at its Xen, so only the harness can end it: killed while
#: the harness waits for it to start (no case done yet).
_DEAF = "sleep 3601"


@pytest.fixture(params=["reference", "deaf-exec", "snd_be"])
def world(request: pytest.FixtureRequest) -> tuple[list[str], str, int]:
    """(certify's world options, what the backend's command line holds, how many cases
    to let finish before the kill)."""
    if request.param == "reference":
        return [], "harness.backends.reference", _KILL_AFTER
    if request.param == "deaf-exec":
        return ["--backend", f"exec:{_DEAF}"], _DEAF, 0
    options, binary = _snd_be_world()
    return options, binary, _KILL_AFTER


def _backend_running(tree: dict[int, int], marker: str) -> bool:
    return any(marker in _describe([pid]) for pid in _alive(tree))


def test_sigkilled_certify_leaves_valid_partial_results_and_no_process(
        tmp_path: Path, world: tuple[list[str], str, int]) -> None:
    options, backend_marker, kill_after = world
    report = tmp_path / "report"
    results = report / "results.json"
    log = (tmp_path / "certify.log").open("wb")
    proc = subprocess.Popen([*CLI, "certify", "--report-dir", str(report), *options],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tree: dict[int, int] = {}
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        reads = 0
        while True:
            assert proc.poll() is None, (
                f"certify ended (status {proc.returncode}) before it was killed: "
                + (tmp_path / "certify.log").read_text()[-2000:])
            assert time.monotonic() < deadline, f"not {kill_after} cases done with the " \
                f"backend running after {_START_TIMEOUT:g} s"
            if results.exists():
                # atomic rewrites: whenever we look, the file is whole and valid
                doc = read_results(results)
                reads += 1
                assert doc["run"]["complete"] is False, doc["run"]
                # kill while the backend runs: the point is that it does not outlive us
                if len(doc["cases"]) >= kill_after and _backend_running(
                        tree := _descendants(proc.pid), backend_marker):
                    break
            time.sleep(0.02)  # a polling period, not a synchronisation
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

        deadline = time.monotonic() + _GONE_TIMEOUT
        while True:
            left = sorted(set(_alive(tree)) | set(_mentioning(str(report))))
            if not left:
                break
            assert time.monotonic() < deadline, \
                f"processes of the killed run still running: {_describe(left)}"
            time.sleep(0.1)
        # nor anything else using the run's simulated Xen or report directory
        sim_dirs = [a.split("--dir ", 1)[1].split()[0] for a in
                    (_describe([pid]) for pid in tree) if "harness.xen.sim.daemon" in a]
        for d in sim_dirs:
            assert not _mentioning(d), f"left running: {_describe(_mentioning(d))}"
    finally:
        log.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in _alive(tree):  # leave nothing behind for the next test, even failing
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert reads >= 1
    doc = read_results(results)
    run = doc["run"]
    assert run["complete"] is False and run["state"] == "running" and run["finished"] is None
    assert doc["summary"]["overall"] == "RUNNING" and doc["summary"]["exit_status"] is None
    assert len(doc["cases"]) == run["cases_done"] >= kill_after
    if kill_after:  # killed mid-run, not while the first backend was starting
        assert run["cases_done"] < run["cases_collected"], run
    json.dumps(doc)  # nothing unserialisable slipped in

    out = tmp_path / "partial.html"
    r = subprocess.run([*CLI, "report", "html", str(results), "-o", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert "RUNNING" in page
    assert all(c["nodeid"] in page for c in doc["cases"])
