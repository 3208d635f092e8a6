"""The multinomial CUSUM calibration against simulation (seeded).

:func:`multinomial_cusum_threshold` sets a chart's threshold so that its
false-alarm rate, averaged over the ``Dirichlet(counts + 1/2)`` posterior of
the bin probabilities, is ``1 / arl``. Wald's approximation ignores the
overshoot of the boundary, so the simulated rate should lie at or a little
below the target: these tests accept a factor of 3 below and 25% above.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_monitor.detectors.calibration import (
    bernoulli_cusum_threshold,
    multinomial_cusum_threshold,
    multinomial_false_alarm_rate,
)


def simulated_rate(probabilities: np.ndarray, increments: np.ndarray, thresholds: np.ndarray,
                   steps: int, chains: int, seed: int) -> float:
    """False alarms per value of CUSUMs restarted after each alarm; one row of bins per chart."""
    rng = np.random.default_rng(seed)
    charts = len(thresholds)
    cumulative = np.cumsum(probabilities, axis=1)
    sums = np.zeros((charts, chains))
    alarms = 0
    rows = np.arange(charts)[:, None]
    for _ in range(steps):
        draws = rng.random((charts, chains))
        bins = (draws[:, :, None] > cumulative[:, None, :-1]).sum(axis=2)
        sums = np.maximum(0.0, sums + increments[rows, bins])
        over = sums > thresholds[:, None]
        alarms += int(over.sum())
        sums[over] = 0.0
    return alarms / (charts * chains * steps)


def test_two_bins_agree_with_the_bernoulli_calibration():
    up, down = math.log(0.14 / 0.06), math.log(0.94 / 0.86)
    bernoulli = bernoulli_cusum_threshold(50, 1000, up, down, 1e6)
    assert multinomial_cusum_threshold((50, 950), (up, -down), 1e6) == pytest.approx(bernoulli, abs=0.05)


def test_bins_with_equal_increments_merge():
    # the Dirichlet aggregates: splitting a bin into two with the same increment changes only
    # the prior (half a count more in the merged bin)
    whole = multinomial_false_alarm_rate(12.0, (300, 500, 200), (0.4, -0.3, 0.2))
    split = multinomial_false_alarm_rate(12.0, (100, 500, 200, 200), (0.4, -0.3, 0.2, 0.4))
    assert split == pytest.approx(whole, rel=0.03)
    assert split != whole


def test_threshold_inverts_the_rate():
    counts, increments = (120, 400, 380, 100), (1.1, -0.4, -0.5, 0.3)
    threshold = multinomial_cusum_threshold(counts, increments, 1e8)
    assert multinomial_false_alarm_rate(threshold, counts, increments) == pytest.approx(1e-8, rel=1e-6)
    # more uncertainty (a smaller reference of the same shares) needs a higher threshold
    smaller = multinomial_cusum_threshold(tuple(c // 4 for c in counts), increments, 1e8)
    assert smaller > threshold + 0.5


def test_known_probabilities_meet_the_target_in_simulation():
    # a reference of a million values: the posterior is the true p, and Wald's ARL is checked alone
    p = np.array([0.1, 0.2, 0.4, 0.3])
    q = np.array([0.25, 0.25, 0.3, 0.2])
    increments = np.log(q / p)
    arl = 400.0
    threshold = multinomial_cusum_threshold(tuple((p * 1e6).astype(int).tolist()), tuple(increments.tolist()), arl)
    rate = simulated_rate(p[None, :], increments[None, :], np.array([threshold]), steps=20_000, chains=500, seed=1)
    assert 1 / (3 * arl) <= rate <= 1.25 / arl, rate * arl


def test_the_posterior_average_meets_the_target_over_unlucky_references():
    # Small references drawn from the truth: each designs its own chart (q: its own estimate
    # with the first bin's share doubled) and threshold; the rate over all of them meets the target.
    rng = np.random.default_rng(7)
    truth = np.array([0.05, 0.15, 0.3, 0.5])
    arl, references = 300.0, 60
    increments, thresholds = [], []
    for _ in range(references):
        counts = rng.multinomial(200, truth)
        estimate = (counts + 0.5) / (200 + 2.0)
        alternative = estimate.copy()
        alternative[0] *= 2.0
        alternative[1:] *= (1 - alternative[0]) / alternative[1:].sum()
        steps = np.log(alternative / estimate)
        increments.append(steps)
        thresholds.append(multinomial_cusum_threshold(tuple(counts.tolist()), tuple(steps.tolist()), arl))
    rate = simulated_rate(np.tile(truth, (references, 1)), np.array(increments), np.array(thresholds),
                          steps=6_000, chains=60, seed=2)
    assert 1 / (3 * arl) <= rate <= 1.25 / arl, rate * arl
