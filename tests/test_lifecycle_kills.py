"""Killed anywhere, nothing left: ``demo``, ``sim run``, ``sim exec`` and a small pytest run
of a suite are interrupted with SIGINT (to the process group, as a terminal's Ctrl-C),
SIGTERM and SIGKILL (to the process, as ``timeout`` and ``kill`` do) at a random moment
(seeded, the seed printed), and afterwards no process of theirs runs, and no socket,
temporary directory or ``/dev/shm`` object of theirs stays.

Their processes are found by a token in their environment (inherited by every descendant,
whatever session it moves to); their temporary files by a private ``TMPDIR``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from requires import need_xen_c_toolchain

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "harness"]
TOKEN_VAR = "SNDIF_LIFECYCLE_TOKEN"
CLEANUP_TIMEOUT = 15.0  # seconds the survivors get to go after the kill
SEED = int(os.environ.get("LIFECYCLE_SEED", random.randrange(1 << 32)))

#: what runs, and the window (seconds after the start) the kill falls in: shorter than the
#: run (the A suite takes ~6 s with the project's bytecode compiled)
TARGETS: dict[str, tuple[list[str], float]] = {
    "demo": ([*CLI, "demo", "--seconds", "6", "--out", "{out}"], 5.0),
    "sim run": ([*CLI, "sim", "run"], 3.0),
    "sim exec": ([*CLI, "sim", "exec", "--domid", "2", "--", "sleep", "60"], 4.0),
    "pytest": ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--basetemp", "{out}/basetemp", "suites/test_a_xenstore.py"], 4.0),
}
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def _with_token(token: str) -> list[int]:
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
        except OSError:
            continue
        if not zombie and needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _ours(name: str, pids: set[int]) -> bool:
    """A new /dev/shm entry is ours unless it names a process that is not (a concurrent
    fuzz run's coverage map, say)."""
    numbers = {int(n) for n in re.findall(r"\d+", name)}
    return not numbers or bool(numbers & pids)


def _leftovers(tmp: Path) -> list[str]:
    # everything under the private TMPDIR is a leak (sockets, xen-sim-*, sndif-pa-*, ...);
    # the pytest run's basetemp, which pytest keeps on purpose, is elsewhere
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("target", list(TARGETS))
def test_killed_at_a_random_moment_leaves_nothing(target: str, sig: int,
                                                  tmp_path: Path) -> None:
    if target in ("sim exec", "pytest", "demo"):
        need_xen_c_toolchain()
    rng = random.Random(f"{SEED}-{target}-{sig}")
    argv_t, window = TARGETS[target]
    delay = rng.uniform(0.1, window)
    print(f"seed {SEED} (LIFECYCLE_SEED to repeat): {target} gets {signal.Signals(sig).name} "
          f"after {delay:.2f} s")
    # a short TMPDIR: its temporary directories must hold unix sockets (108 bytes a path)
    tmp = Path(tempfile.mkdtemp(prefix="lifecycle-"))
    argv = [a.replace("{out}", str(tmp_path)) for a in argv_t]
    if target == "demo":
        argv[argv.index(str(tmp_path))] = str(tmp_path / "demo")
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("XEN_SIM_DIR", "PYTEST_ADDOPTS")}
    env.update({TOKEN_VAR: token, "TMPDIR": str(tmp)})
    shm_before = _shm()
    stdout = open(tmp_path / "stdout", "wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update(_with_token(token))
            time.sleep(0.05)
        if proc.poll() is not None:
            said = (tmp_path / "stdout").read_bytes() + proc.communicate()[1]
            pytest.fail(f"{target} ended by itself before the kill (status {proc.returncode}): "
                        + said.decode(errors="replace")[-3000:])
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # a terminal's Ctrl-C reaches the foreground group
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=CLEANUP_TIMEOUT)
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        while (_with_token(token) or _leftovers(tmp)) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = _with_token(token)
        left = _leftovers(tmp)
        shm_left = sorted(n for n in _shm() - shm_before if _ours(n, seen | {proc.pid}))
        assert not alive and not left and not shm_left, (
            f"after {signal.Signals(sig).name} at {delay:.2f} s, {target} left: processes "
            f"{[_cmdline(p) for p in alive]}, files {left}, /dev/shm {shm_left}")
        # a killed program says nothing; the others no traceback, but for a SIGINT while
        # pytest's own interpreter still imports its plugins (before any handler of ours or
        # pytest's exists: Python's default KeyboardInterrupt)
        importing = target == "pytest" and sig == signal.SIGINT \
            and b"_bootstrap>" in err and err.rstrip().endswith(b"KeyboardInterrupt")
        if sig != signal.SIGKILL and not importing:
            assert b"Traceback" not in err, err.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pid in _with_token(token):  # the test failed: still, leave nothing running
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
        stdout.close()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return str(pid)
