"""The stateful exploration: a Hypothesis ``RuleBasedStateMachine`` that drives one stream
of the supervised backend through OPEN (valid and malformed, hostile buffers included),
WRITE/READ inside and outside the buffer, TRIGGER of any type, CLOSE, HW_PARAM_QUERY and
raw malformed requests; the oracles run after every request and, as invariants, after
every step (:class:`~harness.fuzz.driver.FuzzDriver`). One example is one supervisor
case."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.card_config import PcmHw
from protocol_models import codec
from protocol_models.constants import Op

from . import fields as F
from . import strategies as S
from .driver import BufferPlan, FuzzDriver


def _plan(choice: S.OpenChoice) -> BufferPlan:
    return BufferPlan(choice.buffer_sz, choice.shape.value, choice.buffer_pages,
                      choice.readonly, choice.foreign,
                      keep_gref="gref_directory" in choice.fields)


def machine_class(driver: FuzzDriver, hw: PcmHw, name: str = "fuzz"
                  ) -> type[RuleBasedStateMachine]:
    """A machine bound to ``driver`` (its supervisor and stream) and the stream's
    configured space ``hw`` (what "valid" means)."""
    numbers = itertools.count(1)

    def is_open(self: Any) -> bool:
        return driver.model.is_open

    class SndifStream(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            driver.begin(f"{name}::example-{next(numbers)}")

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

        @invariant()
        def oracles_hold(self) -> None:
            driver.check_invariants()

        def teardown(self) -> None:
            late = driver.end()
            if late is not None:
                raise late

    SndifStream.__name__ = SndifStream.__qualname__ = "SndifStream"
    return SndifStream
