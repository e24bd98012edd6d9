"""The bench's rows, the printed table and the JSON files (``reports/bench/<group>.json``).

A row is one figure: its value, the reference it is compared with (measured in the same
run: the machine is shared and noisy, so only a ratio taken under the same load means
anything), the ratio, the target and whether it holds (``yes``, ``no``, or ``printed``
for a figure without a target, or one that could not be measured on this machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOLDS = ("yes", "no", "printed")


@dataclass
class Row:
    """One figure of the bench."""

    figure: str
    value: float | None
    unit: str
    reference: float | None = None  # the reference's value, same unit, same run
    reference_name: str | None = None
    ratio: float | None = None  # value / reference (or as the target reads, see ``note``)
    target: str = "printed"  # e.g. ">= 100x", "<= 1 ms"; "printed" when none
    holds: str = "printed"
    note: str = ""  # why unavailable, what bounds it, how the ratio reads
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.holds not in HOLDS:
            raise ValueError(f"holds must be one of {HOLDS}, not {self.holds!r}")


def check(ok: bool | None) -> str:
    """``holds`` of a row with a target: ``printed`` when it could not be measured."""
    return "printed" if ok is None else ("yes" if ok else "no")


def unavailable(figure: str, unit: str, why: str, *, target: str = "printed",
                reference_name: str | None = None) -> Row:
    """A row that could not be measured here (a missing tool, a failed start): printed
    with the reason, never a crash of the whole bench."""
    return Row(figure, None, unit, reference_name=reference_name, target=target,
               holds="printed", note=f"unavailable: {why}")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width table (notes under the table, numbered)."""
    head = ("figure", "value", "reference", "ratio", "target", "holds")
    body = []
    notes = []
    for r in rows:
        ref = "-" if r.reference_name is None else (
            f"{_fmt(r.reference, r.unit)} ({r.reference_name})" if r.reference is not None
            else r.reference_name)
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}"
        holds = r.holds
        if r.note:
            notes.append(r.note)
            holds += f" [{len(notes)}]"
        body.append((r.figure, _fmt(r.value, r.unit), ref, ratio, r.target, holds))
    widths = [max(len(str(line[i])) for line in (head, *body)) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
           for line in (head, *body)]
    out.insert(1, "  ".join("-" * w for w in widths))
    out += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(out)


def host_info() -> dict[str, Any]:
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "loadavg": load}


def write_json(path: Path, group: str, rows: Sequence[Row], *, quick: bool,
               seconds: float) -> None:
    """``path`` written atomically (a temporary file renamed into place): a reader never
    sees half a file, and a run stopped midway leaves the previous one."""
    doc = {"group": group, "quick": quick, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()),
           "seconds": round(seconds, 3), "host": host_info(),
           "rows": [asdict(r) for r in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

