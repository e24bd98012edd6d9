"""Backend protocol violations seen by the reference frontend.

A violation never stops the run: it is recorded with the clause IDs it breaks, a message,
the expected and actual values and the raw 64-byte message as evidence, and the frontend
carries on the way Linux would (clauses.md §4, §5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Kind:
    """A kind of violation: its name, the clauses it cites and their level."""

    name: str
    clauses: tuple[str, ...]
    level: str  # "MUST", "SHOULD" or "REF" (the cited clause's level)


UNSOLICITED_RESPONSE = Kind("unsolicited_response", ("SND-B-08",), "MUST")
DUPLICATE_RESPONSE = Kind("duplicate_response", ("SND-B-08",), "MUST")
ID_NOT_ECHOED = Kind("id_not_echoed", ("SND-B-08", "SND-B-09"), "MUST")
OPERATION_NOT_ECHOED = Kind("operation_not_echoed", ("SND-B-08", "SND-B-09"), "MUST")
LATE_RESPONSE = Kind("late_response", ("SND-G-02", "SND-D-09", "SND-F-04"), "REF")
RESPONSE_PROD_OVERFLOW = Kind("response_prod_overflow", ("SND-B-08",), "MUST")
EVENT_RING_JUMP = Kind("event_ring_jump", ("SND-B-13",), "MUST")
EVENT_ID_GAP = Kind("event_id_gap", ("SND-E-04",), "REF")
POSITION_BACKWARDS = Kind("position_backwards", ("SND-E-03",), "REF")
POSITION_NOT_FRAME = Kind("position_not_whole_frames", ("SND-E-03",), "SHOULD")
EVENT_BEFORE_START = Kind("event_before_start", ("SND-E-06",), "MUST")
EVENT_WHILE_STOPPED = Kind("event_while_stopped", ("SND-E-06", "SND-E-01"), "SHOULD")
EVENT_AFTER_CLOSE = Kind("event_after_close", ("SND-E-06",), "MUST")
EVENT_WITHOUT_PERIOD = Kind("event_with_period_sz_0", ("SND-E-02",), "MUST")
POSITIVE_STATUS = Kind("positive_status", ("SND-G-01",), "MUST")
NON_ERRNO_STATUS = Kind("status_not_a_xen_errno", ("SND-G-01", "SND-G-05"), "SHOULD")
INTERNAL_ERRNO_STATUS = Kind("status_xen_internal_errno", ("SND-G-05",), "SHOULD")
BUFFER_STILL_MAPPED = Kind("buffer_mapped_after_close", ("SND-C-12",), "MUST")

ALL_KINDS: tuple[Kind, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Kind))


@dataclass(frozen=True)
class Violation:
    """One observed violation, with its evidence."""

    kind: Kind
    message: str
    expected: Any = None
    actual: Any = None
    raw: bytes | None = None
    stream: str | None = None  # "<pcm>/<stream>" index path
    t_ns: int = field(default_factory=time.monotonic_ns)

    @property
    def clauses(self) -> tuple[str, ...]:
        return self.kind.clauses

    @property
    def name(self) -> str:
        return self.kind.name

    def as_dict(self) -> dict[str, Any]:
        """Trace/report form (``raw`` stays bytes; the trace renders it as hex)."""
        return {"violation": self.kind.name, "clauses": list(self.kind.clauses),
                "level": self.kind.level, "message": self.message,
                "expected": self.expected, "actual": self.actual, "raw": self.raw,
                "stream": self.stream}

    def __str__(self) -> str:
        where = f"stream {self.stream}: " if self.stream else ""
        return (f"[{', '.join(self.kind.clauses)}] {where}{self.message} "
                f"(expected {self.expected!r}, actual {self.actual!r})")
