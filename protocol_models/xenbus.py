"""XenBus states (``io/xenbus.h``), stored in XenStore as decimal strings."""

from __future__ import annotations

import enum


class XenbusState(enum.IntEnum):
    Unknown = 0
    Initialising = 1
    InitWait = 2
    Initialised = 3
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8

    def xs(self) -> bytes:
        """The value as written to a ``state`` node."""
        return str(int(self)).encode()

    @classmethod
    def parse(cls, raw: bytes | str | None) -> XenbusState | None:
        """Parse a ``state`` node; None for a missing, non-numeric or unknown value."""
        if raw is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        try:
            return cls(int(text.strip(), 10))
        except ValueError:
            return None
