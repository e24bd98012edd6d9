"""``sndif-harness sim run`` and ``sndif-harness bench sim`` (figures printed, not judged)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

from harness.xen.sim.runner import leftovers

CLI = [sys.executable, "-m", "harness"]


def test_sim_run_prints_paths_and_stops_on_sigterm(tmp_path):
    d = tmp_path / "sim"
    proc = subprocess.Popen([*CLI, "sim", "run", "--dir", str(d)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = b""
        while b"\nready\n" not in out:
            assert select.select([fd], [], [], 10)[0], "no ready line"
            chunk = os.read(fd, 4096)
            assert chunk, "sim run exited early"
            out += chunk
        text = out.decode()
        assert "XENSTORED_PATH=" in text and "hypervisor.sock" in text
        assert os.path.exists(d / "dom0" / "hypervisor.sock")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    assert leftovers(str(d)) == []


def test_bench_sim_prints_its_figures():
    out = subprocess.run([*CLI, "bench", "sim", "--seconds", "0.2"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for label in ("xenstore read round trips/s", "xenstore write round trips/s",
                  "event-channel notify round trips/s", "raw socketpair ping-pong",
                  "event channel / raw ratio", "map 16-page buffer", "unmap 16-page buffer"):
        assert label in out.stdout
