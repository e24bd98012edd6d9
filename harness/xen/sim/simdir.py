"""The directory a simulator runs in: checked before use, owned by one daemon at a time,
and cleared of what a dead one left.

The daemon holds an exclusive ``flock`` on ``DIR/lock`` (its pid inside) for its whole
life. The kernel drops the lock when the daemon dies, however it dies, so "a simulator
runs in DIR" is exactly "someone holds that lock": a second daemon is refused (naming the
first), and the sockets and ``ready`` file of a SIGKILLed one are recognised as stale and
removed before a new one starts there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import time

LOCK_FILE = "lock"
READY_FILE = "ready"
#: the longest socket path under DIR: dom<32751>/hypervisor.sock
_LONGEST_SOCKET = os.path.join("dom32751", "hypervisor.sock")
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, the last one a NUL
_NOT_FOR_SOCKETS = ("/proc", "/sys")  # pseudo-filesystems: no sockets there
PROBE_GRACE = 0.5  # seconds


class SimUsageError(ValueError):
    """A user mistake in what was asked of the simulator (the CLI prints it as one line)."""


class SimDirBusy(SimUsageError):
    """Another live daemon owns the directory."""

    def __init__(self, dir: str, pid: int) -> None:
        who = f"a simulator (pid {pid})" if pid else "a simulator"
        super().__init__(f"{who} already runs in {dir}: stop it first, or choose another "
                         "directory")
        self.pid = pid


def check_dir(dir: str) -> str:
    """The absolute path of ``dir``, created if missing, once it can hold the simulator's
    sockets; else :class:`SimUsageError` saying why (one line)."""
    try:
        path = os.path.abspath(dir)
        real = os.path.realpath(path)
        encoded = os.fsencode(path)
    except (ValueError, UnicodeError) as exc:  # a NUL byte, say
        raise SimUsageError(f"bad directory name {dir!r}: {exc}") from None
    for top in _NOT_FOR_SOCKETS:
        if real == top or real.startswith(top + "/"):
            raise SimUsageError(f"{dir}: not a place for the simulator's sockets "
                                f"(it is under {top})")
    longest = len(encoded) + 1 + len(_LONGEST_SOCKET)
    if longest > _SUN_PATH_MAX:
        raise SimUsageError(f"directory path too long for unix sockets ({len(encoded)} "
                            f"bytes; at most {_SUN_PATH_MAX - 1 - len(_LONGEST_SOCKET)})")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".probe-{os.getpid()}")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EEXIST and not os.path.isdir(path):
            reason = "not a directory"
        raise SimUsageError(f"{dir}: cannot hold the simulator's sockets: {reason}") from None
    return path


def parse_pid(raw: bytes | str) -> int:
    """The pid a lock or ``ready`` file names; 0 while it holds none (each is created
    empty and written after: a reader can come between)."""
    fields = raw.split()
    try:
        return int(fields[0]) if fields else 0
    except ValueError:
        return 0


def read_pid_file(path: str) -> int:
    """:func:`parse_pid` of the file at ``path``; 0 when there is none."""
    try:
        with open(path, "rb") as f:
            return parse_pid(f.read(32))
    except OSError:
        return 0


def _read_pid(fd: int) -> int:
    try:
        return parse_pid(os.pread(fd, 32, 0))
    except OSError:
        return 0


def owner(dir: str) -> int | None:
    """The pid of the live daemon that owns ``dir`` (0 if it has not written it yet), or
    None when no simulator runs there."""
    try:
        fd = os.open(os.path.join(dir, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None  # nobody holds it: the owner died without removing the file
    finally:
        os.close(fd)


def stale_files(dir: str, keep_lock: bool = False) -> list[str]:
    """The sockets, ``ready`` and lock files under ``dir`` (what a daemon leaves if killed)."""
    names = (READY_FILE,) if keep_lock else (READY_FILE, LOCK_FILE)
    found = []
    for root, _, files in os.walk(dir):
        for f in files:
            if f.endswith(".sock") or f in names:
                found.append(os.path.join(root, f))
    return sorted(found)


def clear_stale(dir: str, keep_lock: bool = False) -> list[str]:
    """Remove what a dead daemon left in ``dir`` (its sockets, ``ready``, its lock file and
    the emptied ``dom<N>`` directories); returns the files removed. Only for a directory
    no live daemon owns."""
    removed = []
    for path in stale_files(dir, keep_lock):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    for sub in glob.glob(os.path.join(glob.escape(dir), "dom*")):
        with contextlib.suppress(OSError):
            os.rmdir(sub)
    return removed


class Claim:
    """The lock that makes this process the one daemon of a directory."""

    def __init__(self, dir: str) -> None:
        self.dir = dir
        self.path = os.path.join(dir, LOCK_FILE)
        self._fd: int | None = self._take()

    def _take(self) -> int:
        # owner()'s probe holds a shared lock for microseconds: only a lock still held
        # after PROBE_GRACE is another daemon's
        deadline = time.monotonic() + PROBE_GRACE
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise SimDirBusy(self.dir, pid) from None
            except BaseException:
                os.close(fd)
                raise
            # the owner before us may have unlinked the file between our open and flock:
            # a lock on an unlinked file guards nothing, take the new one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        clear_stale(self.dir, keep_lock=True)  # what a killed predecessor left
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def release(self) -> None:
        """Remove the lock file, then let the lock go (in that order: a newcomer that
        opened the old file finds it unlinked and retries)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
