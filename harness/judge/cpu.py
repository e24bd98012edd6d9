"""CPU time of a process and its live descendants, from ``/proc`` (Linux), to judge a
backend that burns a core while it has nothing to do.

A correct backend sleeps while idle: it waits on its event channels and XenStore watches
(the notification hold-off of SND-B-03 exists so that it can). One that polls its rings in
a loop uses a whole core for nothing.

``/proc/<pid>/stat``'s utime and stime already add up every thread of the process; live
children are found through ``/proc/<pid>/task/<tid>/children`` and counted too (a backend
may run its audio in a helper process). Children that exited and were reaped count through
cutime/cstime.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

#: The most of one core an idle backend may use: half of it. Far above what a process
#: sleeping on its file descriptors uses (well under 5 %, even with a periodic timer and
#: a debug log), far below a polling loop (close to 100 %), so neither a loaded machine
#: nor a slow logger makes a correct backend fail.
IDLE_CPU_MAX = 0.5
#: How long the idle window lasts, in seconds (long enough for many clock ticks).
IDLE_WINDOW_S = 1.0

_PROC = Path("/proc")


def _ticks_per_s() -> int:
    return os.sysconf("SC_CLK_TCK")


def parse_stat(text: str) -> tuple[int, int, int, int]:
    """utime, stime, cutime, cstime (clock ticks) of a ``/proc/<pid>/stat`` line. The
    command name (field 2) is in parentheses and may itself hold spaces and parentheses,
    so fields are counted from the last ``)``."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): utime..cstime are fields 14..17
    utime, stime, cutime, cstime = (int(v) for v in rest[11:15])
    return utime, stime, cutime, cstime


def _own_ticks(pid: int) -> int:
    utime, stime, cutime, cstime = parse_stat((_PROC / str(pid) / "stat").read_text())
    return utime + stime + cutime + cstime


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return kids
    for task in tasks:
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue  # the thread ended, or the kernel lacks CONFIG_PROC_CHILDREN
    return kids


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid`` (children, grandchildren, ...)."""
    found: list[int] = []
    todo = _children(pid)
    while todo:
        kid = todo.pop()
        if kid in found:
            continue
        found.append(kid)
        todo += _children(kid)
    return found


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """CPU time (user + system) used so far by ``pid``'s threads and, with ``children``,
    its live descendants'. ProcessLookupError when ``pid`` is gone."""
    try:
        ticks = _own_ticks(pid)
    except FileNotFoundError:
        raise ProcessLookupError(f"process {pid} is gone") from None
    if children:
        for kid in descendants(pid):
            try:
                ticks += _own_ticks(kid)
            except (OSError, ValueError):
                continue  # exited meanwhile: its time moves to its parent's cutime
    return ticks / _ticks_per_s()


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used over a wall-clock window."""

    pid: int
    cpu_s: float
    wall_s: float

    @property
    def share(self) -> float:
        """The fraction of one core used (1.0: a core busy all the time)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def __str__(self) -> str:
        return (f"process {self.pid} used {self.cpu_s:.2f} s of CPU in {self.wall_s:.2f} s "
                f"({self.share:.0%} of a core)")


def measure(pid: int, window: float = IDLE_WINDOW_S, *, children: bool = True) -> CpuUse:
    """CPU time used by ``pid`` (and its descendants) over ``window`` seconds from now."""
    t0, c0 = time.monotonic(), cpu_seconds(pid, children=children)
    time.sleep(window)
    c1, t1 = cpu_seconds(pid, children=children), time.monotonic()
    return CpuUse(pid, max(0.0, c1 - c0), t1 - t0)


def busy_problem(use: CpuUse, limit: float = IDLE_CPU_MAX) -> str | None:
    """None when ``use`` stays within ``limit`` of one core; else what was seen."""
    if use.share <= limit:
        return None
    return f"{use}: more than {limit:.0%} of a core while idle"
