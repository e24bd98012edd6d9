"""The simulator's ``lock`` and ``ready`` files are created empty and written after: a
reader that comes between (a loaded machine widens the window; CI met it as an
``IndexError`` from a fuzz campaign's world start) sees "no pid yet" and waits."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from harness.xen.api import XenTimeout
from harness.xen.sim.runner import wait_ready
from harness.xen.sim.simdir import LOCK_FILE, READY_FILE, owner, parse_pid


@pytest.mark.parametrize("raw, pid", [(b"", 0), (b"\n", 0), (b"123\n", 123), (b"12x", 0),
                                      ("77 extra", 77)])
def test_a_pid_file_being_written_names_no_pid(raw: bytes | str, pid: int) -> None:
    assert parse_pid(raw) == pid


def test_an_empty_ready_file_is_waited_for_not_a_crash(tmp_path: Path) -> None:
    ready = tmp_path / READY_FILE
    ready.write_text("")  # the daemon's open(), before its write()
    t0 = time.monotonic()
    with pytest.raises(XenTimeout):
        wait_ready(str(tmp_path), 4242, timeout=0.2)
    assert time.monotonic() - t0 < 5

    def write() -> None:
        time.sleep(0.1)
        ready.write_text("4242\n")

    th = threading.Thread(target=write)
    th.start()
    try:
        wait_ready(str(tmp_path), 4242, timeout=5)  # returns once the pid is there
    finally:
        th.join()


def test_the_owner_of_a_lock_not_yet_written_is_0(tmp_path: Path) -> None:
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a daemon between flock and write
        assert owner(str(tmp_path)) == 0
        os.pwrite(fd, b"555\n", 0)
        assert owner(str(tmp_path)) == 555
    finally:
        os.close(fd)
    assert owner(str(tmp_path)) is None  # the lock released: nobody runs there


def test_a_run_dir_exists_only_while_its_daemon_does(tmp_path: Path, monkeypatch) -> None:
    """The daemon makes its temporary directory (mode 0700) and removes it: a start that
    fails before the daemon runs (here Popen itself; in life a SIGKILL of ours in between)
    leaves no empty ``xen-sim-*`` behind, as mkdtemp before the start did."""
    import subprocess

    import harness.xen.sim.runner as runner

    monkeypatch.setattr(runner.tempfile, "tempdir", str(tmp_path))
    with runner.running_sim() as sim:
        assert os.stat(sim.dir).st_mode & 0o777 == 0o700
        assert os.path.dirname(sim.dir) == str(tmp_path)
    assert os.listdir(tmp_path) == []

    def no_start(*_a: object, **_k: object) -> None:
        raise OSError("no more processes")

    monkeypatch.setattr(subprocess, "Popen", no_start)
    with pytest.raises(OSError):
        with runner.running_sim():
            pass
    assert os.listdir(tmp_path) == []
