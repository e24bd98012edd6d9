"""A real Xen host as a :class:`harness.xen.api.Platform`: this process is one domain of
it; domains are made by the host's toolstack, not by the harness; no accounting."""

from __future__ import annotations

import os
from typing import TypeVar

from harness.xen.api import Domain, PlatformError
from harness.xen.real.domain import RealDomain
from harness.xen.real.pyxs_store import PyxsStore
from protocol_models.xenstore import XsError

C = TypeVar("C")


def own_domid() -> int:
    """The id of the domain this process runs in (its XenStore home's ``domid``)."""
    store = PyxsStore()
    try:
        return int(store.read("domid"))
    finally:
        store.close()


class RealPlatform:
    kind = "real"

    def domain(self, domid: int) -> Domain:
        return RealDomain(domid)

    def ensure_domain(self, domid: int, name: str) -> None:
        store = PyxsStore(domid=0)
        try:
            store.read(f"/local/domain/{domid}/domid")
        except XsError as exc:
            if exc.name == "EACCES":
                return  # there, but not ours to read (a guest asking after dom0)
            raise PlatformError(f"domain {domid} ({name}) does not exist on this Xen host: "
                                "create it with the toolstack first") from exc
        finally:
            store.close()

    def process_env(self, domid: int, *, foreign: bool = False) -> dict[str, str]:
        return dict(os.environ)  # a real host's processes reach Xen through its devices

    def capability(self, kind: type[C]) -> C | None:
        return None

    def close(self) -> None:
        pass
