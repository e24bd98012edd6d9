"""CUR_POS pacing judged statistically (SND-E-01, E-02; AMBIG-13 leaves the jitter open).

Timing on a shared machine is noisy, so one interval proves nothing: the judgement is made
over many intervals (:attr:`PacingTolerance.min_intervals`) and on distributions, with a
tolerance band around what ``period_sz`` implies:

* the **median interval** between events against the ideal ``period_sz / (frame * rate)``;
* the **median position step** between events against ``period_sz`` (octets);
* the **events per period** of position advanced (a flood of events is far above 1);
* the **throughput**: the Theil-Sen slope of position over time against ``frame * rate``
  (the position advances in real time; robust to a few late timestamps).

A median is "in" only when its confidence interval (order statistics, distribution-free)
lies inside the band, "out" only when the interval lies wholly outside, and undecided
otherwise: the caller then samples more, and finally reports INCONCLUSIVE, never a guess.
The distributions are the evidence (:attr:`PacingReport.evidence`).

Tolerances are defaults here; the lead wires them to options later.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class PacingTolerance:
    """The bands, as ratios to the ideal value, and how much evidence a verdict needs."""

    min_intervals: int = 40
    interval_ratio: tuple[float, float] = (0.75, 1.5)  # median interval / ideal interval
    step_ratio: tuple[float, float] = (0.75, 1.5)  # median position step / period_sz
    throughput_ratio: tuple[float, float] = (0.8, 1.25)  # position slope / (frame * rate)
    max_events_per_period: float = 1.5  # events per period_sz of position advanced
    confidence: float = 0.95  # of the medians' confidence intervals


@dataclass(frozen=True)
class Distribution:
    """Order statistics of a sample, and a distribution-free confidence interval of its
    median (None bounds when the sample is too small for the confidence asked)."""

    count: int
    median: float
    p5: float
    p95: float
    ci_low: float | None
    ci_high: float | None

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = 0.95) -> Distribution:
        if not values:
            raise ValueError("no values")
        xs = sorted(values)
        lo, hi = median_ci(xs, confidence)
        return cls(len(xs), statistics.median(xs), percentile(xs, 5), percentile(xs, 95),
                   lo, hi)

    def scaled(self, factor: float, digits: int = 3) -> dict[str, Any]:
        """The distribution in other units (e.g. ns -> ms), rounded, as evidence."""
        def r(v: float | None) -> float | None:
            return None if v is None else round(v * factor, digits)
        return {"count": self.count, "median": r(self.median), "p5": r(self.p5),
                "p95": r(self.p95), "median_ci": [r(self.ci_low), r(self.ci_high)]}


def percentile(sorted_xs: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_xs) == 1:
        return float(sorted_xs[0])
    k = (len(sorted_xs) - 1) * p / 100
    f = math.floor(k)
    c = min(f + 1, len(sorted_xs) - 1)
    return sorted_xs[f] + (sorted_xs[c] - sorted_xs[f]) * (k - f)


def median_ci(sorted_xs: Sequence[float], confidence: float) -> tuple[float | None, float | None]:
    """[x_(j), x_(n-j+1)] with the largest j such that P(Binom(n, 1/2) <= j-1) <= alpha/2:
    it covers the true median with probability >= ``confidence``, whatever the
    distribution."""
    n = len(sorted_xs)
    alpha_half = (1 - confidence) / 2
    j, cum = 0, 0.0
    while j < n:
        nxt = cum + math.comb(n, j) / 2 ** n  # P(B <= j)
        if nxt > alpha_half:
            break
        cum, j = nxt, j + 1
    if j == 0:
        return None, None
    return float(sorted_xs[j - 1]), float(sorted_xs[n - j])


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Median of the pairwise slopes dy/dx (robust to outliers); None without two distinct
    x values."""
    slopes = [(y2 - y1) / (x2 - x1)
              for i, (x1, y1) in enumerate(points) for (x2, y2) in points[i + 1:]
              if x2 != x1]
    return statistics.median(slopes) if slopes else None


def _band(dist: Distribution, lo: float, hi: float) -> str:
    """"in", "out" or "undecided" for the median's confidence interval vs [lo, hi]."""
    if dist.ci_low is None or dist.ci_high is None:
        return "undecided"
    if dist.ci_high < lo or dist.ci_low > hi:
        return "out"
    if lo <= dist.ci_low and dist.ci_high <= hi:
        return "in"
    return "undecided"


