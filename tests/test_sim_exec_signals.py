"""``sndif-harness sim exec`` never leaves its program behind: SIGTERM/SIGHUP/SIGINT are
forwarded to the program's process group (SIGKILL after a grace period), and a SIGKILLed
``sim exec`` takes its program with it (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest
from requires import need_xen_c_toolchain

from harness.xen.sim.runner import Sim

CLI = [sys.executable, "-m", "harness"]


def start_exec(sim: Sim, script: str) -> tuple[subprocess.Popen[bytes], int]:
    """``sim exec`` of ``sh -c script`` (which must print its pid first): (proc, pid)."""
    need_xen_c_toolchain()
    proc = subprocess.Popen([*CLI, "sim", "exec", "--dir", sim.dir, "--", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd, out, deadline = proc.stdout.fileno(), b"", time.monotonic() + 60
    while b"\n" not in out:
        assert select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0], \
            "sim exec printed nothing"
        chunk = os.read(fd, 4096)
        assert chunk, "sim exec ended early"
        out += chunk
    first = out.split(b"\n", 1)[0].decode()
    assert first.startswith("[dom0] "), first
    return proc, int(first.split()[-1])


def alive(pid: int) -> bool:
    """Running (a zombie counts as dead: it no longer runs anything)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone_within(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def cleanup(proc: subprocess.Popen[bytes], pid: int) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    if alive(pid):  # the test failed: still, leave nothing running
        os.kill(pid, signal.SIGKILL)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_is_forwarded_to_the_program(sim: Sim, sig: int) -> None:
    proc, pid = start_exec(sim, "echo $$; exec sleep 300")
    try:
        proc.send_signal(sig)
        assert proc.wait(15) == 128 + sig
        assert gone_within(pid, 5.0), f"program {pid} outlived sim exec"
    finally:
        cleanup(proc, pid)


def test_program_ignoring_sigterm_is_killed_after_the_grace(sim: Sim) -> None:
    # the shell and its sleep both ignore SIGTERM (an ignored signal survives exec)
    proc, pid = start_exec(sim, "trap '' TERM; echo $$; sleep 300; echo woke")
    try:
        time.sleep(0.2)  # let the shell start its sleep
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 128 + signal.SIGTERM
        assert time.monotonic() - t0 >= 1.0  # it was given its grace first
        assert gone_within(pid, 5.0)
    finally:
        cleanup(proc, pid)


def test_sigkilled_sim_exec_takes_its_program_along(sim: Sim) -> None:
    proc, pid = start_exec(sim, "echo $$; exec sleep 300")
    try:
        proc.kill()
        proc.wait(10)
        assert gone_within(pid, 5.0), f"program {pid} survived a SIGKILLed sim exec"
    finally:
        cleanup(proc, pid)


def test_bad_command_is_one_line(sim: Sim) -> None:
    need_xen_c_toolchain()
    out = subprocess.run([*CLI, "sim", "exec", "--dir", sim.dir, "--", "/no/such/program"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "/no/such/program" in out.stderr
    out = subprocess.run([*CLI, "sim", "exec", "--dir", sim.dir], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "no command given" in out.stderr
    assert "Traceback" not in out.stderr


def test_simulator_does_not_import_the_cli() -> None:
    code = ("import sys, harness.xen.sim.simexec, harness.xen.sim.runner, "
            "harness.xen.sim.daemon; print(any(m.startswith('harness.cli') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_program_killed_by_a_signal_gives_128_plus_n_and_says_so(sim: Sim, sig: int) -> None:
    need_xen_c_toolchain()
    out = subprocess.run([*CLI, "sim", "exec", "--dir", sim.dir, "--", "sh", "-c",
                          f"kill -{sig} $$"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 128 + sig, out.stderr
    assert out.stderr.strip() == f"sim exec: sh killed by {signal.Signals(sig).name}"


def test_parallel_processes_creating_one_new_domain_do_not_race(sim: Sim) -> None:
    """Several `sim exec --domid N` starting at once on a domain the sim lacks: each either
    creates it or finds it (was FileExistsError for the losers)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from harness.xen.sim.simexec import ensure_domain

    for domid in range(5, 9):  # a few rounds: the race needs the threads to interleave
        barrier = Barrier(6)

        def create(_: int, domid: int = domid, barrier: Barrier = barrier) -> None:
            barrier.wait(10)
            ensure_domain(sim.dir, domid, "racer")

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(create, range(6)))  # re-raises a thread's exception
        assert {d.domid: d.name for d in sim.control.list_domains()}[domid] == "racer"
