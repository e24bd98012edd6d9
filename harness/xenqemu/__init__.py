"""Real Xen under QEMU: a tier of the harness that runs the backend under test on real
Xen 4.17, in a Linux PV dom0, against the real Linux ``xen-snd-front`` in a PV guest, all
inside QEMU's software emulation (TCG), with Debian's own binaries.

``prepare``  fetches Debian's Xen and kernel packages (``apt-get download`` + ``dpkg -x``,
             nothing installed on the host) and builds the dom0 and guest initramfs images
             into a cache keyed by the package versions (:mod:`harness.xenqemu.prepare`).
``run``      boots Xen + dom0 under QEMU, starts the backend in dom0, creates a guest with
             a vsnd device, plays a known signal with ``aplay`` in the guest and compares
             what the backend received with it, byte for byte (:mod:`harness.xenqemu.run`).

What was shown to work on this machine kind, and the pitfalls avoided here (SMAP under
TCG, ``libgcc_s`` for ``xl``, a backend that must exist before ``xl create``, ``xl create
-e``), are in the project's spec notes on Xen in QEMU.
"""

from __future__ import annotations

import sys

#: The exit status of a command whose host lacks what this tier needs (or, for the
#: commands whose 1 is a verdict, whose boot failed).
ENV_EXIT = 3


class XenQemuError(RuntimeError):
    """A stage failed: ``stage`` names it."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage {stage}: {message}")
        self.stage = stage


class EnvironmentMissing(XenQemuError):
    """A host tool or package is missing: the message says what to install."""


#: The guest's frontends: Linux's xen-snd-front (driven by aplay and arecord) or the
#: harness's reference frontend (harness.xenqemu.guest_scenario).
FRONTENDS = ("linux", "reference")

#: What the host needs (Debian package names), beyond apt-get/dpkg themselves.
APT_PACKAGES = ("qemu-system-x86", "busybox-static", "cpio", "alsa-utils")
INSTALL_HINT = "apt-get install -y --no-install-recommends " + " ".join(APT_PACKAGES)


def said(prog: str, exc: XenQemuError, stage_exit: int = ENV_EXIT) -> int:
    """Say a failure of this tier on stderr, one line naming the stage; the exit status:
    ENV_EXIT for a missing host tool, ``stage_exit`` for a stage that failed."""
    print(f"{prog}: {exc}", file=sys.stderr)
    return ENV_EXIT if isinstance(exc, EnvironmentMissing) else stage_exit
