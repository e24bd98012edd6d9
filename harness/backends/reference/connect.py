"""Which Xen this process talks to: the simulated one named by the environment
(``Sim.env(domid)``: ``XEN_SIM_DIR``, ``XEN_SIM_DOMID``), else a real host."""

from __future__ import annotations

import os

from harness.xen.api import Domain


def connect_domain(domid: int, environ: dict[str, str] | None = None) -> Domain:
    env = dict(os.environ if environ is None else environ)
    if "XEN_SIM_DIR" in env:
        from harness.xen.sim.client import SimDomain

        sim_domid = int(env.get("XEN_SIM_DOMID", "0"))
        if sim_domid != domid:
            raise ValueError(f"--domid {domid} but the environment is domain {sim_domid}")
        return SimDomain.from_env(env)
    return _real_domain(domid)


def _real_domain(domid: int) -> Domain:
    """A real Xen host: pyxs XenStore, /dev/xen/gntdev, /dev/xen/evtchn."""
    from harness.xen.real.evtchn import RealEventChannels
    from harness.xen.real.grants import RealGrants
    from harness.xen.real.pyxs_store import PyxsStore

    class RealDomain:
        def __init__(self) -> None:
            self.domid = domid
            self.store = PyxsStore(domid=domid)
            self.grants = RealGrants()
            self.evtchn = RealEventChannels()

        def close(self) -> None:
            for part in (self.evtchn, self.grants, self.store):
                part.close()

    return RealDomain()  # type: ignore[return-value]
