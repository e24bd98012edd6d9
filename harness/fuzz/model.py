"""What the fuzzer expects of one stream: its state as the protocol defines it, and for
each request whether the backend must accept it, must refuse it, or may do either.

Only what the clauses make firm is expected (SND-C-09, C-14, D-01, G-04, F-01); AMBIG
points (AMBIG-7: PAUSE when not running, ...) and SHOULDs are "either". After a request
whose effect the spec leaves open (a malformed OPEN that succeeded, a trigger it may or
may not take) the state is UNKNOWN and nothing is expected until OPEN or CLOSE settle it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.card_config import PcmHw
from protocol_models.constants import Op, PcmFormat, Trigger


class State(enum.Enum):
    CLOSED = "closed"
    OPENED = "opened"
    RUNNING = "running"
    PAUSED = "paused"
    UNKNOWN = "unknown"  # the spec does not say what the last request left


OPEN_STATES = (State.OPENED, State.RUNNING, State.PAUSED)


class Expect(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    EITHER = "either"


@dataclass(frozen=True)
class Expectation:
    expect: Expect
    why: str = ""  # the clause and the reason, for the finding's message
    clause: str = ""


EITHER = Expectation(Expect.EITHER)

#: Triggers a stream in this state must take (SND-D-02..D-05), and where they lead.
MUST_TAKE: dict[tuple[State, int], State] = {
    (State.OPENED, Trigger.START): State.RUNNING,
    (State.RUNNING, Trigger.PAUSE): State.PAUSED,
    (State.RUNNING, Trigger.STOP): State.OPENED,
    (State.PAUSED, Trigger.RESUME): State.RUNNING,
    (State.PAUSED, Trigger.START): State.RUNNING,  # D-05: START while PAUSED must work
    (State.PAUSED, Trigger.STOP): State.OPENED,
}
#: Where a trigger the backend took (status 0) leads when the spec leaves it open.
TAKEN: dict[int, State] = {Trigger.START: State.RUNNING, Trigger.RESUME: State.RUNNING,
                           Trigger.PAUSE: State.PAUSED, Trigger.STOP: State.OPENED}


@dataclass
class StreamModel:
    """The stream's expected state; ``buffer_sz`` of the OPEN in force."""

    playback: bool
    state: State = State.CLOSED
    buffer_sz: int = 0

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def expect(self, op: int, *, valid_open: bool = False, offset: int = 0,
               length: int = 0, trigger: int = 0, valid_query: bool = False
               ) -> Expectation:
        s = self.state
        if op == Op.OPEN:
            if valid_open:
                return Expectation(Expect.SUCCESS, "an OPEN inside the stream's configured "
                                   "space with a valid buffer", "SND-C-14")
            return EITHER  # C-15 is a SHOULD
        if op == Op.CLOSE:
            if s in OPEN_STATES:
                return Expectation(Expect.SUCCESS, "CLOSE of an open stream", "SND-C-12")
            if s is State.CLOSED:  # Linux sends it routinely (ALSA hw_free)
                return Expectation(Expect.SUCCESS, "CLOSE of a stream that is not open "
                                   "(SHOULD: idempotent close)", "SND-C-12")
            return EITHER
        if op in (Op.READ, Op.WRITE):
            if s is State.CLOSED:
                return Expectation(Expect.FAILURE, "READ/WRITE without a successful OPEN",
                                   "SND-C-09")
            if s in OPEN_STATES:
                if offset >= self.buffer_sz or length > self.buffer_sz - offset:
                    return Expectation(Expect.FAILURE, f"region [{offset}, +{length}) "
                                       f"outside the {self.buffer_sz}-octet buffer",
                                       "SND-C-09")
                if (op == Op.WRITE) == self.playback and length > 0:
                    return Expectation(Expect.SUCCESS, "a transfer inside the buffer of "
                                       "an open stream", "SND-C-10")
            return EITHER
        if op == Op.TRIGGER:
            if trigger not in set(Trigger):
                return Expectation(Expect.FAILURE, f"unknown trigger type {trigger}",
                                   "SND-D-01")
            if (s, trigger) in MUST_TAKE:
                return Expectation(Expect.SUCCESS, f"{Trigger(trigger).name} while "
                                   f"{s.value}", "SND-D-02")
            return EITHER
        if op == Op.HW_PARAM_QUERY:
            if valid_query:
                return Expectation(Expect.SUCCESS, "a query of the stream's whole "
                                   "configured space", "SND-F-01")
            return EITHER
        if op not in set(Op):
            return Expectation(Expect.FAILURE, f"unknown operation {op}", "SND-G-04")
        # volume and mute: optional (H-04), but never without OPEN or out of bounds (H-05)
        if s is State.CLOSED:
            return Expectation(Expect.FAILURE, f"{Op(op).name} without a successful OPEN",
                               "SND-H-05")
        if s in OPEN_STATES and (offset >= self.buffer_sz
                                 or length > self.buffer_sz - offset):
            return Expectation(Expect.FAILURE, f"{Op(op).name} region [{offset}, +{length}) "
                               f"outside the {self.buffer_sz}-octet buffer", "SND-H-05")
        return EITHER

    def after(self, op: int, ok: bool, *, buffer_sz: int = 0, valid_open: bool = False,
              trigger: int = 0) -> None:
        """The state after the backend answered ``op`` with success (``ok``) or not."""
        s = self.state
        if op == Op.OPEN:
            if ok:
                self.state = State.OPENED if valid_open else State.UNKNOWN
                self.buffer_sz = buffer_sz
            else:
                self.state = State.UNKNOWN  # C-13: the old OPEN may or may not be gone
        elif op == Op.CLOSE:
            if ok or s is State.CLOSED:
                self.state = State.CLOSED
            else:
                self.state = State.UNKNOWN
        elif op == Op.TRIGGER and ok and s in OPEN_STATES:
            self.state = MUST_TAKE.get((s, trigger), TAKEN.get(trigger, State.UNKNOWN))
            if (s, trigger) not in MUST_TAKE and trigger in (Trigger.PAUSE, Trigger.RESUME):
                self.state = State.UNKNOWN  # AMBIG-7: PAUSE/RESUME taken out of order
        elif op == Op.TRIGGER and ok and s is State.CLOSED:
            self.state = State.UNKNOWN


