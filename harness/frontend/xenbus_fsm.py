"""Sans-IO XenBus state machine of the reference frontend: Linux ``sndback_changed``,
``xen_drv_probe`` and ``xen_drv_remove`` (SND-A-10..A-21, the A-14 table).

Feed :class:`Event` s to :meth:`FrontendFsm.handle`, carry out the :class:`Action` s it
returns, and report each action's outcome back as an event (``ReadConfig`` ->
``ConfigRead``, ``AllocateAndPublishTransport`` -> ``TransportPublished``, ``CreateDevice``
-> ``DeviceCreated``, ``PollBackendState`` -> ``BackendPolled``). Linux runs these steps
synchronously inside one xenwatch callback, so events that arrive while a step is
outstanding are queued and replayed after its outcome, in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from harness.card_config import CardConfig, ConfigResult, StreamConfig
from protocol_models.constants import XenErrno
from protocol_models.xenbus import XenbusState

#: ``xen_drv_remove``: ``int to = 100; while (state != InitWait && --to) msleep(10);``
#: i.e. at most 100 reads with 99 sleeps of 10 ms between them (SND-A-15).
REMOVE_POLL_READS = 100
REMOVE_POLL_DELAY_S = 0.010
#: The text Linux passes to xenbus_dev_fatal from sndback_changed.
FATAL_INIT_TEXT = "initializing frontend"

S = XenbusState


# --- events --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackendStateChanged:
    """The BE ``state`` watch fired (also once at registration). ``state`` is what
    ``xenbus_read_driver_state`` gives: see :func:`driver_state`."""

    state: int


@dataclass(frozen=True)
class ConfigRead:
    result: ConfigResult


@dataclass(frozen=True)
class TransportPublished:
    """Outcome of :class:`AllocateAndPublishTransport`. On failure ``context`` is the text
    of the fatal error the failing helper itself raised (Linux: "writing XenStore",
    "completing transaction"...), or None if it raised none."""

    ok: bool
    errno: XenErrno = XenErrno.EIO
    context: str | None = "writing XenStore"


@dataclass(frozen=True)
class DeviceCreated:
    ok: bool
    errno: XenErrno = XenErrno.ENOMEM


@dataclass(frozen=True)
class TeardownRequested:
    """Driver removal (``xen_drv_remove``)."""


@dataclass(frozen=True)
class BackendPolled:
    """Result of :class:`PollBackendState`: ``xenbus_read_unsigned(otherend, "state",
    XenbusStateUnknown)``; see :func:`polled_state`."""

    state: int


@dataclass(frozen=True)
class Timeout:
    """The driver's guard deadline for the current wait passed. Linux keeps no handshake
    timers (it waits for the BE forever), so this only ends a teardown poll early;
    otherwise it is recorded in the history as evidence of a stall."""


Event = (BackendStateChanged | ConfigRead | TransportPublished | DeviceCreated
         | TeardownRequested | BackendPolled | Timeout)


# --- actions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class WatchBackendState:
    """Register the watch on ``<backend>/state``; it fires once at once (xenstore.txt)."""


@dataclass(frozen=True)
class ReadConfig:
    """Read the FE subtree and run ``card_config.read_card_config``; answer ConfigRead."""


@dataclass(frozen=True)
class AllocateAndPublishTransport:
    """For every stream: ring page, event page, two unbound ports; then write the four
    transport nodes of all streams in ONE transaction (SND-A-10, A-11)."""

    streams: tuple[StreamConfig, ...]


@dataclass(frozen=True)
class WriteFrontendState:
    state: XenbusState


@dataclass(frozen=True)
class FreeChannels:
    """Free every channel: wake waiters with -EIO, unbind, free ports, end access."""


@dataclass(frozen=True)
class CreateDevice:
    config: CardConfig


@dataclass(frozen=True)
class DestroyDevice:
    """Free the ALSA card (``xen_snd_front_alsa_fini``)."""


@dataclass(frozen=True)
class WriteFatalError:
    """``xenbus_dev_fatal``: write ``error/<nodename>/error`` = :attr:`value` (SND-A-21).
    The Closing switch that follows is a separate WriteFrontendState."""

    errno: XenErrno
    message: str

    @property
    def value(self) -> str:
        return f"{int(self.errno)} {self.message}"


@dataclass(frozen=True)
class PollBackendState:
    """Sleep ``delay`` seconds, read the BE state, answer BackendPolled (SND-A-15)."""

    delay: float


@dataclass(frozen=True)
class LogError:
    message: str


Action = (WatchBackendState | ReadConfig | AllocateAndPublishTransport | WriteFrontendState
          | FreeChannels | CreateDevice | DestroyDevice | WriteFatalError | PollBackendState
          | LogError)


def driver_state(raw: bytes | str | None) -> int:
    """``xenbus_read_driver_state``: scanf "%d"; a missing or unparsable node is
    Unknown(0). Out-of-range numbers are kept (the A-14 switch then ignores them)."""
    if raw is None:
        return int(S.Unknown)
    text = (raw.decode("latin-1") if isinstance(raw, bytes) else raw).split("\0", 1)[0]
    text = text.lstrip()
    sign = -1 if text.startswith("-") else 1  # the kernel's %d takes "-", not "+"
    digits = ""
    for c in text[1:] if sign < 0 else text:
        if not c.isdigit():
            break
        digits += c
    return sign * int(digits) if digits else int(S.Unknown)


def polled_state(raw: bytes | str | None) -> int:
    """``xenbus_read_unsigned(..., XenbusStateUnknown)``: scanf "%u", no sign."""
    if raw is None:
        return int(S.Unknown)
    text = (raw.decode("latin-1") if isinstance(raw, bytes) else raw).lstrip()
    digits = ""
    for c in text:
        if not c.isdigit():
            break
        digits += c
    return int(digits) & 0xFFFF_FFFF if digits else int(S.Unknown)


class FsmUsageError(RuntimeError):
    """The driver reported an outcome nobody asked for."""


@dataclass(frozen=True)
class Step:
    """One history entry: what came in, what went out, the FE state afterwards."""

    event: Event | None
    actions: tuple[Action, ...]
    fe_state: XenbusState


@dataclass
class FrontendFsm:
    """The Linux sndif frontend's XenBus behaviour, one device."""

    state: XenbusState = S.Initialising  # xenbus_probe_node starts every device here
    history: list[Step] = field(default_factory=list)
    config: CardConfig | None = None
    channels_allocated: bool = False
    transport_published: bool = False
    device_created: bool = False
    removing: bool = False
    removed: bool = False
    _pending: type | None = None
    _queue: deque[Event] = field(default_factory=deque)
    _polls_left: int = 0
    _last_polled: int | None = None

    # -- public ------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """``xen_drv_probe``: switch to Initialising (a no-op: already there), then the
        xenbus core watches the BE state; its first firing reports the current state."""
        actions: list[Action] = [WatchBackendState()]
        self.history.append(Step(None, tuple(actions), self.state))
        return actions

    @property
    def pending(self) -> str | None:
        """The outcome event the FSM waits for, if any."""
        return self._pending.__name__ if self._pending else None

    def handle(self, event: Event) -> list[Action]:
        if (self._pending is not None and not isinstance(event, self._pending)
                and not isinstance(event, Timeout)):
            if isinstance(event, (ConfigRead, TransportPublished, DeviceCreated,
                                  BackendPolled)):
                raise FsmUsageError(f"{type(event).__name__} while waiting for "
                                    f"{self._pending.__name__}")
            self._queue.append(event)
            self.history.append(Step(event, (), self.state))
            return []
        actions = self._dispatch(event)
        self.history.append(Step(event, tuple(actions), self.state))
        while self._pending is None and self._queue:
            queued = self._queue.popleft()
            more = self._dispatch(queued)
            self.history.append(Step(queued, tuple(more), self.state))
            actions += more
        return actions

    # -- internals -----------------------------------------------------------------------

    def _dispatch(self, event: Event) -> list[Action]:
        if self.removed:
            return []  # the driver is unbound: nothing reaches it any more
        if isinstance(event, BackendStateChanged):
            return [] if self.removing else self._backend_changed(event.state)
        if isinstance(event, ConfigRead):
            return self._config_read(event.result)
        if isinstance(event, TransportPublished):
            return self._transport_published(event)
        if isinstance(event, DeviceCreated):
            return self._device_created(event)
        if isinstance(event, TeardownRequested):
            return self._teardown()
        if isinstance(event, BackendPolled):
            return self._polled(event.state)
        if isinstance(event, Timeout):
            return self._finish_remove(timed_out=True) if self.removing else []
        raise TypeError(f"not an FSM event: {event!r}")

    def _expect(self, kind: type) -> None:
        if self._pending is not kind:
            raise FsmUsageError(f"{kind.__name__} arrived but nothing asked for it")
        self._pending = None

    def _switch(self, state: XenbusState) -> list[Action]:
        """``__xenbus_switch_state`` writes nothing when the state is unchanged."""
        if state == self.state:
            return []
        self.state = state
        return [WriteFrontendState(state)]

    def _fatal(self, errno: XenErrno, message: str) -> list[Action]:
        """``xenbus_dev_fatal`` (SND-A-21): error node, then Closing."""
        return [WriteFatalError(errno, message), *self._switch(S.Closing)]

    def _fini(self) -> list[Action]:
        """``xen_snd_drv_fini``. Linux calls both frees unconditionally and they are no-ops
        when there is nothing to free; we only emit the ones that free something."""
        actions: list[Action] = []
        if self.device_created:
            actions.append(DestroyDevice())
            self.device_created = False
        if self.channels_allocated:
            actions.append(FreeChannels())
            self.channels_allocated = False
        self.transport_published = False
        return actions

    def _disconnect(self) -> list[Action]:
        """``sndback_disconnect`` (A-14): free everything, then FE Initialising."""
        return [*self._fini(), *self._switch(S.Initialising)]

    def _backend_changed(self, be: int) -> list[Action]:
        """``sndback_changed``, the A-14 table."""
        if be == S.Initialising:
            return self._disconnect()
        if be == S.InitWait:  # (re)connect: also the backend-restart path
            actions = self._disconnect()
            self._pending = ConfigRead
            return [*actions, ReadConfig()]
        if be == S.Connected:
            if self.state != S.Initialised or self.config is None:  # SND-A-13
                return []
            self._pending = DeviceCreated
            return [CreateDevice(self.config)]
        if be in (S.Unknown, S.Closed):
            return [] if self.state == S.Closed else self._disconnect()
        return []  # Initialised, Closing, Reconfiguring, Reconfigured, out of range

    def _config_read(self, result: ConfigResult) -> list[Action]:
        self._expect(ConfigRead)
        if not isinstance(result, CardConfig):
            return self._fatal(result.errno, FATAL_INIT_TEXT)
        self.config = result
        self.channels_allocated = True
        self._pending = TransportPublished
        return [AllocateAndPublishTransport(result.streams)]

    def _transport_published(self, event: TransportPublished) -> list[Action]:
        self._expect(TransportPublished)
        if event.ok:
            self.transport_published = True
            return self._switch(S.Initialised)  # only after publishing (SND-A-10)
        # the failing helper's own xenbus_dev_fatal, then sndback_changed's
        actions = self._fatal(event.errno, event.context) if event.context else []
        return [*actions, *self._fatal(event.errno, FATAL_INIT_TEXT)]

    def _device_created(self, event: DeviceCreated) -> list[Action]:
        self._expect(DeviceCreated)
        if not event.ok:
            return self._fatal(event.errno, FATAL_INIT_TEXT)
        self.device_created = True
        return self._switch(S.Connected)

    def _teardown(self) -> list[Action]:
        """``xen_drv_remove`` (SND-A-15): Closing, then poll the BE for InitWait."""
        if self.removing:
            return []
        self.removing = True
        self._polls_left = REMOVE_POLL_READS
        self._pending = BackendPolled
        return [*self._switch(S.Closing), PollBackendState(0.0)]

    def _polled(self, be: int) -> list[Action]:
        self._expect(BackendPolled)
        self._last_polled = be
        if be == S.InitWait:
            return self._finish_remove(timed_out=False)
        self._polls_left -= 1
        if self._polls_left:
            self._pending = BackendPolled
            return [PollBackendState(REMOVE_POLL_DELAY_S)]
        return self._finish_remove(timed_out=True)

    def _finish_remove(self, *, timed_out: bool) -> list[Action]:
        self._pending = None
        actions: list[Action] = []
        if timed_out:
            last = self._last_polled
            name = S(last).name if last is not None and 0 <= last <= 8 else str(last)
            actions.append(LogError(f"Backend state is {name} while removing driver"))
        actions += self._fini()
        actions += self._switch(S.Closed)  # xenbus_frontend_closed
        self.removing, self.removed = False, True
        self._queue.clear()
        return actions
