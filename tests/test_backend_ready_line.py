"""dom0 of real Xen under QEMU starts ``xl create`` once the backend's log names the watch
on its XenStore directory (harness/xenqemu/scripts.py: ``WATCH_LOGGED``), else only after
a fixed wait: the reference backend must log that line once it watches."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading

from harness.xen.sim.runner import Sim
from harness.xenqemu.scripts import WATCH_LOGGED


def test_the_reference_backend_logs_its_watch_as_dom0_expects(sim: Sim) -> None:
    env = {**os.environ, **sim.env(0)}
    proc = subprocess.Popen([sys.executable, "-m", "harness.backends.reference",
                             "--log-level", "INFO"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(ln) for ln in stderr], daemon=True).start()
    seen: list[str] = []
    try:
        while not any(WATCH_LOGGED in ln for ln in seen):
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError(f"no line naming {WATCH_LOGGED} in 60 s: {seen}") \
                    from None
        assert any(f"watching {WATCH_LOGGED}" in ln for ln in seen), seen
    finally:
        proc.terminate()
        proc.wait(30)
