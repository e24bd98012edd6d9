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


def need_snd_be_build() -> None:
    """What building and running snd_be (from ../shared/peers) needs: its build packages,
    the source snapshots, and PulseAudio for its audio."""
    from harness.backends.audio_host import missing_tools
    from harness.peers import snd_be

    missing = snd_be.missing_packages()
    if missing:
        unavailable(f"cannot build snd_be: apt-get install {' '.join(missing)}")
    try:
        snd_be.find_tarballs()
    except snd_be.PeersError as exc:
        unavailable(str(exc))
    if missing_tools():
        unavailable(f"{', '.join(missing_tools())} not found: apt-get install pulseaudio "
                    "pulseaudio-utils")
