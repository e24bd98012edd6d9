"""One domain's view of a real Xen host: pyxs XenStore, gntalloc/gntdev, evtchn."""

from __future__ import annotations

import os

from harness.xen.api import EventChannels, Grants, Store
from harness.xen.real.evtchn import DEVICE as EVTCHN_DEVICE
from harness.xen.real.evtchn import RealEventChannels
from harness.xen.real.grants import GNTDEV, RealGrants
from harness.xen.real.pyxs_store import PyxsStore


class NoXenHere(OSError):
    """This machine has no Xen devices: not a Xen domain (or the modules are not loaded)."""


class RealDomain:
    """``api.Domain`` on a real Xen host, as domain ``domid`` (the one this process is)."""

    def __init__(self, domid: int) -> None:
        missing = [d for d in (EVTCHN_DEVICE, GNTDEV) if not os.path.exists(d)]
        if missing:
            raise NoXenHere(f"no Xen on this machine ({', '.join(missing)} missing): run "
                            "on a Xen host, or on the simulated Xen (sndif-harness sim exec)")
        self.domid = domid
        self.store: Store = PyxsStore(domid=domid)
        try:
            self.grants: Grants = RealGrants()
            self.evtchn: EventChannels = RealEventChannels()
        except BaseException:
            self.store.close()
            raise

    def close(self) -> None:
        for part in (self.evtchn, self.grants, self.store):
            part.close()
