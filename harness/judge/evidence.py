"""What a case may use as evidence beyond the protocol: the platform's accounting of
grant mappings and bound ports (the simulated Xen's). A case that needs it cannot judge
on a platform without it, and says so (N/A), never guesses."""

from __future__ import annotations

from typing import Any

from harness.certify.outcomes import not_applicable
from harness.xen.api import GrantAccounting


def accounting(supervisor: Any) -> GrantAccounting:
    """The grant/port accounting of ``supervisor``'s platform, or end the case N/A."""
    acc: GrantAccounting | None = supervisor.world.accounting
    if acc is None:
        not_applicable("needs the platform's grant accounting (the simulated Xen)")
    return acc


def backend_maps(supervisor: Any, history: bool = False) -> list[Any]:
    """The frontend's pages the backend domain maps now (or, with ``history``, recently)."""
    spec = supervisor.world.spec
    return accounting(supervisor).mappings(granter=spec.frontend_domid,
                                           mapper=spec.backend_domid, history=history)
