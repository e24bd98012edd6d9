"""Which Xen this process talks to: the simulated one its environment names (``Sim.env``:
``XEN_SIM_DIR``, ``XEN_SIM_DOMID``), else the real host it runs on."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import cast

from harness.xen.api import Domain


def connect_domain(domid: int, environ: Mapping[str, str] | None = None) -> Domain:
    """The platform seam for domain ``domid`` of whichever Xen this process is on."""
    env = os.environ if environ is None else environ
    if "XEN_SIM_DIR" in env:
        from harness.xen.sim.client import SimDomain

        sim_domid = int(env.get("XEN_SIM_DOMID", "0"))
        if sim_domid != domid:
            raise ValueError(f"domain {domid} asked for, but this process is domain "
                             f"{sim_domid} of the simulated Xen")
        # SimDomain's grants/evtchn are the concrete Sim* classes, which the invariant
        # attributes of the Domain protocol do not accept; they implement its protocols.
        return cast(Domain, SimDomain.from_env(dict(env)))
    from harness.xen.real.domain import RealDomain

    return RealDomain(domid)
