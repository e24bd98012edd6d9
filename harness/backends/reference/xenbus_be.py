"""Sans-IO XenBus state machine of the reference backend, for one vsnd device
(SND-A-09, A-12, A-16..A-19, A-24, G-06).

Feed it what the driver observed, carry out the :class:`Action` s it returns in order:

* :meth:`BackendFsm.start` once, with the outcome of validating the device config;
* :meth:`BackendFsm.frontend_state` for every watch event on the FE ``state`` node (and the
  one fired at registration); connecting is triggered only by such an event, so a backend
  that tore down on its own (G-06) waits for the FE to write its state again rather than
  re-mapping the pages of the connection it just dropped;
* :meth:`BackendFsm.backend_nodes` whenever the BE directory changes (toolstack removal);
* :meth:`BackendFsm.connect_result` after a :class:`Connect` action;
* :meth:`BackendFsm.frontend_failed` on an unrecoverable FE error (ring overflow).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol_models.constants import XenErrno
from protocol_models.xenbus import XenbusState

from .defects import NO_DEFECTS, Defects

S = XenbusState


@dataclass(frozen=True)
class SetState:
    """Write the BE ``state`` node; ``old``/``why`` are for the log line."""

    state: XenbusState
    old: XenbusState | None = None
    why: str = ""


@dataclass(frozen=True)
class Connect:
    """Read the transport nodes of every stream, map both pages, bind both ports (A-12);
    report with :meth:`BackendFsm.connect_result`."""


@dataclass(frozen=True)
class Disconnect:
    """Release every per-connection resource: close streams, unmap, unbind (A-16)."""


@dataclass(frozen=True)
class WriteError:
    """``xenbus_dev_error``-style: ``<be-dir>/error`` = ``"<errno> <message>"``."""

    errno: int
    message: str


@dataclass(frozen=True)
class Log:
    message: str


Action = SetState | Connect | Disconnect | WriteError | Log

#: FE states after which the connection is gone (A-16, A-17, A-19); None: node missing.
_FE_GONE = (S.Closing, S.Closed, S.Initialising, S.Unknown, None)


class BackendFsm:
    def __init__(self, defects: Defects = NO_DEFECTS) -> None:
        self.defects = defects
        self.state = S.Initialising
        self.frontend: XenbusState | None = None
        self.resources = False  # whether a Disconnect is owed
        self.removed = False  # toolstack removal done: terminal
        self.failed = False  # in Closing after a failed connect

    def _to(self, state: XenbusState, why: str) -> list[Action]:
        old, self.state = self.state, state
        return [SetState(state, old, why)]

    def _teardown(self) -> list[Action]:
        if not self.resources:
            return []
        self.resources = False
        return [Disconnect()]

    def start(self, config_ok: bool, message: str = "") -> list[Action]:
        """A-09: InitWait once the device config is valid, without waiting for the FE."""
        if self.state != S.Initialising or self.removed:
            return []
        if not config_ok:
            self.failed = True
            return [WriteError(int(XenErrno.EINVAL), message or "invalid configuration"),
                    *self._to(S.Closed, f"device config rejected: {message}")]
        if self.defects.has("skip-initwait"):
            return [Log("waiting for the frontend")]  # InitWait without waiting
        return self._to(S.InitWait, "device config valid")

    def frontend_state(self, fe: XenbusState | None, version: bytes | None = None
                       ) -> list[Action]:
        """``version``: the FE ``version`` node, read only for "require-version-node"
        (A-04: the correct backend never requires it)."""
        self.frontend = fe
        if self.removed or self.state == S.Initialising:
            return []
        if self.state == S.InitWait and fe == S.Initialised:
            if version is None and self.defects.has("require-version-node"):
                return [Log("frontend Initialised: waiting for its 'version' node")]
            self.resources = True
            return [Log("frontend Initialised: connecting"), Connect()]
        if self.state == S.Connected and fe in _FE_GONE:
            name = "missing" if fe is None else fe.name
            if fe == S.Initialising and self.defects.has("ignore-fe-restart"):
                return []  # a FE restart must tear down
            if fe in (S.Closing, S.Closed) and self.defects.has("no-initwait-after-fe-close"):
                return [*self._teardown(), *self._to(S.Closed, f"frontend {name}")]
            return [*self._teardown(), *self._to(S.InitWait, f"frontend {name}")]
        if self.state == S.Closing and self.failed and fe in _FE_GONE:
            self.failed = False
            return self._to(S.InitWait, "frontend left after the failed connect")
        return []

    def connect_result(self, ok: bool, errno: int = 0, message: str = "") -> list[Action]:
        if self.removed or self.state != S.InitWait:
            return self._teardown()
        if ok:
            return self._to(S.Connected, "transport mapped and bound")
        self.failed = True
        return [*self._teardown(), WriteError(errno or int(XenErrno.EINVAL), message),
                *self._to(S.Closing, f"connect failed: {message}")]

    def frontend_failed(self, message: str) -> list[Action]:
        """A-19/G-06: an unrecoverable FE error is handled as FE Closed."""
        if self.state != S.Connected:
            return []
        return [Log(f"frontend failed: {message}"), *self._teardown(),
                *self._to(S.InitWait, "frontend failed (treated as Closed)")]

    def backend_nodes(self, online: bool | None, state: XenbusState | None) -> list[Action]:
        """A-18: the toolstack wrote ``online`` = 0 and ``state`` = 5 -> tear down, Closed."""
        if self.removed:
            return []
        if online is False and state == S.Closing:
            self.removed = True
            if self.defects.has("no-closed-on-removal"):
                return self._teardown()  # Closed within 10 s
            return [*self._teardown(), *self._to(S.Closed, "removed by the toolstack")]
        return []
