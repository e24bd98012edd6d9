"""The world options (backend under test, card, audio host, ...) on a CLI command: the
same definitions as the pytest options (:mod:`harness.world.options`)."""

from __future__ import annotations

import argparse

from harness.world.options import add_world_options as _add
from harness.world.options import world_from_options
from harness.world.spec import WorldSpec, WorldSpecError


def add_world_options(p: argparse.ArgumentParser) -> None:
    _add(p.add_argument_group("the backend under test and its world").add_argument)


def world_from_args(args: argparse.Namespace, **more: object) -> WorldSpec:
    """The :class:`WorldSpec` of parsed options; a bad value is a usage error."""
    from harness.cli import UsageError

    try:
        return world_from_options(lambda name: getattr(args, name), **more)
    except WorldSpecError as exc:
        raise UsageError(str(exc)) from None


#: where a command's world runs: the simulated Xen, the Xen host this runs on, or real Xen
#: 4.17 booted under QEMU for the run (the command run in its dom0)
PLATFORMS = ("sim", "real", "xen-qemu")


def add_platform_option(p: argparse.ArgumentParser, brought_back: str) -> None:
    p.add_argument("--platform", choices=PLATFORMS, default="sim",
                   help="sim: the simulated Xen (default); real: the Xen host this runs "
                        "on, in dom0 (the backend is started in dom0, the frontend is dom0 "
                        "too); xen-qemu: real Xen 4.17 booted under QEMU for the run (see "
                        f"sndif-harness xen-qemu), {brought_back} brought back")


#: the :class:`WorldSpec` fields of a world whose harness is dom0 of a real Xen host
REAL_DOM0: dict[str, object] = {"platform": "real", "frontend_domid": 0}


def platform_more(platform: str, command: str) -> dict[str, object]:
    """The :class:`WorldSpec` fields of a world built in this process on ``platform``
    (``sim`` or ``real``): on a real Xen host the harness is dom0, the frontend's domain
    and the toolstack. Elsewhere, or without Xen, a usage error."""
    from harness.cli import UsageError

    if platform != "real":
        return {"platform": "sim"}
    from harness.xen.real.platform import own_domid

    try:
        own = own_domid()
    except Exception as exc:  # no xenstored socket, no xenbus device, no answer
        raise UsageError(f"--platform real: no Xen here ({exc})") from None
    if own != 0:
        raise UsageError(f"--platform real: {command} runs in dom0 (this is domain {own})")
    return dict(REAL_DOM0)
