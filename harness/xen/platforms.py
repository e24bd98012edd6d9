"""Choosing the platform of a run: ``open_platform("sim")`` (the default, a simulated Xen
started for the block) or ``open_platform("real")`` (the Xen host this process runs on).
The only place above the simulator's own modules that names it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from harness.xen.api import Platform, PlatformError

PLATFORMS = ("sim", "real")


@contextlib.contextmanager
def open_platform(kind: str = "sim") -> Iterator[Platform]:
    """The platform ``kind`` for the block; whatever it started is stopped on the way
    out."""
    if kind == "sim":
        from harness.xen.sim.platform import sim_platform

        with sim_platform() as sim:
            yield sim
    elif kind == "real":
        from harness.xen.real.platform import RealPlatform

        real = RealPlatform()
        try:
            yield real
        finally:
            real.close()
    else:
        raise PlatformError(f"unknown platform {kind!r} (expected one of "
                            + ", ".join(PLATFORMS) + ")")
