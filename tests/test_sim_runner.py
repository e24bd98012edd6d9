"""The runner leaves nothing behind: no process, socket file, directory or memfd; also when
the body raises, on KeyboardInterrupt, on SIGTERM, and when its parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.xen.sim.runner import leftovers, running_sim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _memfds() -> list[str]:
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "memfd:" in target:
            fds.append(target)
    with open("/proc/self/maps") as f:
        maps = [line for line in f if "memfd:xen-sim-page" in line]
    return fds + maps


def _use_everything(sim) -> None:
    sim.create_domain(1, "guest")
    d0, d1 = sim.domain(0, store=False), sim.domain(1, store=False)
    pages = d0.grants.alloc_pages(16)
    refs = [d0.grants.grant(pages, i, 1) for i in range(16)]
    d1.grants.map(0, refs)  # left mapped on purpose
    d1.evtchn.bind_interdomain(0, d0.evtchn.alloc_unbound(1))
    assert _memfds()


def _gone(pid: int, dir: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
    assert not os.path.exists(dir) or leftovers(dir) == []


def test_normal_exit_leaves_nothing():
    fds_before = set(os.listdir("/proc/self/fd"))
    with running_sim() as sim:
        pid, dir = sim.pid, sim.dir
        assert os.path.exists(sim.hypervisor_path(0))
        _use_everything(sim)
    assert not _alive(pid) and not os.path.exists(dir)
    assert _memfds() == []
    assert set(os.listdir("/proc/self/fd")) <= fds_before  # no leaked fd


def test_exception_in_body_leaves_nothing():
    with pytest.raises(RuntimeError, match="boom"):
        with running_sim() as sim:
            pid, dir = sim.pid, sim.dir
            _use_everything(sim)
            raise RuntimeError("boom")
    assert not _alive(pid) and not os.path.exists(dir)
    assert _memfds() == []


def test_keyboard_interrupt_leaves_nothing():
    with pytest.raises(KeyboardInterrupt):
        with running_sim() as sim:
            pid, dir = sim.pid, sim.dir
            _use_everything(sim)
            raise KeyboardInterrupt
    assert not _alive(pid) and not os.path.exists(dir)


def test_given_dir_is_kept_but_emptied_of_sockets(tmp_path):
    with running_sim(str(tmp_path / "s")) as sim:
        pid = sim.pid
        sim.create_domain(3, "x")
    assert not _alive(pid)
    assert os.path.isdir(tmp_path / "s") and leftovers(str(tmp_path / "s")) == []


def test_sigterm_to_the_daemon_removes_its_sockets():
    with running_sim() as sim:
        sim.create_domain(1, "guest")
        os.kill(sim.pid, signal.SIGTERM)
        sim.proc.wait(5)
        assert leftovers(sim.dir) == []


RUNNER_CHILD = textwrap.dedent("""
    import sys, time
    from harness.xen.sim.runner import running_sim
    with running_sim() as sim:
        sim.create_domain(1, "guest")
        print(sim.pid, sim.dir, flush=True)
        time.sleep(60)
    """)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_or_killed_runner_process_leaks_nothing(sig, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", RUNNER_CHILD], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        pid_s, dir = child.stdout.readline().split()
        pid = int(pid_s)
        assert _alive(pid)
        child.send_signal(sig)  # SIGINT: KeyboardInterrupt path; SIGKILL: PDEATHSIG path
        child.wait(10)
        _gone(pid, dir)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    # SIGKILL too: the daemon, stopped by PDEATHSIG, removes the directory made for it
    assert not os.path.exists(dir)


def test_daemon_killed_outright_is_reported_and_cleaned_up() -> None:
    """SIGKILL leaves the daemon no chance to remove its sockets: the runner says so
    (SimLeak) and removes them itself, so nothing stays behind in /tmp."""
    from harness.xen.sim.runner import SimLeak

    with pytest.raises(SimLeak, match="files left"), running_sim() as sim:
        sim.create_domain(1, "guest")
        dir = sim.dir
        sim.proc.kill()
        sim.proc.wait(5)
    assert not os.path.exists(dir)


def test_an_error_caused_by_the_daemons_death_says_so() -> None:
    """The daemon killed under a block that then fails (a notify on a dead channel, say):
    the error names the cause, the simulator's death, with the block's error chained;
    the CLI prints it as one line with status 3."""
    from harness.xen.api import PlatformDied

    with pytest.raises(PlatformDied, match=r"died under the run \(killed by SIGKILL\)") as info, \
            running_sim() as sim:
        dom = sim.domain(0, store=False)
        sim.proc.kill()
        sim.proc.wait(5)
        dom.evtchn.alloc_unbound(0)  # the daemon is gone: this fails
    assert isinstance(info.value.__context__, OSError)