def invalid_open(rec: Any, hw: PcmHw) -> str | None:
    """Why an OPEN is outside the stream's configured space in one of the ways C-15 lists
    (None: it is not, as far as its fields go)."""
    fmt = rec.pcm_format
    if fmt not in set(PcmFormat):
        return f"unknown pcm_format {fmt}"
    if PcmFormat(fmt) not in hw.formats:
        return f"pcm_format {PcmFormat(fmt).name} is not the stream's"
    if not hw.channels_min <= rec.pcm_channels <= hw.channels_max:
        return (f"pcm_channels {rec.pcm_channels} outside [{hw.channels_min}, "
                f"{hw.channels_max}]")
    if not hw.rate_min <= rec.pcm_rate <= hw.rate_max:
        return f"pcm_rate {rec.pcm_rate} outside [{hw.rate_min}, {hw.rate_max}]"
    if rec.buffer_sz == 0:
        return "buffer_sz 0"
    if rec.period_sz > rec.buffer_sz:
        return f"period_sz {rec.period_sz} > buffer_sz {rec.buffer_sz}"
    return None


def disjoint_from_card(asked: Mapping[str, int], hw: PcmHw) -> str | None:
    """Why a HW_PARAM_QUERY's space has nothing in common with the stream's (formats,
    rates, channels: the parts that do not depend on a frame size), or None."""
    if not asked["formats"] & hw.formats_mask:
        return f"formats {asked['formats']:#x} share nothing with the stream's"
    if asked["rates_min"] > hw.rate_max or asked["rates_max"] < hw.rate_min:
        return (f"rates [{asked['rates_min']}, {asked['rates_max']}] outside "
                f"[{hw.rate_min}, {hw.rate_max}]")
    if asked["channels_min"] > hw.channels_max or asked["channels_max"] < hw.channels_min:
        return (f"channels [{asked['channels_min']}, {asked['channels_max']}] outside "
                f"[{hw.channels_min}, {hw.channels_max}]")
    return None
