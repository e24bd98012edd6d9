"""What one stream saw since a mark: its events and the violations the reference frontend
recorded (the device keeps both for the whole connection, across cases)."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.frontend.stream import FrontendStream
from harness.frontend.stream_core import EventInfo
from harness.frontend.violations import Kind, Violation
from protocol_models.constants import Evt


class StreamWatch:
    """Events and violations of ``stream`` from now on."""

    def __init__(self, stream: FrontendStream) -> None:
        self.stream = stream
        self._events0 = len(stream.events)
        self._violations0 = len(stream.violations)

    def mark(self) -> int:
        """A point in the event sequence, for :meth:`since`."""
        return len(self.stream.events)

    def events(self) -> list[EventInfo]:
        return self.stream.events[self._events0:]

    def since(self, mark: int) -> list[EventInfo]:
        return self.stream.events[mark:]

    def positions(self, mark: int | None = None) -> list[EventInfo]:
        """CUR_POS events since ``mark`` (default: since the watch began)."""
        evs = self.events() if mark is None else self.since(mark)
        return [e for e in evs if e.type == Evt.CUR_POS]

    def violations(self, *kinds: Kind) -> list[Violation]:
        found = self.stream.violations[self._violations0:]
        return [v for v in found if not kinds or v.kind in kinds]

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        return self.stream.wait_for(predicate, timeout)

    def wait_positions(self, n: int, timeout: float, mark: int | None = None) -> bool:
        """Wait until at least ``n`` CUR_POS events arrived since ``mark``."""
        return self.wait(lambda: len(self.positions(mark)) >= n, timeout)

    def quiet_for(self, seconds: float) -> list[EventInfo]:
        """Let ``seconds`` pass; the events that arrived meanwhile."""
        mark = self.mark()
        time.sleep(seconds)
        return self.since(mark)
