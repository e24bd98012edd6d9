"""The short sanity sequence run after a case that may have disturbed the backend: on the
first playback stream, OPEN, WRITE two periods, START, one CUR_POS, STOP, CLOSE. A
backend that cannot do this any more is restarted, and the case says so."""

from __future__ import annotations

from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import FrontendError
from harness.frontend.open_params import choose_open_params

PERIODS = 2  # written before START
BUFFER_BYTES = 4096  # four periods of 256 stereo S16 frames


def sanity_problem(dev: FrontendDevice | None, timeout: float) -> str | None:
    """None when the sequence passes (or there is no connected playback stream to run it
    on); else what went wrong, naming the step."""
    if dev is None:
        return None
    stream = next((s for s in dev.streams if s.type == "p" and s.connected), None)
    if stream is None:
        return None
    p = choose_open_params(stream.config.hw, buffer_bytes=BUFFER_BYTES, periods=4)
    if p is None:
        return None  # nothing this small sequence could play on this stream
    rate, fmt, channels, buffer, period = p.args()
    ms = int(timeout * 1000)
    step = "OPEN"
    try:
        resp = stream.open(rate, fmt, channels, buffer, period, timeout_ms=ms)
        if not resp.ok:
            return f"sanity OPEN ({rate} Hz {fmt.name} {channels} ch) answered {resp.status}"
        step = "WRITE"
        resp = stream.write(0, bytes(PERIODS * period), timeout_ms=ms)
        if not resp.ok:
            return f"sanity WRITE answered {resp.status}"
        step = "START"
        before = len(stream.events)
        resp = stream.trigger("start", timeout_ms=ms)
        if not resp.ok:
            return f"sanity START answered {resp.status}"
        step = "CUR_POS"
        if not stream.wait_for(lambda: len(stream.events) > before, timeout):
            return f"sanity: no CUR_POS within {timeout:g} s of START"
        step = "STOP"
        resp = stream.trigger("stop", timeout_ms=ms)
        if not resp.ok:
            return f"sanity STOP answered {resp.status}"
        step = "CLOSE"
        closed = stream.close(timeout_ms=ms)
        if closed is not None and not closed.ok:
            return f"sanity CLOSE answered {closed.status}"
    except FrontendError as exc:
        return f"sanity {step} failed: {exc}"
    return None
