"""A running world: the simulated Xen, the reference backend as its own process, a vsnd
device created by the toolstack, and the reference frontend connected to it.

The demo, the end-to-end tests and (later) certification runs all stand on this, so the
order of start-up and the clean-up on every exit path are written once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.backends.reference.launch import reference_argv
from harness.frontend.driver import FrontendDevice
from harness.procs import stop_process
from harness.toolstack.apply import create_device
from harness.toolstack.plan import plan_device
from harness.toolstack.vsnd_config import VsndCard, parse_xl_items
from harness.trace import Trace
from harness.xen.sim.runner import Sim, running_sim
from harness.xen.traced import TracedStore

FE_DOMID, BE_DOMID = 1, 0

#: One playback and one capture stream, 48 kHz S16_LE, 64 KiB buffers.
DEFAULT_CARD = parse_xl_items([[
    "card, sample-rates=48000, sample-formats=s16_le, buffer-size=65536",
    "pcm, name=dev0", "stream, unique-id=pb, type=p", "stream, unique-id=cap, type=c",
]])[0]


@dataclass
class Session:
    sim: Sim
    out: Path  # the backend's WAV files and the logs land here
    capture_source: str
    backends: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dev: FrontendDevice | None = None
    trace: Trace | None = None
    defects: Sequence[str] = ()  # backend defects (``--defect``), e.g. to test the suites
    audio: str = "wav"  # the backend's --audio: "wav" files, or "pulse" (the audio host)
    audio_env: dict[str, str] = field(default_factory=dict)  # e.g. AudioHost.env

    @property
    def backend(self) -> subprocess.Popen[bytes]:
        return self.backends[-1]

    @property
    def backend_log(self) -> Path:
        return self.out / "backend.log"

    def start_backend(self) -> subprocess.Popen[bytes]:
        """Start the reference backend as domain 0, a process of its own on the seam."""
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.backend_log, "ab") as log:
            proc = subprocess.Popen(
                reference_argv(domid=BE_DOMID, frontend_domid=FE_DOMID, devid=0,
                               out_dir=str(self.out / "wav"),
                               capture_source=self.capture_source, defects=self.defects,
                               audio=self.audio),
                env={**self.sim.env(BE_DOMID), **self.audio_env,
                     "PYTHONPATH": os.pathsep.join(sys.path)},
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.backends.append(proc)
        return proc

    def stop_backend(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.backend, sig)


@contextlib.contextmanager
def reference_session(out: Path, *, card: VsndCard = DEFAULT_CARD,
                      capture_source: str = "sine:1000", connect_timeout: float = 10.0,
                      trace: Trace | None = None, defects: Sequence[str] = (),
                      audio: str = "wav", audio_env: Mapping[str, str] | None = None
                      ) -> Iterator[Session]:
    """Sim + reference backend + toolstack device + connected frontend; everything is
    stopped and reaped on the way out, whatever happened inside. ``audio="pulse"`` with
    ``audio_env=AudioHost.env``: the backend plays to and records from the audio host."""
    with running_sim() as sim:
        sim.create_domain(FE_DOMID, "guest")
        session = Session(sim, out, capture_source, trace=trace, defects=tuple(defects),
                          audio=audio, audio_env=dict(audio_env or {}))
        session.start_backend()  # before the device exists, as a dom0 daemon would be
        try:
            create_device(sim.domain(BE_DOMID).store, plan_device(card, FE_DOMID, BE_DOMID, 0))
            fe = sim.domain(FE_DOMID)
            if trace is not None:
                fe.store = TracedStore(fe.store, trace)
            session.dev = FrontendDevice(fe, 0, trace=trace)
            session.dev.wait_connected(connect_timeout)
            yield session
        finally:
            if session.dev is not None:
                session.dev.close()
            for proc in session.backends:
                stop_process(proc)
            if trace is not None:
                record_grant_accounting(trace, sim, FE_DOMID)


def record_grant_accounting(trace: Trace, sim: Sim, granter: int) -> None:
    """Add the sim's record of every mapping of ``granter``'s pages to ``trace``: map and
    unmap at the daemon's timestamps (CLOCK_MONOTONIC, the trace's clock too)."""
    for m in sim.mappings(granter=granter, history=True):
        fields = {"granter": m.granter, "ref": m.ref, "readonly": m.readonly}
        trace.record("map", m.mapper, t_ns=m.since, **fields)
        if m.until is not None:
            trace.record("unmap", m.mapper, t_ns=m.until, **fields)
