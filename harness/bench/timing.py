"""Timing helpers shared by the bench groups: interleaved rates, percentiles, and the raw
two-process socketpair ping-pong every round-trip figure is compared with."""

from __future__ import annotations

from collections.abc import Sequence

from harness.rates import echo_process, interleaved_rates, raw_pinger, reap

__all__ = ["echo_process", "interleaved_rates", "raw_pinger", "reap"]

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; ``values`` must not be empty."""
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[k]
