"""Stream position in real time, and the CUR_POS events it makes due (SND-E-01..E-07).

Pure integer arithmetic on ``now_ns`` (a monotonic clock in nanoseconds): the driver asks
for the events due and the next deadline, and sleeps until then. Integers, so an event at
an exact period boundary is due at exactly one nanosecond and not a rounding error away.
"""

from __future__ import annotations

from dataclasses import dataclass

NS = 1_000_000_000


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Pacer:
    """Position of one OPEN: cumulative octets since OPEN (E-03), whole frames, never
    decreasing; advances at ``rate`` frames per second only while running. For playback it
    never passes the octets delivered by WRITE (E-07): the position stalls there and
    resumes, in real time, from the moment more data arrives."""

    rate: int
    frame: int
    period: int
    playback: bool
    position: int = 0  # octets at ``anchor_ns`` (or the frozen position when stopped)
    anchor_ns: int | None = None  # None: not advancing (OPENED, PAUSED)
    written: int = 0  # octets delivered by WRITE since OPEN
    reported: int = 0  # the last position sent as CUR_POS (a boundary, or a drain point)
    drain_event: bool = True  # False only with the defect "no-drain-event"

    @property
    def running(self) -> bool:
        return self.anchor_ns is not None

    def _limit(self) -> int | None:
        return self.written - self.written % self.frame if self.playback else None

    def position_at(self, now_ns: int) -> int:
        if self.anchor_ns is None:
            return self.position
        frames = max(0, now_ns - self.anchor_ns) * self.rate // NS
        pos = self.position + frames * self.frame
        limit = self._limit()
        if limit is not None:
            pos = max(self.position, min(pos, limit))
        return pos

    def advance(self, now_ns: int) -> int:
        """Bring the state to ``now_ns``; when playback has stalled on the written limit the
        clock is re-anchored, so the stall does not count as played time."""
        pos = self.position_at(now_ns)
        if self.anchor_ns is not None and self.position_at_unclamped(now_ns) > pos:
            self.position, self.anchor_ns = pos, now_ns
        return pos

    def position_at_unclamped(self, now_ns: int) -> int:
        if self.anchor_ns is None:
            return self.position
        return self.position + max(0, now_ns - self.anchor_ns) * self.rate // NS * self.frame

    def start(self, now_ns: int) -> None:
        if self.anchor_ns is None:
            self.anchor_ns = now_ns

    def stop(self, now_ns: int) -> None:
        """Freeze the position (PAUSE and STOP alike: E-06, no events while not running)."""
        self.position = self.advance(now_ns)
        self.anchor_ns = None

    def add_written(self, octets: int, now_ns: int) -> None:
        self.advance(now_ns)  # a stall ends now, not when it was first noticed
        self.written += octets

    # --- events ------------------------------------------------------------------------

    def due_boundaries(self, now_ns: int) -> list[int]:
        """Period boundaries ``k * period`` reached and not yet reported (E-02). None when
        period is 0 or the stream is not running (E-06)."""
        if not self.period or self.anchor_ns is None:
            return []
        pos = self.advance(now_ns)
        first = self.reported // self.period + 1
        last = pos // self.period
        due = [k * self.period for k in range(first, last + 1)]
        limit = self._limit()
        if (self.drain_event and limit is not None and pos == limit and limit % self.period
                and limit > self.reported):
            # Everything written has been played but the end is not a period boundary:
            # report it, or a draining frontend waits forever for the last partial
            # period (SND-D-06).
            due.append(limit)
        return due

    def next_deadline(self, now_ns: int) -> int | None:
        """When the next boundary is reached (ns), ``now_ns`` if one is already due, None
        if never without outside help (not running, no period, or stalled on WRITE)."""
        if not self.period or self.anchor_ns is None:
            return None
        target = (self.reported // self.period + 1) * self.period
        limit = self._limit()
        if limit is not None and target > limit:
            if limit <= self.reported or not self.drain_event:
                return None  # stalled and reported: the WRITE that lifts the limit re-plans
            target = limit  # the drain event at the end of what was written
        if self.position_at(now_ns) >= target:
            return now_ns
        frames = (target - self.position) // self.frame
        return self.anchor_ns + ceil_div(frames * NS, self.rate)
