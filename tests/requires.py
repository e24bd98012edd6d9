"""What a test needs from the machine. Missing, it is a skip that says what to install,
except under CI=true: CI installs everything, so there a missing piece fails the run
instead of passing as a skip."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
XEN_C_HINT = "apt-get install libxen-dev gcc"


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: CI installs this, so its absence is a failure)")
    pytest.skip(reason)


def need_xen_c_toolchain(*sonames: str) -> None:
    """gcc and Debian's Xen libraries (all the replaced ones unless ``sonames`` says)."""
    from harness.xen.sim.clibs import build

    missing = [s for s in (sonames or build.SONAMES) if build.debian_library(s) is None]
    if not build.have_gcc():
        missing.append("gcc")
    if missing:
        unavailable(f"missing {', '.join(missing)}: {XEN_C_HINT}")
