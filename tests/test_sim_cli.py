"""``sndif-harness sim run`` and ``sndif-harness bench sim`` (figures printed, not judged):
one simulator per directory (a second is refused, a dead one's files are not trusted),
and nothing left behind when sim run or its parent is killed."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from requires import need_xen_c_toolchain

from harness.xen.sim.client import SimControl
from harness.xen.sim.daemon import hypervisor_path
from harness.xen.sim.runner import leftovers

CLI = [sys.executable, "-m", "harness"]


def test_sim_run_prints_paths_and_stops_on_sigterm(tmp_path):
    d = tmp_path / "sim"
    proc = subprocess.Popen([*CLI, "sim", "run", "--dir", str(d)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = b""
        while b"\nready\n" not in out:
            assert select.select([fd], [], [], 10)[0], "no ready line"
            chunk = os.read(fd, 4096)
            assert chunk, "sim run exited early"
            out += chunk
        text = out.decode()
        assert "XENSTORED_PATH=" in text and "hypervisor.sock" in text
        assert os.path.exists(d / "dom0" / "hypervisor.sock")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert leftovers(str(d)) == []


def test_bench_sim_prints_its_figures():
    out = subprocess.run([*CLI, "bench", "sim", "--seconds", "0.2"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for label in ("xenstore read round trips/s", "xenstore write round trips/s",
                  "event-channel notify round trips/s", "raw socketpair ping-pong",
                  "event channel / raw ratio", "map 16-page buffer", "unmap 16-page buffer"):
        assert label in out.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _ready_pid(d: str, timeout: float = 20.0, not_: int = 0) -> int:
    """The pid in DIR/ready once a daemon (other than ``not_``) has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((Path(d) / "ready").read_text().split()[0])
            if pid != not_:
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no simulator became ready in {d}")


def _kill(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_second_sim_run_on_a_live_dir_is_refused_naming_the_first(tmp_path: Path) -> None:
    d = str(tmp_path / "sim")
    first = subprocess.Popen([*CLI, "sim", "run", "--dir", d], stdout=subprocess.DEVNULL)
    try:
        daemon = _ready_pid(d)
        second = subprocess.run([*CLI, "sim", "run", "--dir", d], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and f"pid {daemon}" in second.stderr
        # the first one was not disturbed: its sockets are there and it answers
        assert first.poll() is None and _alive(daemon)
        ctl = SimControl(hypervisor_path(d, 0), 5.0)
        try:
            assert [dom.domid for dom in ctl.list_domains()] == [0]
        finally:
            ctl.close()
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
    finally:
        _kill(first)
    assert leftovers(d) == []


def _killed_daemon(d: str) -> subprocess.Popen[bytes]:
    """A daemon SIGKILLed once ready in ``d``: its sockets and ready file stay behind."""
    dead = subprocess.Popen([sys.executable, "-m", "harness.xen.sim.daemon", "--dir", d,
                             "--quiet"])
    try:
        assert _ready_pid(d) == dead.pid
    finally:
        dead.kill()
        dead.wait(10)
    assert os.path.join(d, "ready") in leftovers(d)  # stale, as the issue found them
    return dead


def test_a_dead_simulators_directory_is_not_trusted(tmp_path: Path) -> None:
    """A SIGKILLed daemon leaves its sockets and ready file: sim exec sees through them
    (says so, and starts a new simulator there), and sim run takes the directory over."""
    need_xen_c_toolchain()
    d = str(tmp_path / "sim")
    dead = _killed_daemon(d)
    out = subprocess.run([*CLI, "sim", "exec", "--dir", d, "--", "sh", "-c",
                          'cat "$XEN_SIM_DIR/ready"'], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    served_by = int(out.stdout.split()[-1])
    assert served_by != dead.pid, "sim exec ran its program on the dead simulator"
    assert "stale" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert leftovers(d) == []
    dead = _killed_daemon(d)  # a dead one's files again, then sim run: it takes over
    proc = subprocess.Popen([*CLI, "sim", "run", "--dir", d], stdout=subprocess.DEVNULL)
    try:
        _ready_pid(d, not_=dead.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        _kill(proc)
    assert leftovers(d) == []


PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    print(child.pid, flush=True)
    time.sleep(120)
    """)


def test_sim_run_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    d = str(tmp_path / "sim")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, *CLI, "sim", "run", "--dir", d],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        sim_run = int(parent.stdout.readline())
        daemon = _ready_pid(d)
        parent.kill()
        parent.wait(10)
        assert _gone_within([sim_run, daemon], 15), "sim run outlived its parent"
    finally:
        _kill(parent)
        if parent.stdout is not None:
            parent.stdout.close()
        for pid in (sim_run, daemon):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert leftovers(d) == []


def test_sigkilled_sim_run_leaves_no_socket_nor_temporary_directory() -> None:
    proc = subprocess.Popen([*CLI, "sim", "run"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("xen-sim: dir "), line
        d = line.split("dir ", 1)[1].strip()
        daemon = _ready_pid(d)
        proc.kill()
        proc.wait(10)
        assert _gone_within([daemon], 15), "the daemon outlived a SIGKILLed sim run"
        assert not os.path.exists(d), os.listdir(d)
    finally:
        _kill(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of ``pid``'s live children."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found.append((int(entry), f.read().replace(b"\0", b" ").decode()))
    return found


def test_ctrl_c_of_bench_sim_is_one_line_and_ends_its_echo_processes() -> None:
    """A terminal's Ctrl-C goes to the whole process group: the echo processes the bench
    started must not print tracebacks of their own (they run in a session of their own
    and the bench ends them)."""
    proc = subprocess.Popen([*CLI, "bench", "sim", "--seconds", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not [c for c in _children(proc.pid) if " -c " in c[1]]:
            assert proc.poll() is None and time.monotonic() < deadline, "no echo process"
            time.sleep(0.05)
        echoes = [pid for pid, _ in _children(proc.pid)]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
        assert proc.stderr is not None
        assert proc.stderr.read().strip() == "sndif-harness: interrupted"
        assert _gone_within(echoes, 15)
    finally:
        _kill(proc)  # type: ignore[arg-type]
        if proc.stderr is not None:
            proc.stderr.close()
