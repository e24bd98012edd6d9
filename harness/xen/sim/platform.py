"""The simulated Xen as a :class:`harness.xen.api.Platform`: the one public entry through
which code above ``harness/xen`` uses the simulator (see :func:`harness.xen.platforms.
open_platform`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

from harness.xen.api import (
    Domain,
    FaultInjection,
    FaultRecord,
    GrantAccounting,
    MappingRecord,
    PortRecord,
    XenStoreAccounting,
)
from harness.xen.sim.hvproto import PortState
from harness.xen.sim.runner import Sim, running_sim

C = TypeVar("C")


class SimAccounting:
    """:class:`GrantAccounting` over the sim daemon's records."""

    def __init__(self, sim: Sim) -> None:
        self._sim = sim

    def mappings(self, granter: int | None = None, mapper: int | None = None,
                 history: bool = False) -> list[MappingRecord]:
        return [MappingRecord(m.granter, m.mapper, m.ref, m.readonly, m.since, m.until)
                for m in self._sim.mappings(granter, mapper, history)]

    def ports(self, domid: int) -> list[PortRecord]:
        return [PortRecord(p.domid, p.port, p.state == PortState.INTERDOMAIN,
                           p.remote_domid, p.remote_port) for p in self._sim.ports(domid)]


class SimFaults:
    """:class:`FaultInjection` through the sim daemon (C programs see it too)."""

    def __init__(self, sim: Sim) -> None:
        self._sim = sim

    def inject_fault(self, domid: int, op: str, errno: int | str | None = None,
                     mode: str | tuple[str, int] = "once") -> int:
        return self._sim.inject_fault(domid, op, errno, mode)

    def clear_faults(self, domid: int | None = None, fault_id: int | None = None) -> int:
        return self._sim.clear_faults(domid, fault_id)

    def faults(self) -> list[FaultRecord]:
        return [FaultRecord(f.id, f.domid, f.op, f.errno, f.mode, f.n, f.calls, f.fired)
                for f in self._sim.faults()]


class SimPlatform:
    """A running simulated Xen (its daemon started by :func:`sim_platform`)."""

    kind = "sim"

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self._caps: dict[type, Any] = {GrantAccounting: SimAccounting(sim),
                                       XenStoreAccounting: sim, FaultInjection: SimFaults(sim)}

    @property
    def dir(self) -> str:
        return self.sim.dir

    def domain(self, domid: int) -> Domain:
        from harness.xen.sim.client import SimDomain

        return SimDomain(self.sim.dir, domid, self.sim.timeout)  # type: ignore[return-value]

    def ensure_domain(self, domid: int, name: str) -> None:
        if all(d.domid != domid for d in self.sim.control.list_domains()):
            self.sim.create_domain(domid, name)

    def process_env(self, domid: int, *, foreign: bool = False) -> dict[str, str]:
        if not foreign:
            return self.sim.env(domid)
        from harness.xen.sim.clibs.build import build_libs
        from harness.xen.sim.simexec import domain_env

        return domain_env(self.sim.dir, domid, build_libs())

    def capability(self, kind: type[C]) -> C | None:
        return self._caps.get(kind)

    def close(self) -> None:
        self.sim.close_clients()


@contextlib.contextmanager
def sim_platform(dir: str | None = None, *, timeout: float = 5.0) -> Iterator[SimPlatform]:
    """A simulated Xen for the block; stopped (nothing left behind) on the way out."""
    with running_sim(dir, timeout=timeout) as sim:
        platform = SimPlatform(sim)
        try:
            yield platform
        finally:
            platform.close()
