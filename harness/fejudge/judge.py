"""The judge as the reference backend holds it: one ledger for the run, an observer per
device, and the results.json written at every frontend Closed and at the end."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .ledger import Ledger
from .observer import DeviceObserver, Seam
from .results import findings_document, now_iso, write_findings

log = logging.getLogger("harness.fejudge")


class FrontendJudge:
    def __init__(self, path: str | os.PathLike[str], *, name: str = "frontend",
                 defects: Sequence[str] = (), platform: str = "sim") -> None:
        self.path = Path(path)
        self.name, self.defects, self.platform = name, list(defects), platform
        self.ledger = Ledger()
        self.devices: list[DeviceObserver] = []
        self.started = now_iso()
        self.domids: set[int] = set()

    def device(self, seam: Seam, fe_domid: int, devid: int, fe_path: str, be_path: str
               ) -> DeviceObserver:
        obs = DeviceObserver(self.ledger, seam, fe_domid, devid, fe_path, be_path)
        self.devices.append(obs)
        self.domids.add(fe_domid)
        return obs

    def write(self, final: bool = False) -> None:
        """results.json now (a failure to write is logged: it must not stop serving)."""
        if final:
            for d in self.devices:
                d.finish()
        identity = {"name": self.name, "defects": self.defects,
                    "domid": sorted(self.domids)[0] if self.domids else None,
                    "report_dir": str(self.path.parent)}
        try:
            doc = findings_document(self.ledger, identity, platform=self.platform,
                                    started=self.started, final=final)
            write_findings(self.path, doc)
        except Exception:
            log.exception("frontend judge: writing %s", self.path)
