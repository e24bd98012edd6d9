"""The scenario ``certify-frontend`` drives the reference frontend through, so that the
judging backend sees every frontend-side clause it can: queries, OPEN, playback (WRITE,
START, PAUSE/RESUME, STOP), volume and mute, CLOSE, reopen, capture (READ). Teardown is
the caller's (the device's close: Closing, Closed).

Every step is bounded by the request timeout; an error is recorded and the scenario goes
on, except when the stream can no longer talk (a timeout or a lost connection)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol_models.constants import PcmFormat

from .driver import FrontendDevice
from .errors import Disconnected, FrontendError, NotConnected, RequestTimeout
from .stream import FrontendStream

RATE, FMT, CHANNELS = 48000, PcmFormat.S16_LE, 2
BUFFER, PERIOD = 16384, 4096
#: Audio with no zero s32 word, so a volume region left holding it is recognisable.
PATTERN = bytes((i * 7 + 1) & 0xFF or 1 for i in range(BUFFER))


@dataclass
class Log:
    steps: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the scenario could not go on


class _Stop(Exception):
    pass


def _step(log: Log, what: str, fn: Callable[[], object]) -> None:
    try:
        resp = fn()
    except (RequestTimeout, Disconnected, NotConnected) as exc:
        log.errors.append(f"{what}: {exc}")
        raise _Stop(f"{what}: {exc}") from None
    except FrontendError as exc:
        log.errors.append(f"{what}: {exc}")
        return
    status = getattr(resp, "status", None)
    log.steps.append(f"{what}: {status}" if status is not None else what)


def _play(s: FrontendStream, log: Log) -> None:
    _step(log, "HW_PARAM_QUERY", s.hw_param_query)
    _step(log, "OPEN", lambda: s.open(RATE, FMT, CHANNELS, BUFFER, PERIOD))
    _step(log, "WRITE", lambda: s.write(0, PATTERN))
    _step(log, "START", lambda: s.trigger("START"))
    time.sleep(0.12)
    half = BUFFER // 2
    _step(log, "WRITE", lambda: s.write(0, PATTERN[:half]))
    _step(log, "WRITE", lambda: s.write(half, PATTERN[half:]))
    time.sleep(0.1)
    _step(log, "PAUSE", lambda: s.trigger("PAUSE"))
    time.sleep(0.05)
    _step(log, "RESUME", lambda: s.trigger("RESUME"))
    _step(log, "WRITE", lambda: s.write(0, PATTERN[:half]))
    time.sleep(0.2)
    _step(log, "STOP", lambda: s.trigger("STOP"))
    _step(log, "SET_VOLUME", lambda: s.set_volume([-6000] * CHANNELS))
    _step(log, "GET_VOLUME", lambda: s.get_volume(CHANNELS))
    _step(log, "MUTE", lambda: s.mute([1] * CHANNELS))
    _step(log, "UNMUTE", lambda: s.unmute([1] * CHANNELS))
    _step(log, "CLOSE", s.close)
    # reopen, as ALSA's hw_params + prepare do it: queries first, a new buffer
    _step(log, "HW_PARAM_QUERY", s.hw_param_query)
    _step(log, "OPEN", lambda: s.open(RATE, FMT, CHANNELS, BUFFER, PERIOD))
    _step(log, "WRITE", lambda: s.write(0, PATTERN))
    _step(log, "START", lambda: s.trigger("START"))
    time.sleep(0.1)
    _step(log, "STOP", lambda: s.trigger("STOP"))
    _step(log, "CLOSE", s.close)


def _capture(s: FrontendStream, log: Log) -> None:
    _step(log, "HW_PARAM_QUERY", s.hw_param_query)
    _step(log, "OPEN", lambda: s.open(RATE, FMT, CHANNELS, BUFFER, PERIOD))
    _step(log, "START", lambda: s.trigger("START"))
    time.sleep(0.15)
    _step(log, "READ", lambda: s.read(0, PERIOD))
    _step(log, "READ", lambda: s.read(PERIOD, PERIOD))
    _step(log, "STOP", lambda: s.trigger("STOP"))
    _step(log, "CLOSE", s.close)


def run_scenario(dev: FrontendDevice) -> Log:
    """Every stream of ``dev``: playback ones played, capture ones recorded."""
    log = Log()
    for s in dev.streams:
        try:
            (_play if s.type == "p" else _capture)(s, log)
        except _Stop as exc:
            log.stopped = f"stream {s.path}: {exc}"
            break
    return log