@dataclass(frozen=True)
class PacingReport:
    problems: tuple[str, ...]  # confidently outside a band: the backend's pacing is wrong
    undecided: tuple[str, ...]  # not enough evidence either way (sample more)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "fail" if self.problems else "undecided" if self.undecided else "pass"

    def summary(self) -> str:
        e = self.evidence
        iv = e.get("interval_ms", {})
        return (f"{e.get('events', 0)} events, ideal interval {e.get('ideal_interval_ms')} "
                f"ms, intervals median {iv.get('median')} ms (CI {iv.get('median_ci')}), "
                f"p5 {iv.get('p5')}, p95 {iv.get('p95')}; step median "
                f"{e.get('step_octets', {}).get('median')} octets of period_sz "
                f"{e.get('period_sz')}; throughput ratio {e.get('throughput_ratio')}; "
                f"events per period {e.get('events_per_period')}")


def judge_pacing(samples: Sequence[tuple[int, int]], *, period_sz: int, frame_size: int,
                 rate: int, tolerance: PacingTolerance | None = None) -> PacingReport:
    """Judge CUR_POS ``samples`` ``(t_ns, position)`` of one running stretch, in arrival
    order, against what ``period_sz`` (octets), ``frame_size`` and ``rate`` imply."""
    tol = tolerance or PacingTolerance()
    if period_sz <= 0 or frame_size <= 0 or rate <= 0:
        raise ValueError("period_sz, frame_size and rate must be positive")
    bytes_per_s = frame_size * rate
    ideal_ns = period_sz * NS_PER_S / bytes_per_s
    evidence: dict[str, Any] = {
        "events": len(samples), "period_sz": period_sz, "frame_size": frame_size,
        "rate": rate, "ideal_interval_ms": round(ideal_ns / 1e6, 3),
        "tolerance": asdict(tol)}
    problems: list[str] = []
    undecided: list[str] = []
    n_intervals = len(samples) - 1
    if n_intervals < max(tol.min_intervals, 1):
        undecided.append(f"only {max(n_intervals, 0)} intervals (need "
                         f"{tol.min_intervals})")
        return PacingReport((), tuple(undecided), evidence)

    intervals = [b[0] - a[0] for a, b in itertools.pairwise(samples)]
    steps = [b[1] - a[1] for a, b in itertools.pairwise(samples)]
    iv = Distribution.of(intervals, tol.confidence)
    st = Distribution.of(steps, tol.confidence)
    evidence["interval_ms"] = iv.scaled(1e-6)
    evidence["step_octets"] = st.scaled(1.0)

    span = samples[-1][1] - samples[0][1]
    per_period = math.inf if span <= 0 else n_intervals / (span / period_sz)
    evidence["events_per_period"] = None if math.isinf(per_period) else round(per_period, 3)
    slope = theil_sen_slope([(t, p) for t, p in samples])
    through = None if slope is None else slope * NS_PER_S / bytes_per_s
    evidence["throughput_ratio"] = None if through is None else round(through, 3)

    if per_period > tol.max_events_per_period:
        problems.append(f"{n_intervals} events for {span} octets of position: "
                        f"{per_period:.3g} events per period_sz "
                        f"(at most {tol.max_events_per_period})")
    for name, dist, ideal, (lo, hi), unit in (
            ("interval between events", iv, ideal_ns, tol.interval_ratio, 1e-6),
            ("position step between events", st, period_sz, tol.step_ratio, 1.0)):
        where = _band(dist, lo * ideal, hi * ideal)
        ci = [None if v is None else round(v * unit, 3) for v in (dist.ci_low, dist.ci_high)]
        text = (f"median {name} {dist.median * unit:.3f} (CI {ci}) vs ideal "
                f"{ideal * unit:.3f} {'ms' if unit != 1.0 else 'octets'}, band "
                f"[{lo}, {hi}] x ideal")
        if where == "out":
            problems.append(text)
        elif where == "undecided":
            undecided.append(text)
    if through is None:
        problems.append("the events carry no time span to measure throughput on")
    elif not tol.throughput_ratio[0] <= through <= tol.throughput_ratio[1]:
        problems.append(f"position advances at {through:.3f} x frame * rate (band "
                        f"{list(tol.throughput_ratio)})")
    return PacingReport(tuple(problems), tuple(undecided), evidence)
