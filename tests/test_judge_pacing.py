"""The statistical pacing judgement (harness.judge.pacing): synthetic CUR_POS streams with
jitter pass, wrong cadences, floods and wrong rates fail, and too little or too noisy
evidence is undecided rather than guessed."""

from __future__ import annotations

import random

import pytest

from harness.judge.pacing import (
    Distribution,
    PacingTolerance,
    judge_pacing,
    median_ci,
    percentile,
    theil_sen_slope,
)

RATE, FRAME = 48000, 4
PERIOD = 480 * FRAME  # 10 ms
IDEAL_NS = 10_000_000


def stream(n: int, *, step: int = PERIOD, every_ns: float = IDEAL_NS, jitter_ns: float = 0,
           seed: int = 1) -> list[tuple[int, int]]:
    """``n`` events: position ``k * step`` at ``k * every_ns`` plus Gaussian jitter."""
    rnd = random.Random(seed)
    return [(int(k * every_ns + rnd.gauss(0, jitter_ns)), k * step) for k in range(1, n + 1)]


def judge(samples, **tol):
    return judge_pacing(samples, period_sz=PERIOD, frame_size=FRAME, rate=RATE,
                        tolerance=PacingTolerance(**tol))


def test_exact_pacing_passes_with_its_distribution_as_evidence():
    r = judge(stream(41))
    assert r.verdict == "pass", r.summary()
    e = r.evidence
    assert e["ideal_interval_ms"] == 10.0 and e["interval_ms"]["count"] == 40
    assert e["interval_ms"]["median"] == 10.0 and e["step_octets"]["median"] == PERIOD
    assert e["throughput_ratio"] == 1.0 and e["events_per_period"] == 1.0


def test_jittered_pacing_still_passes():
    # 1.5 ms of timing noise on 10 ms periods: single intervals range widely
    r = judge(stream(61, jitter_ns=1_500_000, seed=7))
    assert r.verdict == "pass", r.summary()
    iv = r.evidence["interval_ms"]
    assert iv["p5"] < 8.0 < 12.0 < iv["p95"]  # no single interval would have passed


def test_a_few_late_batches_do_not_fail_a_correct_backend():
    samples = stream(61)
    for k in (10, 30, 50):  # consumed late: the event and the next arrive together
        samples[k] = (samples[k + 1][0], samples[k][1])
    assert judge(samples).verdict == "pass"


def test_double_cadence_fails():
    r = judge(stream(41, step=2 * PERIOD, every_ns=2 * IDEAL_NS))
    assert r.verdict == "fail"
    assert any("interval between events" in p for p in r.problems)
    assert any("position step" in p for p in r.problems)


def test_a_flood_of_repeated_positions_fails_on_the_event_rate():
    samples = [(1_000_000 + k * 10_000, PERIOD * (1 + k // 20)) for k in range(60)]
    r = judge(samples)
    assert r.verdict == "fail"
    assert any("events per period_sz" in p for p in r.problems)


def test_positions_not_in_octets_fail_on_throughput():
    # a backend reporting frames instead of octets: right cadence, 1/FRAME the position
    r = judge(stream(41, step=PERIOD // FRAME))
    assert r.verdict == "fail"
    assert any("x frame * rate" in p for p in r.problems)


def test_too_few_intervals_is_undecided_not_a_verdict():
    r = judge(stream(20))
    assert r.verdict == "undecided" and "only 19 intervals" in r.undecided[0]


def test_a_median_straddling_the_band_edge_is_undecided():
    # intervals centred on the upper edge (1.5 x ideal) with noise: cannot tell
    r = judge(stream(41, step=PERIOD, every_ns=1.5 * IDEAL_NS, jitter_ns=3_000_000, seed=3),
              throughput_ratio=(0.1, 10.0))
    assert r.verdict == "undecided", r.summary()
    assert any("interval between events" in u for u in r.undecided)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        judge_pacing(stream(41), period_sz=0, frame_size=FRAME, rate=RATE)


# --- the statistics ---------------------------------------------------------------------------

def test_median_ci_uses_binomial_order_statistics():
    xs = list(range(1, 51))
    # n = 50, 95 %: P(B(50, .5) <= 17) = 0.0164 <= 0.025 < P(B <= 18) = 0.0325, so j = 18
    assert median_ci(xs, 0.95) == (18.0, 33.0)
    assert median_ci([1, 2, 3], 0.95) == (None, None)  # too few for 95 %
    assert median_ci(list(range(10)), 0.5)[0] is not None


def test_percentile_interpolates_like_numpy():
    xs = [1.0, 2.0, 3.0, 4.0]
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 4.0
    assert percentile([7.0], 5) == 7.0


def test_theil_sen_ignores_outliers():
    pts = [(float(x), 2.0 * x) for x in range(20)]
    pts[5] = (5.0, 1000.0)
    assert theil_sen_slope(pts) == pytest.approx(2.0)
    assert theil_sen_slope([(1.0, 1.0), (1.0, 2.0)]) is None


def test_distribution_scaled_rounds_every_statistic():
    d = Distribution.of([1e6 * x for x in range(1, 60)])
    s = d.scaled(1e-6)
    assert s["count"] == 59 and s["median"] == 30.0
    assert s["median_ci"][0] < 30.0 < s["median_ci"][1]
