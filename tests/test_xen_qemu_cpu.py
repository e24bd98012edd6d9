"""The CPU model the real-Xen tier emulates (``harness.xenqemu.run.CPU``) runs the native
code the harness loads in dom0 and the guest. Wheels raise their baseline over time
(numpy 2's needs x86-64-v2: on plain ``qemu64`` the fuzz campaign in dom0 died of SIGILL
importing it), and a boot to find that out costs minutes: QEMU's user-mode emulation with
the same model finds it in seconds. It also keeps the model free of what made the guest's
Python crash (``-cpu max``'s XSAVE/AVX) and of SMAP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from harness.xenqemu.run import CPU
from tests.requires import unavailable

#: what runs in dom0 or the guest, each module with native code among its imports: the
#: reference backend and frontend (scapy, ctypes), the fuzz campaign (hypothesis and its
#: native module, numpy for coverage), the suites' pytest run and the report
PROBE = """
import harness.backends.reference.__main__, harness.frontend.driver, harness.fuzz.campaign
import harness.fuzz.coverage, harness.cli.certify_cmd, harness.report.results
import numpy, hypothesis, pytest, scapy.all
assert int(numpy.frombuffer(bytes(range(200)), dtype=numpy.uint8).astype(bool).sum()) == 199
print("native code ran")
"""


def test_the_emulated_cpu_runs_the_harness_native_code() -> None:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        unavailable("no qemu-x86_64 to try the CPU model on: apt-get install qemu-user")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([qemu, "-cpu", CPU, sys.executable, "-c", PROBE],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and "native code ran" in proc.stdout, (
        f"under -cpu {CPU}: exit {proc.returncode} (-4: an illegal instruction)\n"
        f"{proc.stderr[-3000:]}")


def test_the_emulated_cpu_has_no_smap_xsave_or_avx() -> None:
    flags = CPU.split(",")
    assert flags[0] == "qemu64", CPU  # a named model brings features of its own
    assert not [f for f in flags[1:] if not f.startswith("+")], CPU
    assert not {f[1:] for f in flags[1:]} & {"smap", "xsave", "avx", "avx2"}, CPU
