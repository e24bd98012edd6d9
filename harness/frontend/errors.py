"""Exceptions of the reference frontend's driver. Protocol violations by the backend are
never exceptions (they are recorded, see :mod:`violations`); these are the outcomes a caller
of the typed API has to handle."""

from __future__ import annotations


class FrontendError(Exception):
    """Base of every reference-frontend error."""


class RequestTimeout(FrontendError, TimeoutError):
    """No matching response within the timeout (Linux: ``VSND_WAIT_BACK_MS`` = 3000 ms,
    ``-ETIMEDOUT`` to ALSA; SND-G-02). The request stays on the ring; a late response is
    recorded as such."""

    def __init__(self, stream: str, request_id: int, operation: str, timeout_ms: int) -> None:
        self.stream, self.request_id, self.operation = stream, request_id, operation
        self.timeout_ms = timeout_ms
        super().__init__(f"stream {stream}: no response to {operation} id {request_id} "
                         f"within {timeout_ms} ms")


class NotConnected(FrontendError):
    """The stream's channels are not connected (Linux returns ``-EIO`` without sending
    anything, SND-G-02)."""


class Disconnected(NotConnected):
    """The channels were freed while waiting (backend went away; Linux wakes waiters with
    ``-EIO``, SND-G-02 / A-14)."""


class RingFull(FrontendError):
    """Sending would overwrite an unanswered request slot (SND-B-07)."""


class ConnectTimeout(FrontendError, TimeoutError):
    """The device did not reach XenBus Connected in time."""


class SharedBufferError(FrontendError):
    """A shared-buffer access outside the buffer, or with no buffer allocated."""
