"""One run's world, built from a :class:`~harness.world.spec.WorldSpec` and torn down on
every exit path: the platform (a simulated Xen, or the real host), the domains, the audio
host, the backend under test (a process of its own, or an attached one), the vsnd device
the toolstack creates, and the reference frontend connected to it.

    with running_world(WorldSpec(), out) as world:
        world.dev.stream(0).open(...)

The demo, the pytest fixtures and the supervisor (and so certify, fuzz and the shell)
use this and nothing else to start a sim or a backend. Restarting (after a crash) is
:meth:`World.restart`; stops report whether SIGKILL was needed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.frontend.driver import FrontendDevice
from harness.frontend.errors import FrontendError
from harness.toolstack.apply import remove_device, wait_for_state, write_plan
from harness.toolstack.plan import plan_device, plan_removal
from harness.toolstack.vsnd_config import VsndCard
from harness.trace import Trace
from harness.world.backend_proc import BackendProcess, Stopped, status_text
from harness.world.backend_spec import BackendSpec
from harness.world.spec import WorldSpec, card_with_unique_ids
from harness.xen.api import (
    Domain,
    FaultInjection,
    GrantAccounting,
    Platform,
    Store,
    XenStoreAccounting,
)
from harness.xen.platforms import open_platform
from harness.xen.traced import TracedStore
from protocol_models.constants import XsField
from protocol_models.xenbus import XenbusState
from protocol_models.xenstore import XsError

MARK = "===="
_EXCERPT_LINES = 40
#: The most of the backend log read into memory at once (see :meth:`World.log_text`).
LOG_READ_MAX = 8 * 1024 * 1024
_ROOT = str(Path(__file__).resolve().parents[2])  # Python backends import this package


class BackendStartError(RuntimeError):
    """The backend could not be brought to a connected device (evidence in the text)."""


class World:
    """A run's world on ``platform``; see the module docstring. Not started until
    :meth:`start`; :meth:`close` is idempotent."""

    def __init__(self, spec: WorldSpec, out: str | os.PathLike[str], platform: Platform,
                 *, trace: Trace | None = None) -> None:
        self.spec = spec
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.platform = platform
        self.log_path = self.out / "backend.log"
        self._fixed_trace = trace  # the caller's, kept across connections and not closed
        #: the trace of each new frontend connection (the supervisor counts timeouts)
        self.new_trace: Callable[[], Trace | None] = lambda: trace
        self.trace: Trace | None = None
        self.dev: FrontendDevice | None = None
        self.backend: BackendProcess | None = None
        self.starts = 0  # backend processes started (attach: connections made)
        self.audio_host: Any = None  # harness.backends.audio_host.AudioHost under pulse
        self.audio_env: dict[str, str] = {}
        self.card: VsndCard = spec.card
        self._log_fd: int | None = None
        self._tool: Domain | None = None
        self._fe_domain: Domain | None = None
        self._device_created = False
        self._stack = contextlib.ExitStack()

    # -- identity and evidence --------------------------------------------------------

    @property
    def be_path(self) -> str:
        s = self.spec
        return f"/local/domain/{s.backend_domid}/backend/vsnd/{s.frontend_domid}/{s.devid}"

    @property
    def accounting(self) -> GrantAccounting | None:
        """The platform's grant/port accounting (the sim's), or None on a real host."""
        return self.platform.capability(GrantAccounting)  # type: ignore[type-abstract]

    @property
    def faults(self) -> FaultInjection | None:
        """The platform's fault injection (the sim's), or None on a real host."""
        return self.platform.capability(FaultInjection)  # type: ignore[type-abstract]

    @property
    def xs_accounting(self) -> XenStoreAccounting | None:
        return self.platform.capability(XenStoreAccounting)  # type: ignore[type-abstract]

    @property
    def tool_store(self) -> Store:
        """The toolstack's XenStore connection (dom0, privileged)."""
        assert self._tool is not None, "world not started"
        return self._tool.store

    def exit_status(self) -> int | None:
        return None if self.backend is None else self.backend.poll()

    def mark(self, text: str) -> None:
        """Write ``==== text ====`` into the backend log (same file, O_APPEND)."""
        if self._log_fd is not None:
            os.write(self._log_fd, f"{MARK} {text} {MARK}\n".encode())

    def log_text(self, start: int = 0, end: int | None = None,
                 max_bytes: int = LOG_READ_MAX) -> str:
        """The backend log from ``start`` to ``end`` (EOF). A part longer than
        ``max_bytes`` is read as its head and its longer tail (where a crash's report
        lands) around a line saying what was skipped: a backend that logs gigabytes
        costs the judge no more memory than this."""
        try:
            with open(self.log_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                end = size if end is None else min(end, size)
                if end - start <= max_bytes:
                    fh.seek(start)
                    return fh.read(max(0, end - start)).decode("utf-8", "replace")
                head_n = max_bytes // 4
                fh.seek(start)
                head = fh.read(head_n)
                fh.seek(end - (max_bytes - head_n))
                tail = fh.read(max_bytes - head_n)
        except OSError:
            return ""
        skipped = end - start - len(head) - len(tail)
        return (head.decode("utf-8", "replace")
                + f"\n[... {skipped} bytes of the backend log skipped ...]\n"
                + tail.decode("utf-8", "replace"))

    def truncate_log(self, note: str) -> int:
        """Empty the backend log (the backend appends, O_APPEND: its next line lands at
        the new start) and say why in it; returns the bytes dropped."""
        if self._log_fd is None:
            return 0
        dropped = self.log_size()
        os.ftruncate(self._log_fd, 0)
        self.mark(f"{note}: {dropped} bytes dropped")
        return dropped

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    @staticmethod
    def tail(text: str, lines: int = _EXCERPT_LINES) -> str:
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Domains, audio host, backend, device, frontend: all up, or an error with the
        evidence (the backend's exit status and log tail)."""
        s = self.spec
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.platform.ensure_domain(s.frontend_domid, "guest")
        self.platform.ensure_domain(s.backend_domid, "backend")
        # in a guest the "toolstack" connection is the guest's own (it reads, as a
        # frontend may; it writes nothing of the backend's)
        self._tool = self.platform.domain(0 if s.toolstack else s.frontend_domid)
        self._start_audio()
        self.bring_up("start")

    def close(self) -> None:
        """Frontend closed, backend stopped, device removed, audio host stopped, logs
        closed. Idempotent; never raises."""
        with contextlib.suppress(Exception):
            self.close_frontend()
        with contextlib.suppress(Exception):
            self.stop_backend("end of run")
        with contextlib.suppress(Exception):
            self.remove_device()
        if self._fixed_trace is not None:
            with contextlib.suppress(Exception):
                self.record_grant_accounting(self._fixed_trace)
        if self._tool is not None:
            with contextlib.suppress(Exception):
                self._tool.close()
            self._tool = None
        with contextlib.suppress(Exception):
            self._stack.close()
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    def bring_up(self, why: str) -> None:
        """Start the backend (unless attached), create the device, connect the frontend."""
        if self.spec.backend.starts_process:
            self.start_backend(why)
        if not self._device_created or self.spec.backend.starts_process:
            self.create_device()
        self.connect_frontend()

    def restart(self, reason: str) -> Stopped | None:
        """Frontend closed, backend stopped (killed if need be), device removed; then all
        brought up again. Returns how the old backend stopped."""
        self.mark(f"restart: {reason}")
        self.close_frontend()
        stopped = self.stop_backend(reason)
        self.remove_device()
        self.bring_up(f"restart ({reason})")
        return stopped

    def record_grant_accounting(self, trace: Trace) -> None:
        """Add the platform's record of every mapping of the frontend's pages to
        ``trace``: map and unmap at the platform's timestamps (CLOCK_MONOTONIC, the
        trace's clock too). Nothing on a platform without accounting."""
        acc = self.accounting
        if acc is None:
            return
        for m in acc.mappings(granter=self.spec.frontend_domid, history=True):
            fields = {"granter": m.granter, "ref": m.ref, "readonly": m.readonly}
            trace.record("map", m.mapper, t_ns=m.since, **fields)
            if m.until is not None:
                trace.record("unmap", m.mapper, t_ns=m.until, **fields)

    # -- the parts --------------------------------------------------------------------

    def _start_audio(self) -> None:
        mode = self.spec.audio_mode
        sink = source = None
        if mode == "pulse":
            from harness.backends.audio_host import running_audio_host

            host = self._stack.enter_context(running_audio_host(self.out / "audio"))
            self.audio_host = host
            self.audio_env = dict(host.env)
            sink, source = host.sink, host.source
        elif mode == "alsa-file":
            from harness.backends.audio_host import alsa_file_env, asoundrc_for_file

            d = self.out / "alsa"
            d.mkdir(exist_ok=True)
            (d / "capture.raw").touch()
            rc = d / "asoundrc"
            rc.write_text(asoundrc_for_file(d / "played.raw", d / "capture.raw"))
            self.audio_env = {"ALSA_CONFIG_PATH": alsa_file_env(rc, {})["ALSA_CONFIG_PATH"]}
        if self.spec.unique_id is not None:
            self.card = card_with_unique_ids(self.spec.card, self.spec.unique_id,
                                             sink=sink, source=source)

    def start_backend(self, why: str) -> BackendProcess:
        s = self.spec
        argv = s.backend.command(domid=s.backend_domid, frontend_domid=s.frontend_domid,
                                 devid=s.devid, out=str(self.out), python=sys.executable,
                                 capture_source=s.capture_source,
                                 audio="pulse" if s.audio_mode == "pulse" else None)
        env = self.platform.process_env(s.backend_domid, foreign=s.backend.kind == "exec")
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _ROOT + (os.pathsep + old if old else "")
        env.update(self.audio_env)
        env.update(s.backend_env)
        self.mark(f"start #{self.starts + 1} ({why}): {' '.join(argv)}")
        assert self._log_fd is not None, "world not started"
        try:
            self.backend = BackendProcess(argv, env, self._log_fd, str(self.out))
        except OSError as exc:
            raise BackendStartError(f"cannot start backend {s.backend}: {exc}") from exc
        self.starts += 1
        return self.backend

    def stop_backend(self, reason: str) -> Stopped | None:
        """SIGTERM the backend's process group, SIGKILL after ``kill_grace``."""
        proc, self.backend = self.backend, None
        if proc is None:
            return None
        stopped = proc.stop(self.spec.kill_grace)
        if stopped.killed:
            self.mark(f"backend did not stop within {self.spec.kill_grace:g} s of SIGTERM: "
                      "SIGKILL")
        self.mark(f"backend stopped ({reason}): {status_text(stopped.status)}")
        return stopped

    def create_device(self) -> None:
        """Write the device as libxl does, then wait for BE InitWait (A-09) — or for the
        backend to die, which is reported at once with its log tail."""
        s = self.spec
        plan = plan_device(self.card, s.frontend_domid, s.backend_domid, s.devid)
        if s.toolstack:
            write_plan(self.tool_store, plan)
        elif not _exists(self.tool_store, f"{plan.fe_path}/{XsField.BACKEND}"):
            raise BackendStartError(
                f"no vsnd device {s.devid} for this guest ({plan.fe_path}): the host's "
                "toolstack creates it (xl create with vsnd = [...])")
        self._device_created = True
        deadline = time.monotonic() + s.init_timeout
        last = None
        while True:
            ok, last = wait_for_state(self.tool_store, plan.be_state_path,
                                      {XenbusState.InitWait},
                                      max(0.0, min(0.2, deadline - time.monotonic())))
            if ok:
                return
            status = self.exit_status()
            if status is not None or time.monotonic() >= deadline:
                why = (f"it exited ({status_text(status)})" if status is not None else
                       f"state {last!r} after {s.init_timeout:g} s")
                raise BackendStartError(
                    f"backend {s.backend} did not reach InitWait: {why}\n"
                    + self.tail(self.log_text()))

    def remove_device(self) -> None:
        if not self._device_created or not self.spec.backend.starts_process \
                or not self.spec.toolstack:
            return  # an attached backend's device stays: only the frontend reconnects
        s = self.spec
        # the backend is gone now: nobody will answer, so do not wait for Closed
        remove_device(self.tool_store, plan_removal(s.frontend_domid, s.backend_domid,
                                                    s.devid), timeout=0.0)
        self._device_created = False

    def connect_frontend(self) -> FrontendDevice:
        s = self.spec
        self._fe_domain = self.platform.domain(s.frontend_domid)
        self.trace = self.new_trace()
        if self.trace is not None:
            self._fe_domain.store = TracedStore(self._fe_domain.store, self.trace)
        if not s.backend.starts_process:
            self.starts += 1
        try:
            self.dev = FrontendDevice(self._fe_domain, s.devid, trace=self.trace,
                                      timeout_ms=s.request_timeout_ms)
            self.dev.wait_connected(s.connect_timeout)
        except FrontendError as exc:
            status = self.exit_status()
            raise BackendStartError(
                f"frontend did not connect to backend {s.backend}: {exc}"
                + (f"; backend exited ({status_text(status)})" if status is not None
                   else "") + "\n" + self.tail(self.log_text())) from exc
        return self.dev

    def close_frontend(self) -> None:
        dev, self.dev = self.dev, None
        if dev is not None:
            with contextlib.suppress(Exception):
                dev.close(timeout=5.0)  # FE Closing -> polls BE <= ~1 s (A-15) -> Closed
        if self._fe_domain is not None:
            with contextlib.suppress(Exception):
                self._fe_domain.close()
            self._fe_domain = None
        if self.trace is not None and self.trace is not self._fixed_trace:
            self.trace.close()
        self.trace = None


def reference_world(out: str | os.PathLike[str], *, defects: Sequence[str] = (),
                    trace: Trace | None = None, capture_source: str = "sine:1000",
                    audio: str | None = None, card: VsndCard | None = None
                    ) -> contextlib.AbstractContextManager[World]:
    """The reference backend's world on a simulated Xen (the demo's, and the tests')."""
    spec = WorldSpec(backend=BackendSpec("reference", defects=tuple(defects)),
                     capture_source=capture_source, audio=audio)
    if card is not None:
        spec = spec.replace(card=card)
    return running_world(spec, out, trace=trace)


@contextlib.contextmanager
def running_world(spec: WorldSpec, out: str | os.PathLike[str], *,
                  platform: Platform | None = None, trace: Trace | None = None
                  ) -> Iterator[World]:
    """A started :class:`World` (on ``platform``, or on the one ``spec`` names, opened
    for the block); everything is stopped on the way out, whatever happened inside."""
    with contextlib.ExitStack() as stack:
        if platform is None:
            platform = stack.enter_context(open_platform(spec.platform))
        world = World(spec, out, platform, trace=trace)
        stack.callback(world.close)
        world.start()
        yield world


def _exists(store: Store, path: str) -> bool:
    try:
        store.read(path)
    except XsError:
        return False
    return True
