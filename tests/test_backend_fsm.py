"""The reference backend's XenBus state machine (SND-A-09, A-12, A-16..A-19, G-06)."""

from __future__ import annotations

from harness.backends.reference.xenbus_be import (
    BackendFsm,
    Connect,
    Disconnect,
    SetState,
    WriteError,
)
from protocol_models.xenbus import XenbusState as S


def kinds(actions):
    """The actions that matter, SetState without its log text."""
    return [SetState(a.state) if isinstance(a, SetState) else a for a in actions
            if type(a).__name__ != "Log"]


def test_state_changes_carry_the_previous_state_and_a_reason():
    (act,) = BackendFsm().start(True)
    assert (act.old, act.state) == (S.Initialising, S.InitWait) and act.why


def connected() -> BackendFsm:
    fsm = BackendFsm()
    assert kinds(fsm.start(True)) == [SetState(S.InitWait)]
    assert kinds(fsm.frontend_state(S.Initialised)) == [Connect()]
    assert kinds(fsm.connect_result(True)) == [SetState(S.Connected)]
    return fsm


def test_handshake():
    fsm = connected()
    assert fsm.state == S.Connected
    assert kinds(fsm.frontend_state(S.Connected)) == []


def test_frontend_states_below_initialised_do_not_connect():
    fsm = BackendFsm()
    fsm.start(True)
    for s in (S.Initialising, S.InitWait, S.Closing, S.Closed, S.Connected, None,
              S.Reconfiguring):
        assert kinds(fsm.frontend_state(s)) == [], s
    assert fsm.state == S.InitWait


def test_nothing_before_start():
    fsm = BackendFsm()
    assert fsm.frontend_state(S.Initialised) == []


def test_invalid_config_closes_with_an_error_node():
    fsm = BackendFsm()
    acts = kinds(fsm.start(False, "bad type"))
    assert isinstance(acts[0], WriteError) and acts[1] == SetState(S.Closed)
    assert kinds(fsm.frontend_state(S.Initialised)) == []


def test_frontend_closing_closed_or_restart_tears_down_to_initwait():
    for fe in (S.Closing, S.Closed, S.Initialising, S.Unknown, None):
        fsm = connected()
        assert kinds(fsm.frontend_state(fe)) == [Disconnect(), SetState(S.InitWait)], fe
        # and reconnects when the FE publishes again
        assert kinds(fsm.frontend_state(S.Initialised)) == [Connect()]


def test_unrecoverable_frontend_error_is_handled_as_closed():
    fsm = connected()
    assert kinds(fsm.frontend_failed("req_prod overflow")) == [Disconnect(),
                                                              SetState(S.InitWait)]
    assert kinds(fsm.frontend_failed("again")) == []  # already torn down
    # no reconnect to the old pages until the FE writes its state again
    assert fsm.state == S.InitWait
    assert kinds(fsm.frontend_state(S.Initialising)) == []
    assert kinds(fsm.frontend_state(S.Initialised)) == [Connect()]


def test_failed_connect_releases_and_waits_for_the_frontend():
    fsm = BackendFsm()
    fsm.start(True)
    fsm.frontend_state(S.Initialised)
    acts = kinds(fsm.connect_result(False, 14, "bad ring-ref"))
    assert acts[0] == Disconnect() and acts[1] == WriteError(14, "bad ring-ref")
    assert acts[2] == SetState(S.Closing)
    assert kinds(fsm.frontend_state(S.Initialised)) == []
    assert kinds(fsm.frontend_state(S.Closing)) == [SetState(S.InitWait)]
    assert kinds(fsm.frontend_state(S.Initialised)) == [Connect()]


def test_toolstack_removal_reaches_closed_and_stays_there():
    fsm = connected()
    assert kinds(fsm.backend_nodes(True, S.Connected)) == []  # own write
    assert kinds(fsm.backend_nodes(False, S.Connected)) == []  # online=0 alone: wait
    assert kinds(fsm.backend_nodes(False, S.Closing)) == [Disconnect(), SetState(S.Closed)]
    assert kinds(fsm.frontend_state(S.Initialised)) == []
    assert kinds(fsm.backend_nodes(False, S.Closing)) == []
    assert fsm.state == S.Closed


def test_removal_while_initwait_has_nothing_to_release():
    fsm = BackendFsm()
    fsm.start(True)
    assert kinds(fsm.backend_nodes(False, S.Closing)) == [SetState(S.Closed)]


def test_removal_during_connect_releases_what_connect_took():
    fsm = BackendFsm()
    fsm.start(True)
    assert kinds(fsm.frontend_state(S.Initialised)) == [Connect()]
    assert kinds(fsm.backend_nodes(False, S.Closing)) == [Disconnect(), SetState(S.Closed)]
    assert kinds(fsm.connect_result(True)) == []
