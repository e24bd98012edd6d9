"""The XenStore nodes Xen's toolstack writes for a domain, as the simulator writes them.

On Xen, ``xen-init-dom0`` writes ``/local/domain/0/{domid,name}`` at boot (dom0's nodes
inherit ``/local/domain``'s ``n0``), and libxl writes a guest's tree when it creates it
(``libxl__domain_make`` in libxl_create.c, then ``libxl__build_post`` in libxl_dom.c):
``dompath`` and ``/vm/<uuid>`` readable by the guest (``n0 r<N>``), the guest-writable
directories (``n<N>``: control/shutdown..., data, drivers, feature, attr, error,
device/suspend/event-channel), and build_post's ``domid``, ``memory/*`` and
``cpu/0/availability`` inheriting ``n0 r<N>``. Backends read these (libxenbe reads
``domid``, xl and others ``name``). Left out: ``store/*`` and ``console/*`` (the sim has no
xenstore or console ring), HVM-only and driver-domain nodes, ``/libxl/<N>`` (libxl's own
bookkeeping). On destroy libxl removes ``dompath`` and ``/vm/<uuid>``; so does the sim.

Each function returns operations for :meth:`XenstoreState.toolstack`.
"""

from __future__ import annotations

import uuid

DOM0_NAME = "Domain-0"
# what the sim tells guests they have (KiB): xl's default memory = 128 MiB
MEMORY_KB = 131072
# guest-writable directories libxl makes (rwperm: owned by the guest)
GUEST_RW = ("control/shutdown", "control/feature-poweroff", "control/feature-reboot",
            "control/feature-suspend", "control/sysrq", "device/suspend/event-channel",
            "data", "drivers", "feature", "attr", "error")
GUEST_RO = ("cpu", "memory", "device", "control")  # roperm: dom0's, guest may read


def dom_path(domid: int) -> str:
    return f"/local/domain/{domid}"


def vm_uuid(domid: int) -> str:
    """A stable uuid per domid (Xen's are random; stable ones make runs comparable)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sndif-harness-sim-domain-{domid}"))


def vm_path(domid: int) -> str:
    return f"/vm/{vm_uuid(domid)}"


def dom0_ops() -> list[tuple[str, ...]]:
    """What xen-init-dom0 writes."""
    return [("write", "/local/domain/0/domid", "0"),
            ("write", "/local/domain/0/name", DOM0_NAME)]


def guest_ops(domid: int, name: str) -> list[tuple[str, ...]]:
    """What libxl writes when it creates guest ``domid`` called ``name``."""
    dp, vp = dom_path(domid), vm_path(domid)
    ro = ("n0", f"r{domid}")
    ops: list[tuple[str, ...]] = [("rm", dp), ("mkdir", dp), ("perms", dp, *ro),
                        ("rm", vp), ("mkdir", vp), ("perms", vp, *ro),
                        ("write", f"{dp}/vm", vp), ("write", f"{dp}/name", name)]
    for sub in GUEST_RO:
        ops += [("mkdir", f"{dp}/{sub}"), ("perms", f"{dp}/{sub}", *ro)]
    for sub in GUEST_RW:
        ops += [("mkdir", f"{dp}/{sub}"), ("perms", f"{dp}/{sub}", f"n{domid}")]
    ops += [("write", f"{vp}/uuid", vm_uuid(domid)), ("write", f"{vp}/name", name),
            ("write", f"{dp}/control/platform-feature-multiprocessor-suspend", "1"),
            ("write", f"{dp}/control/platform-feature-xs_reset_watches", "1"),
            # libxl__build_post
            ("write", f"{dp}/memory/static-max", str(MEMORY_KB)),
            ("write", f"{dp}/memory/target", str(MEMORY_KB)),
            ("write", f"{dp}/memory/videoram", "0"),
            ("write", f"{dp}/domid", str(domid)),
            ("write", f"{dp}/cpu/0/availability", "online")]
    return ops


def rename_ops(domid: int, name: str) -> list[tuple[str, ...]]:
    """libxl_domain_rename: the name under dompath (and /vm/<uuid> for guests)."""
    ops: list[tuple[str, ...]] = [("write", f"{dom_path(domid)}/name", name)]
    if domid != 0:
        ops.append(("write", f"{vm_path(domid)}/name", name))
    return ops


def destroy_ops(domid: int) -> list[tuple[str, ...]]:
    """What libxl removes once the domain is gone."""
    return [("rm", dom_path(domid)), ("rm", vm_path(domid))]
