"""The sans-IO XenBus state machine against Linux sndback_changed / xen_drv_remove
(SND-A-10..A-21, the A-14 table)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.card_config import ConfigError, read_card_config
from harness.frontend.xenbus_fsm import (
    AllocateAndPublishTransport,
    BackendPolled,
    BackendStateChanged,
    ConfigRead,
    CreateDevice,
    DestroyDevice,
    DeviceCreated,
    FreeChannels,
    FrontendFsm,
    FsmUsageError,
    LogError,
    PollBackendState,
    ReadConfig,
    TeardownRequested,
    Timeout,
    TransportPublished,
    WatchBackendState,
    WriteFatalError,
    WriteFrontendState,
    driver_state,
    polled_state,
)
from protocol_models.constants import XenErrno
from protocol_models.xenbus import XenbusState as S

CFG = read_card_config({"0/0/type": b"p", "0/1/type": b"c"})
BAD = ConfigError(XenErrno.ENODEV, "no devices", ".")


def be(state: int) -> BackendStateChanged:
    return BackendStateChanged(int(state))


def connect_to_initialised(fsm: FrontendFsm) -> None:
    assert fsm.start() == [WatchBackendState()]
    assert fsm.handle(be(S.InitWait)) == [ReadConfig()]  # watch's initial firing
    assert fsm.handle(ConfigRead(CFG)) == [AllocateAndPublishTransport(CFG.streams)]
    assert fsm.handle(TransportPublished(True)) == [WriteFrontendState(S.Initialised)]


def reach(fe: S) -> FrontendFsm:
    """A machine in FE state ``fe``, by the way Linux gets there."""
    fsm = FrontendFsm()
    if fe == S.Initialising:
        fsm.start()
        fsm.handle(be(S.Initialising))
    elif fe == S.Initialised:
        connect_to_initialised(fsm)
    elif fe == S.Connected:
        connect_to_initialised(fsm)
        fsm.handle(be(S.Connected))
        fsm.handle(DeviceCreated(True))
    elif fe == S.Closing:  # fatal: config error, nothing allocated
        fsm.start()
        fsm.handle(be(S.InitWait))
        fsm.handle(ConfigRead(BAD))
    elif fe == S.Closed:  # driver removed
        connect_to_initialised(fsm)
        fsm.handle(TeardownRequested())
        fsm.handle(BackendPolled(S.InitWait))
    assert fsm.state == fe
    return fsm


FREE_ALL = {S.Initialising: [], S.Initialised: [FreeChannels()],
            S.Connected: [DestroyDevice(), FreeChannels()], S.Closing: []}


def expected(fe: S, be_state: S) -> list:
    """SND-A-14, written out independently of the implementation."""
    if fe == S.Closed:
        return []  # removed driver: no callbacks any more
    to_init = [] if fe == S.Initialising else [WriteFrontendState(S.Initialising)]
    disconnect = FREE_ALL[fe] + to_init
    if be_state in (S.Unknown, S.Closed, S.Initialising):
        return disconnect
    if be_state == S.InitWait:
        return [*disconnect, ReadConfig()]
    if be_state == S.Connected:
        return [CreateDevice(CFG)] if fe == S.Initialised else []  # SND-A-13
    return []  # 3, 5, 7, 8 ignored


FE_STATES = [S.Initialising, S.Initialised, S.Connected, S.Closing, S.Closed]


@pytest.mark.parametrize("be_state", list(S), ids=lambda s: f"BE{int(s)}")
@pytest.mark.parametrize("fe", FE_STATES, ids=lambda s: f"FE{int(s)}")
def test_a14_table(fe: S, be_state: S) -> None:
    fsm = reach(fe)
    assert fsm.handle(be(be_state)) == expected(fe, be_state)


def test_full_connect_sndA10_A13() -> None:
    fsm = FrontendFsm()
    fsm.start()
    assert fsm.handle(be(S.Initialising)) == []  # already Initialising: no write
    assert fsm.handle(be(S.InitWait)) == [ReadConfig()]
    assert fsm.handle(ConfigRead(CFG)) == [AllocateAndPublishTransport(CFG.streams)]
    assert fsm.state == S.Initialising  # not Initialised before publishing (SND-A-10)
    assert fsm.handle(TransportPublished(True)) == [WriteFrontendState(S.Initialised)]
    assert fsm.handle(be(S.Connected)) == [CreateDevice(CFG)]
    assert fsm.handle(DeviceCreated(True)) == [WriteFrontendState(S.Connected)]
    assert fsm.state == S.Connected and fsm.transport_published and fsm.device_created
    assert [h.fe_state for h in fsm.history][-1] == S.Connected


def test_initial_fire_with_backend_already_connected_is_ignored() -> None:
    fsm = FrontendFsm()
    fsm.start()
    assert fsm.handle(be(S.Connected)) == []
    assert fsm.handle(be(S.InitWait)) == [ReadConfig()]


def test_reconnect_after_backend_restart_sndA17() -> None:
    fsm = reach(S.Connected)
    assert fsm.handle(be(S.Closed)) == [DestroyDevice(), FreeChannels(),
                                        WriteFrontendState(S.Initialising)]
    assert fsm.handle(be(S.Initialising)) == []
    assert fsm.handle(be(S.InitWait)) == [ReadConfig()]
    fsm.handle(ConfigRead(CFG))
    assert fsm.handle(TransportPublished(True)) == [WriteFrontendState(S.Initialised)]
    fsm.handle(be(S.Connected))
    assert fsm.handle(DeviceCreated(True)) == [WriteFrontendState(S.Connected)]
    # straight back to InitWait while connected: disconnect and re-init at once
    assert fsm.handle(be(S.InitWait)) == [DestroyDevice(), FreeChannels(),
                                          WriteFrontendState(S.Initialising), ReadConfig()]


def test_events_during_a_step_are_queued_in_order() -> None:
    fsm = FrontendFsm()
    fsm.start()
    fsm.handle(be(S.InitWait))
    assert fsm.handle(be(S.Connected)) == []  # arrives while reading the config
    assert fsm.pending == "ConfigRead"
    fsm.handle(ConfigRead(CFG))
    # replayed after publishing: FE is Initialised by then, so it connects
    assert fsm.handle(TransportPublished(True)) == [WriteFrontendState(S.Initialised),
                                                    CreateDevice(CFG)]
    with pytest.raises(FsmUsageError):
        fsm.handle(ConfigRead(CFG))


def test_fatal_config_error_sndA21() -> None:
    fsm = FrontendFsm()
    fsm.start()
    fsm.handle(be(S.InitWait))
    actions = fsm.handle(ConfigRead(BAD))
    assert actions == [WriteFatalError(XenErrno.ENODEV, "initializing frontend"),
                       WriteFrontendState(S.Closing)]
    assert actions[0].value == "19 initializing frontend"
    # the backend restarting brings it back (A-14: BE 6 -> disconnect, BE 2 -> retry)
    assert fsm.handle(be(S.Closed)) == [WriteFrontendState(S.Initialising)]


def test_fatal_publish_and_device_failures() -> None:
    fsm = FrontendFsm()
    fsm.start()
    fsm.handle(be(S.InitWait))
    fsm.handle(ConfigRead(CFG))
    assert fsm.handle(TransportPublished(False, XenErrno.ENOSPC)) == [
        WriteFatalError(XenErrno.ENOSPC, "writing XenStore"), WriteFrontendState(S.Closing),
        WriteFatalError(XenErrno.ENOSPC, "initializing frontend")]
    assert fsm.handle(be(S.Connected)) == []  # not Initialised: ignored
    # channels were allocated, so the next disconnect frees them
    assert fsm.handle(be(S.Initialising)) == [FreeChannels(),
                                             WriteFrontendState(S.Initialising)]
    fsm = reach(S.Initialised)
    fsm.handle(be(S.Connected))
    assert fsm.handle(DeviceCreated(False, XenErrno.ENOMEM)) == [
        WriteFatalError(XenErrno.ENOMEM, "initializing frontend"),
        WriteFrontendState(S.Closing)]
    assert not fsm.device_created


def test_teardown_backend_reaches_initwait_sndA15() -> None:
    fsm = reach(S.Connected)
    assert fsm.handle(TeardownRequested()) == [WriteFrontendState(S.Closing),
                                               PollBackendState(0.0)]
    assert fsm.handle(be(S.Closed)) == []  # no otherend callbacks during removal
    assert fsm.handle(BackendPolled(S.Connected)) == [PollBackendState(0.010)]
    assert fsm.handle(BackendPolled(S.InitWait)) == [DestroyDevice(), FreeChannels(),
                                                     WriteFrontendState(S.Closed)]
    assert fsm.removed and fsm.handle(be(S.InitWait)) == []


def test_teardown_backend_never_reaches_initwait() -> None:
    fsm = reach(S.Initialised)
    fsm.handle(TeardownRequested())
    polls = 1  # the first read happens right away
    while True:
        actions = fsm.handle(BackendPolled(S.Connected))
        if actions != [PollBackendState(0.010)]:
            break
        polls += 1
    assert polls == 100  # 100 reads, 99 sleeps of 10 ms
    assert actions == [LogError("Backend state is Connected while removing driver"),
                       FreeChannels(), WriteFrontendState(S.Closed)]


def test_teardown_cut_short_by_timeout() -> None:
    fsm = reach(S.Initialised)
    fsm.handle(TeardownRequested())
    fsm.handle(BackendPolled(S.Closing))
    actions = fsm.handle(Timeout())
    assert isinstance(actions[0], LogError) and actions[-1] == WriteFrontendState(S.Closed)


def test_timeout_outside_teardown_changes_nothing() -> None:
    fsm = reach(S.Initialised)
    assert fsm.handle(Timeout()) == [] and fsm.state == S.Initialised
    assert isinstance(fsm.history[-1].event, Timeout)


@pytest.mark.parametrize(("raw", "driver", "polled"), [
    (None, 0, 0), (b"4", 4, 4), (b" 2\n", 2, 2), (b"x", 0, 0), (b"-1", -1, 0),
    (b"9", 9, 9), (b"", 0, 0),
])
def test_state_parsing(raw: bytes | None, driver: int, polled: int) -> None:
    assert driver_state(raw) == driver and polled_state(raw) == polled


def test_out_of_range_backend_state_ignored() -> None:
    fsm = reach(S.Connected)
    assert fsm.handle(BackendStateChanged(9)) == []
    assert fsm.handle(BackendStateChanged(-1)) == []


# --- random backends ---------------------------------------------------------------------

be_events = st.one_of(
    st.integers(0, 8).map(BackendStateChanged),
    st.just(TeardownRequested()),
    st.just(Timeout()),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(be_events, max_size=40), outcomes=st.lists(st.booleans(), max_size=60),
       polls=st.lists(st.integers(0, 8), max_size=120))
def test_random_backend_invariants(events: list, outcomes: list[bool],
                                   polls: list[int]) -> None:
    fsm = FrontendFsm()
    fsm.start()
    outcomes_it, polls_it = iter(outcomes), iter(polls)
    seen_initialised_then_be_connected = False
    allocated = False
    writes: list[S] = [S.Initialising]
    for event in events:
        todo = [event]
        while todo:
            ev = todo.pop(0)
            if isinstance(ev, BackendStateChanged) and ev.state == S.Connected and \
                    fsm.state == S.Initialised and not fsm.removing and fsm.pending is None:
                seen_initialised_then_be_connected = True
            before = fsm.state
            actions = fsm.handle(ev)
            for a in actions:
                if isinstance(a, WriteFrontendState):
                    assert a.state != writes[-1]  # switch_state never rewrites a state
                    writes.append(a.state)
                    if a.state != S.Connected:
                        seen_initialised_then_be_connected = False
                    if a.state == S.Initialised:  # only once the transport is out
                        assert isinstance(ev, TransportPublished) and ev.ok
                elif isinstance(a, AllocateAndPublishTransport):
                    assert not allocated  # always freed before re-allocating
                    allocated = True
                    todo.append(TransportPublished(next(outcomes_it, True)))
                elif isinstance(a, FreeChannels):
                    assert allocated  # nothing freed twice
                    allocated = False
                elif isinstance(a, ReadConfig):
                    todo.append(ConfigRead(CFG if next(outcomes_it, True) else BAD))
                elif isinstance(a, CreateDevice):
                    # SND-A-13: only BE=Connected seen while FE=Initialised
                    assert isinstance(ev, BackendStateChanged) and before == S.Initialised
                    assert fsm.transport_published
                    todo.append(DeviceCreated(next(outcomes_it, True)))
                elif isinstance(a, PollBackendState):
                    todo.append(BackendPolled(next(polls_it, S.InitWait)))
            # invariants after every step
            assert fsm.state in (S.Initialising, S.Initialised, S.Connected, S.Closing,
                                 S.Closed)
            assert fsm.state == writes[-1]
            if fsm.state == S.Connected:
                assert fsm.transport_published and fsm.device_created
                assert seen_initialised_then_be_connected
            if fsm.state == S.Initialised:
                assert fsm.transport_published
            if fsm.removed:
                assert fsm.state == S.Closed and not allocated and not fsm.device_created
        if fsm.removed:
            assert fsm.handle(BackendStateChanged(2)) == []
