"""The stateful exploration: a Hypothesis ``RuleBasedStateMachine`` that drives one stream
of the supervised backend through OPEN (valid and malformed, hostile buffers included),
WRITE/READ inside and outside the buffer, TRIGGER of any type, CLOSE, HW_PARAM_QUERY and
raw malformed requests; the oracles run after every request and, as invariants, after
every step (:class:`~harness.fuzz.driver.FuzzDriver`). One example is one supervisor
case."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st
from hypothesis import target
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.card_config import PcmHw
from harness.frontend.stream_core import HW_PARAM_FIELDS
from protocol_models import codec
from protocol_models.constants import Op, Trigger
from protocol_models.xenbus import XenbusState

from . import fields as F
from . import strategies as S
from .driver import BufferPlan, FuzzDriver, Step
from .model import MUST_TAKE, State


def _plan(choice: S.OpenChoice) -> BufferPlan:
    return BufferPlan(choice.buffer_sz, choice.shape.value, choice.buffer_pages,
                      choice.readonly, choice.foreign,
                      keep_gref="gref_directory" in choice.fields)


#: The rule groups: ``core`` (OPEN, READ/WRITE, TRIGGER, CLOSE, queries, raw malformed
#: requests), ``reserved`` (valid requests with reserved bytes set, SND-B-12), ``events``
#: (play: short periods, data written, time let pass; CUR_POS judged), ``hwquery``
#: (narrowed, empty and repeated HW_PARAM_QUERY, area F), ``volume`` (area H),
#: ``xenstore`` (the frontend restarting or closing, the toolstack removing the device).
GROUPS = ("core", "reserved", "events", "hwquery", "volume", "xenstore")


def _fields(raw: bytes) -> dict[str, Any]:
    rec = codec.decode_req(raw)
    return {k: getattr(rec, k) for k in HW_PARAM_FIELDS}


def _space(raw: bytes) -> dict[str, int]:
    return {k: int(v) for k, v in _fields(raw).items()}


def _aligned(driver: FuzzDriver, length: int) -> st.SearchStrategy[int]:
    """An offset where ``length`` octets fit in the buffer of the OPEN in force."""
    size = driver.model.buffer_sz
    return st.integers(0, max(0, size - length))


def machine_class(driver: FuzzDriver, hw: PcmHw, name: str = "fuzz",
                  groups: Iterable[str] | None = None) -> type[RuleBasedStateMachine]:
    """A machine bound to ``driver`` (its supervisor and stream) and the stream's
    configured space ``hw`` (what "valid" means), with the rules of ``groups`` (default:
    all of :data:`GROUPS`)."""
    chosen = set(GROUPS if groups is None else groups)
    unknown = chosen - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown rule group(s) {sorted(unknown)}; known: {GROUPS}")
    numbers = itertools.count(1)

    def is_open(self: Any) -> bool:
        return driver.model.is_open

    class Core:
        @rule(choice=S.valid_open(hw))
        def open_valid(self, choice: S.OpenChoice) -> None:
            driver.request(codec.encode_req(Op.OPEN, **choice.fields),
                           buffer=_plan(choice), valid=True)

        @rule(choice=S.malformed_open(hw))
        def open_malformed(self, choice: S.OpenChoice) -> None:
            driver.request(codec.encode_req(Op.OPEN, **choice.fields), buffer=_plan(choice),
                           valid=choice.valid, malformed=not choice.valid)

        @precondition(is_open)
        @rule(data=st.data(), op=st.sampled_from([Op.WRITE, Op.READ]))
        def transfer_inside(self, data: st.DataObject, op: Op) -> None:
            offset, length = data.draw(S.region(driver.model.buffer_sz, True))
            driver.request(codec.encode_req(op, offset=offset, length=length))

        @precondition(is_open)
        @rule(data=st.data(), op=st.sampled_from([Op.WRITE, Op.READ]))
        def transfer_outside(self, data: st.DataObject, op: Op) -> None:
            offset, length = data.draw(S.region(driver.model.buffer_sz, False))
            driver.request(codec.encode_req(op, offset=offset, length=length),
                           malformed=True)

        @rule(op=st.sampled_from([Op.WRITE, Op.READ]),
              offset=S.boundary(S.U32_MAX, 4096), length=S.boundary(S.U32_MAX, 4096))
        def transfer_any(self, op: Op, offset: int, length: int) -> None:
            driver.request(codec.encode_req(op, offset=offset, length=length),
                           malformed=True)

        @rule(kind=S.trigger_type())
        def trigger(self, kind: int) -> None:
            driver.request(codec.encode_req(Op.TRIGGER, type=kind),
                           malformed=kind in F.UNKNOWN_TRIGGERS)

        @rule()
        def close(self) -> None:
            driver.request(codec.encode_req(Op.CLOSE))

        @rule()
        def hw_param_query(self) -> None:
            if driver.query_template is not None:
                driver.request(driver.query_template, valid=True)

        @rule(raw=S.raw_request())
        def malformed_request(self, raw: bytes) -> None:
            driver.request(raw, malformed=True)

    def running(self: Any) -> bool:
        return driver.model.state is State.RUNNING and driver.open_fields is not None

    def known_open(self: Any) -> bool:
        return driver.model.is_open and driver.open_fields is not None

    class Reserved:
        @precondition(lambda self: driver.query_template is not None)
        @rule(junk=S.reserved_bytes(Op.HW_PARAM_QUERY))
        def query_with_reserved(self, junk: dict[str, Any]) -> None:
            # SND-B-12: stale reserved bytes (Linux leaves them) must not be rejected
            assert driver.query_template is not None
            fields = _fields(driver.query_template)
            driver.request(codec.encode_req(Op.HW_PARAM_QUERY, **{**fields, **junk}),
                           valid=True)

        @rule(choice=S.valid_open(hw), junk=S.reserved_bytes(Op.OPEN))
        def open_with_reserved(self, choice: S.OpenChoice, junk: dict[str, Any]) -> None:
            driver.request(codec.encode_req(Op.OPEN, **{**choice.fields, **junk}),
                           buffer=_plan(choice), valid=True)

    def not_open(self: Any) -> bool:
        return not known_open(self)

    class Events:
        # an OPEN only when none is in force: re-OPENs (C-13) are core's; here the time
        # goes to playing
        @precondition(not_open)
        @rule(choice=S.playable_open(hw))
        def open_playable(self, choice: S.OpenChoice) -> None:
            driver.request(codec.encode_req(Op.OPEN, **choice.fields),
                           buffer=_plan(choice), valid=True)

        @precondition(not_open)
        @rule(choice=S.playable_open(hw, period_zero=True))
        def open_period_zero(self, choice: S.OpenChoice) -> None:
            # valid: E-02 defines period_sz 0 (no events at all)
            driver.request(codec.encode_req(Op.OPEN, **choice.fields),
                           buffer=_plan(choice), valid=True)

        @precondition(known_open)
        @rule(periods=st.integers(1, 8), extra=st.sampled_from([0, 0, 4, 100]))
        def write_periods(self, periods: int, extra: int) -> None:
            f = driver.open_fields
            assert f is not None
            size = f["buffer_sz"]
            offset = driver.written % size
            length = min(size - offset, max(1, periods * (f["period_sz"] or 64) + extra))
            driver.request(codec.encode_req(Op.WRITE, offset=offset, length=length))

        @precondition(lambda self: known_open(self)
                      and driver.model.state is State.OPENED)
        @rule(periods=st.integers(1, 8), extra=st.sampled_from([0, 4, 100]))
        def play(self, periods: int, extra: int) -> None:
            # data, then START: the shortest way to events
            self.write_periods(periods, extra)
            if driver.model.state is State.OPENED:
                driver.request(codec.encode_req(Op.TRIGGER, type=int(Trigger.START)))

        @precondition(known_open)
        @rule(data=st.data())
        def trigger_next(self, data: st.DataObject) -> None:
            # one of the triggers the stream must take in its state (D-02..D-05): walks
            # the state machine instead of waiting for a lucky draw
            state = driver.model.state
            kinds = sorted(int(t) for s, t in MUST_TAKE if s is state)
            kind = data.draw(st.sampled_from(kinds)) if kinds else int(Trigger.STOP)
            driver.request(codec.encode_req(Op.TRIGGER, type=kind))

        @precondition(known_open)
        @rule(data=st.data(), n=st.integers(2, 4))
        def trigger_walk(self, data: st.DataObject, n: int) -> None:
            # several steps of the walk at once: PAUSED then STOP is three triggers deep
            for _ in range(n):
                if not known_open(self):
                    return
                self.trigger_next(data)

        @precondition(known_open)
        @rule()
        def close_open(self) -> None:
            driver.request(codec.encode_req(Op.CLOSE))

        @precondition(known_open)
        @rule(ms=st.integers(5, 120))
        def wait(self, ms: int) -> None:
            driver.execute(Step(b"", action=f"wait:{ms / 1000:g}"))

        @precondition(running)
        @rule()
        def drain(self) -> None:
            driver.execute(Step(b"", action="drain"))

    class HwQuery:
        @precondition(lambda self: driver.query_template is not None)
        @rule(data=st.data(), again=st.booleans())
        def query_narrowed(self, data: st.DataObject, again: bool) -> None:
            assert driver.query_template is not None
            whole = _space(driver.query_template)
            asked = data.draw(S.narrowed_space(whole))
            resp = driver.request(codec.encode_req(Op.HW_PARAM_QUERY, **asked))
            if again and resp is not None and resp.ok and resp.hw_param:
                # F-05: the answer asked again must come back unchanged
                driver.request(codec.encode_req(Op.HW_PARAM_QUERY, **resp.hw_param))

        @precondition(lambda self: driver.query_template is not None)
        @rule(data=st.data())
        def query_empty(self, data: st.DataObject) -> None:
            assert driver.query_template is not None
            asked = data.draw(S.empty_space(_space(driver.query_template), hw))
            driver.request(codec.encode_req(Op.HW_PARAM_QUERY, **asked), malformed=True)

    class Volume:
        @precondition(known_open)
        @rule(data=st.data())
        def set_volume(self, data: st.DataObject) -> None:
            n = driver.channels
            values = data.draw(S.volume_values(n))
            offset = data.draw(_aligned(driver, 4 * n))
            driver.execute_request(codec.encode_req(Op.SET_VOLUME, offset=offset,
                                                    length=4 * n),
                                   payload=struct.pack(f"<{n}i", *values))

        @precondition(known_open)
        @rule(data=st.data())
        def set_then_get(self, data: st.DataObject) -> None:
            # H-03 both ways at once: the values set are the values read back
            self.set_volume(data)
            if known_open(self):
                self.get_volume(data)

        @precondition(known_open)
        @rule(data=st.data())
        def get_volume(self, data: st.DataObject) -> None:
            n = driver.channels
            offset = data.draw(_aligned(driver, 4 * n))
            driver.request(codec.encode_req(Op.GET_VOLUME, offset=offset, length=4 * n))

        @rule(op=st.sampled_from([Op.SET_VOLUME, Op.GET_VOLUME, Op.MUTE, Op.UNMUTE]),
              offset=S.boundary(S.U32_MAX, 4096), length=S.boundary(S.U32_MAX, 4096))
        def volume_any(self, op: Op, offset: int, length: int) -> None:
            driver.request(codec.encode_req(op, offset=offset, length=length),
                           malformed=True)

        @precondition(known_open)
        @rule(op=st.sampled_from([Op.MUTE, Op.UNMUTE]), data=st.data())
        def mute(self, op: Op, data: st.DataObject) -> None:
            n = driver.channels
            offset = data.draw(_aligned(driver, n))
            flags = data.draw(st.binary(min_size=n, max_size=n))
            driver.execute_request(codec.encode_req(op, offset=offset, length=n),
                                   payload=flags)

    class XenStore:
        @precondition(lambda self: driver.lifecycle_actions < 1)
        @rule(state=st.sampled_from([int(XenbusState.Initialising),
                                     int(XenbusState.Closing), int(XenbusState.Closed)]))
        def frontend_state(self, state: int) -> None:
            driver.lifecycle_actions += 1
            driver.execute(Step(b"", action=f"fe-state:{state}"))

        @precondition(lambda self: driver.lifecycle_actions < 1)
        @rule()
        def remove_device(self) -> None:
            driver.lifecycle_actions += 1
            driver.execute(Step(b"", action="remove-device"))

    class Base(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            driver.begin(f"{name}::example-{next(numbers)}")
            if driver.edge_coverage is not None:
                driver.edge_coverage.note()

        @invariant()
        def oracles_hold(self) -> None:
            driver.check_invariants()

        def teardown(self) -> None:
            cov = driver.edge_coverage
            if cov is not None:
                gain = cov.sample()
                if driver.feedback:
                    # steer towards examples that reach edges no earlier one reached
                    target(float(gain), label="new backend edges")
            late = driver.end()
            if late is not None:
                raise late

    mixins: dict[str, type] = {"core": Core, "reserved": Reserved, "events": Events,
                               "hwquery": HwQuery, "volume": Volume, "xenstore": XenStore}
    bases = tuple(mixins[g] for g in GROUPS if g in chosen and g in mixins)
    cls = type("SndifStream", (*bases, Base), {"__qualname__": "SndifStream"})
    return cls
