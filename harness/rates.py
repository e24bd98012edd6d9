"""Rates measured fairly on a shared machine: contenders in alternating short windows."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_rates(steps: dict[str, Callable[[], object]], seconds: float,
                      slices: int = 10, batch: int = 20) -> dict[str, float]:
    """Calls/s of each step, measured in alternating short windows so that a change of
    load on the machine affects every contender alike (a fair ratio from one run)."""
    counts = dict.fromkeys(steps, 0)
    spent = dict.fromkeys(steps, 0.0)
    window = seconds / (slices * len(steps))
    for _ in range(slices):
        for name, step in steps.items():
            start = time.perf_counter()
            deadline = start + window
            n = 0
            while True:
                for _ in range(batch):
                    step()
                n += batch
                now = time.perf_counter()
                if now >= deadline:
                    break
            counts[name] += n
            spent[name] += now - start
    return {name: counts[name] / spent[name] for name in steps}
