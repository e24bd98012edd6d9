"""The reference frontend's defect catalogue: realistic frontend bugs it can be told to
have (``sndif-harness certify-frontend --fe-defect NAME``), so that the frontend judge
(``harness.fejudge``, run inside the reference backend) proves it catches a wrong frontend.

Each hook is one ``if device.defects.has("name")`` where the bug would live; with none set
the frontend behaves as Linux's ``xen-snd-front`` does. A device takes the set given to it,
else the one :func:`injected` makes current (so that a world building the frontend itself
gets it too).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from harness.defect_catalogue import AREAS, Defect, DefectSet, UnknownDefect, find
from harness.defect_catalogue import defect as _d

LISTING = "'sndif-harness defects --frontend' lists them"

CATALOGUE: tuple[Defect, ...] = (
    # (A) XenStore / XenBus state
    _d("connected-without-initialised", "A", "SND-A-10 SND-A-13",
       "after publishing the transport writes Connected instead of Initialised, without "
       "waiting for the backend to connect"),
    _d("closed-without-closing", "A", "SND-A-15",
       "at teardown writes Closed at once, never Closing, without waiting for the backend"),
    _d("missing-event-channel", "A", "SND-A-10",
       "publishes ring-ref, evt-ring-ref and evt-event-channel but no event-channel"),
    _d("wrong-event-channel", "A", "SND-A-11",
       "publishes an event-channel port it never allocated (its port + 1000)"),
    _d("request-before-connected", "A", "SND-A-13 SND-G-02",
       "sends a HW_PARAM_QUERY on its first stream before it writes Connected"),
    # (B) rings
    _d("ring-header-not-zeroed", "B", "SND-B-01",
       "leaves 0xff in the request ring's pvt and padding (no full SHARED_RING_INIT)"),
    _d("no-request-notify", "B", "SND-B-02",
       "pushes requests without ever notifying event-channel"),
    _d("no-rsp-event-rearm", "B", "SND-B-06",
       "never re-arms rsp_event after consuming responses"),
    _d("repeated-request-id", "B", "SND-B-11",
       "gives every request id 7 instead of a per-stream counter"),
    _d("reserved-not-zero", "B", "SND-B-12",
       "fills the request header's reserved bytes with 0x5a (not stale slot bytes)"),
    _d("no-event-consumption", "B", "SND-B-14",
       "reads CUR_POS events but never advances in_cons"),
    # (C) buffers
    _d("gref-zero-in-directory", "C", "SND-C-05",
       "writes gref 0 in the second slot of the page directory"),
    _d("buffer-size-mismatch", "C", "SND-C-02",
       "sends buffer_sz one page larger than the buffer its directory lists"),
    _d("write-beyond-buffer", "C", "SND-C-08",
       "sends WRITE lengths 4096 octets past what it wrote, beyond the buffer's end"),
    _d("no-revoke-at-close", "C", "SND-C-12 SND-C-03",
       "never revokes a shared buffer's grants (after CLOSE, at reopen or at teardown)"),
    # (D) triggers
    _d("trigger-before-open", "D", "SND-D-02",
       "sends TRIGGER START on a stream before its first OPEN"),
    _d("unknown-trigger", "D", "SND-D-01",
       "sends PAUSE as trigger type 7"),
    # (F) negotiation
    _d("empty-hw-query", "F", "SND-F-01",
       "sends HW_PARAM_QUERY with an empty rate range (min > max)"),
    # (H) volume
    _d("volume-not-written", "H", "SND-H-02 SND-H-01",
       "sends SET_VOLUME without writing the values: the region still holds audio"),
)

BY_NAME: dict[str, Defect] = {d.name: d for d in CATALOGUE}


def lookup(name: str) -> Defect:
    return find(BY_NAME, name, LISTING)


class FrontendDefects(DefectSet):
    """The active defects of one frontend device."""

    BY_NAME = BY_NAME
    LISTING = LISTING


#: The correct frontend.
NO_DEFECTS = FrontendDefects()
_current = NO_DEFECTS


def current() -> FrontendDefects:
    """The set a device built without an explicit one takes."""
    return _current


@contextlib.contextmanager
def injected(names: Iterable[str]) -> Iterator[FrontendDefects]:
    """Devices created inside the block have these defects (validated first)."""
    global _current
    chosen, old = FrontendDefects.of(names), _current
    _current = chosen
    try:
        yield chosen
    finally:
        _current = old


__all__ = ["AREAS", "BY_NAME", "CATALOGUE", "NO_DEFECTS", "FrontendDefects",
           "UnknownDefect", "current", "injected", "lookup"]
