"""Thresholds from a false-alarm target: the calibration shared by the CUSUM detectors.

Every calibrated detector states its false-alarm target as an average run
length (ARL): the expected number of values between false alarms on a stream
that does not drift. The detectors here estimate the in-control behaviour of
their stream from a warm-up sample, so their false-alarm rate depends on how
far those estimates land from the truth. A threshold that is right for the
true parameters is too low for an unlucky warm-up, and the unlucky warm-ups
dominate the false alarms. The functions below therefore set thresholds so
that the false-alarm *rate averaged over the warm-up estimation error* meets
the target::

    E_warmup[ 1 / ARL(threshold | estimates) ]  <=  1 / target

Over many signals this is the quantity the user sees: the expected number of
false alarms per value.

Method
------
Gaussian CUSUM (:func:`gaussian_cusum_threshold`). Values are standardised by
the warm-up mean and standard deviation (``warmup`` values), then a one-sided
CUSUM with reference value ``k`` runs on the standardised values. With
``u = (mean_hat - mean) / sd`` (normal, variance ``1 / warmup``) and
``v = sd_hat / sd`` (a chi variable with ``warmup - 1`` degrees of freedom),
a chart with threshold ``h`` sees increments with drift ``-(u + k v) / v``
and scale ``1 / v``. Its ARL is Siegmund's approximation for a Gaussian random
walk, ``ARL(mu, b) = (exp(-2 mu b) + 2 mu b - 1) / (2 mu^2)`` with
``mu = -u - k v``, ``b = h v + 1.166`` (within a few percent of the
Brook-Evans Markov-chain value at these thresholds). The expectation over
``u`` uses Gauss-Hermite quadrature, over ``v`` a grid of chi quantiles. The
threshold solves the equation above with Brent's method. Nothing is random:
the result is a pure function of its arguments and is cached.

Bernoulli CUSUM (:func:`bernoulli_cusum_threshold`). For 0/1 streams the
chart adds the log-likelihood ratio of a design alternative ``p1`` against
a design rate ``p0`` derived from ``k`` events in ``n`` warm-up values (the
error-rate detector uses an upper credible bound, which keeps the rate at
which the chart drifts upwards far above plausible true rates). The true
rate is unknown, so the false-alarm rate is averaged over the posterior of
the true rate given the warm-up (Jeffreys prior:
``Beta(k + 1/2, n - k + 1/2)``, cells of equal posterior probability,
log-spaced in both tails). The ARL for a true rate ``p`` uses the exponential-tilt
(Wald) approximation ``ARL = (exp(theta h) - theta h - 1) / (-theta mu)``,
where ``mu`` is the mean increment and ``theta != 0`` solves
``E[exp(theta Y)] = 1``. Ignoring the overshoot of the boundary makes it a
conservative (low) estimate of the ARL.

Multinomial CUSUM (:func:`multinomial_cusum_threshold`). Each value falls
in one of ``K`` bins (reference quantile bins of a numeric value, or
categories) and the chart adds a fixed increment ``s_i`` for bin ``i``,
typically ``log(q_i / p_i)`` for a design alternative ``q``. The Bernoulli
chart is the case ``K = 2``. The true bin probabilities are known only
through the reference counts ``c_i``, so the false-alarm rate is averaged
over their posterior ``Dirichlet(c + 1/2)`` (Jeffreys). Bins with equal
increments are merged first (the Dirichlet aggregates: a merged bin is
Dirichlet with the summed parameters). The posterior is integrated over a
fixed sample of 4,096 points (normalised gamma draws from a generator seeded
with 0), so the threshold is a deterministic function of its arguments. For each point the ARL is
Wald's, as for the Bernoulli chart, with ``theta != 0`` solving
``sum_i p_i exp(theta s_i) = 1`` (bisection, vectorised over the points).
When reference bins are cut at the reference's own order statistics, the true
probabilities of the bins are ``Dirichlet(c)`` with one more in the top bin
(spacings of uniform order statistics), within half a count of this
posterior in every bin, so the same calibration holds for quantile bins of a
continuous variable, whatever its distribution.

A detector running several charts (both directions, several ``k``) splits
its rate equally between them; the union of the charts then alarms at most at
the sum of their rates (Bonferroni), so the detector meets its target.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize

from stream_monitor.detectors._dist import beta_ppf, chi2_ppf

__all__ = [
    "bernoulli_cusum_threshold",
    "bernoulli_false_alarm_rate",
    "gaussian_cusum_threshold",
    "gaussian_false_alarm_rate",
    "multinomial_cusum_threshold",
    "multinomial_false_alarm_rate",
    "siegmund_arl",
]

# Siegmund's correction for the overshoot of a Gaussian random walk.
_SIEGMUND_OVERSHOOT = 1.166
_HERMITE_NODES = 64
_CHI_NODES = 256
_POSTERIOR_NODES = 64


def siegmund_arl(drift: np.ndarray | float, threshold: np.ndarray | float) -> np.ndarray:
    """ARL of a one-sided CUSUM of unit-variance Gaussian increments.

    ``drift`` is the mean increment (negative when in control), ``threshold``
    the decision boundary, both in units of the increments' standard
    deviation. Arrays broadcast.
    """
    mu = np.asarray(drift, dtype=np.float64)
    b = np.asarray(threshold, dtype=np.float64) + _SIEGMUND_OVERSHOOT
    x = -2.0 * mu * b
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        arl = (np.expm1(x) - x) / (2.0 * mu * mu)
    return np.where(np.abs(mu) < 1e-9, b * b, arl)


@functools.lru_cache(maxsize=64)
def _gaussian_nodes(warmup: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hermite_x, hermite_w = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    mean_error = (hermite_x / math.sqrt(warmup))[:, None]
    quantiles = (np.arange(_CHI_NODES) + 0.5) / _CHI_NODES
    sd_ratio = np.sqrt(chi2_ppf(quantiles, warmup - 1) / (warmup - 1))[None, :]
    weights = (hermite_w / hermite_w.sum())[:, None] / _CHI_NODES
    return mean_error, sd_ratio, weights


def gaussian_false_alarm_rate(threshold: float, drift: float, warmup: int) -> float:
    """False alarms per value of one one-sided standardised CUSUM chart.

    Averaged over the error of estimating the mean and standard deviation from
    ``warmup`` Gaussian values; see the module docstring.
    """
    mean_error, sd_ratio, weights = _gaussian_nodes(warmup)
    arl = siegmund_arl(-mean_error - drift * sd_ratio, threshold * sd_ratio)
    return float(np.sum(weights / arl))


@functools.lru_cache(maxsize=256)
def gaussian_cusum_threshold(drift: float, warmup: int, arl: float) -> float:
    """Threshold ``h`` of a standardised one-sided CUSUM with reference ``drift``.

    The chart's false-alarm rate, averaged over the warm-up estimation error,
    is ``1 / arl``.
    """
    if drift <= 0 or warmup < 3 or arl <= 1:
        raise ValueError("need drift > 0, warmup >= 3 and arl > 1")
    target = -math.log(arl)

    def excess(h: float) -> float:
        return math.log(max(gaussian_false_alarm_rate(h, drift, warmup), 1e-300)) - target

    return float(optimize.brentq(excess, 1e-3, 500.0, xtol=1e-9, rtol=1e-12))


#: most bisection steps of a Bernoulli tilt root
_BISECTIONS = 120


def _tilt_roots(rates: np.ndarray, up: float, down: float) -> tuple[np.ndarray, np.ndarray]:
    """Per true rate: the non-zero root ``theta`` of ``log E[exp(theta Y)]``, and ``E[Y]``.

    ``Y`` is ``up`` with probability ``rate`` and ``-down`` otherwise. The
    root is positive when ``E[Y] < 0`` and negative when ``E[Y] > 0``; found
    by bisection, vectorised over the rates. The bisection stops early once
    no bracket moves: from then on every step would compute the same
    midpoints again, so the result is the one of all ``_BISECTIONS`` steps.
    """
    mean = rates * up - (1.0 - rates) * down
    negative = mean < 0
    log_p, log_q = np.log(rates), np.log1p(-rates)
    # Brackets: at these ends one term of the moment generating function alone is 1.
    low = np.where(negative, 0.0, log_q / down * (1.0 + 1e-9))
    high = np.where(negative, -log_p / up * (1.0 + 1e-9) + 1e-300, 0.0)
    for _ in range(_BISECTIONS):
        middle = 0.5 * (low + high)
        log_mgf = np.logaddexp(log_p + middle * up, log_q - middle * down)
        right = np.where(negative, log_mgf < 0, log_mgf > 0)
        new_low = np.where(right, middle, low)
        new_high = np.where(right, high, middle)
        if np.array_equal(new_low, low) and np.array_equal(new_high, high):
            break  # a fixed point: the brackets are adjacent floats (or equal) everywhere
        low, high = new_low, new_high
    return 0.5 * (low + high), mean


@functools.lru_cache(maxsize=1024)
def _bernoulli_posterior(
    events: int, n: int, up: float, down: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Cells of posterior probability, finer in both tails where the rate
    # matters most: a true rate above the estimate shortens the ARL sharply.
    tail = np.logspace(-15, -2, _POSTERIOR_NODES)
    edges = np.concatenate(
        [[0.0], tail, np.linspace(0.01, 0.99, 4 * _POSTERIOR_NODES)[1:-1], 1.0 - tail[::-1], [1.0]]
    )
    weights = np.diff(edges)
    rates = beta_ppf(0.5 * (edges[1:] + edges[:-1]), events + 0.5, n - events + 0.5)
    rates = np.clip(rates, 1e-300, 1.0 - 1e-16)
    thetas, means = _tilt_roots(rates, up, down)
    variances = rates * (1.0 - rates) * (up + down) ** 2
    return weights, thetas, means, variances, rates


def _wald_arl(theta: np.ndarray, mean: np.ndarray, variance: np.ndarray, threshold: float) -> np.ndarray:
    x = theta * threshold
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        arl = (np.expm1(x) - x) / (-theta * mean)
    # zero drift: the Brownian limit
    return np.where(np.abs(theta) < 1e-9, threshold * threshold / variance, arl)


def bernoulli_false_alarm_rate(
    threshold: float, events: int, n: int, up: float, down: float
) -> float:
    """False alarms per value of a Bernoulli CUSUM adding ``up`` per 1, ``-down`` per 0.

    Averaged over the posterior of the true rate after ``events`` ones in ``n``
    warm-up values; see the module docstring.
    """
    weights, thetas, means, variances, _ = _bernoulli_posterior(events, n, up, down)
    return float(np.sum(weights / _wald_arl(thetas, means, variances, threshold)))


@functools.lru_cache(maxsize=1024)
def bernoulli_cusum_threshold(events: int, n: int, up: float, down: float, arl: float) -> float:
    """Threshold of a Bernoulli CUSUM whose posterior-averaged ARL is ``arl``."""
    if not 0 <= events <= n or n < 1 or up <= 0 or down <= 0 or arl <= 1:
        raise ValueError("need 0 <= events <= n, up > 0, down > 0 and arl > 1")
    target = -math.log(arl)

    def excess(h: float) -> float:
        return math.log(max(bernoulli_false_alarm_rate(h, events, n, up, down), 1e-300)) - target

    return float(optimize.brentq(excess, 1e-6, 1e5, xtol=1e-9, rtol=1e-12))


# Points of the quasi-Monte Carlo rule over the Dirichlet posterior (a power of 2 for Sobol).
_DIRICHLET_POINTS = 4096


def _merged_bins(counts: tuple[int, ...], increments: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Posterior parameters ``counts + 1/2`` summed over bins of equal increment, and those increments."""
    merged: dict[float, float] = {}
    for count, increment in zip(counts, increments):
        merged[increment] = merged.get(increment, 0.0) + count + 0.5
    steps = np.array(sorted(merged), dtype=np.float64)
    return np.array([merged[step] for step in steps.tolist()]), steps


# Both posterior caches are small: a sample is 4,096 rows of bin probabilities (about
# 0.6 MiB at 18 bins) and a posterior three arrays of 4,096 (96 KiB); references of
# continuous data rarely repeat their merged bins, so a large cache only holds memory
# (at 256 and 1,024 entries they grew to about 250 MiB in a process of 10k signals).
# The thresholds themselves (a float per key) stay cached in large numbers.
@functools.lru_cache(maxsize=16)
def _dirichlet_points(alphas: tuple[float, ...]) -> np.ndarray:
    """A fixed sample of ``Dirichlet(alphas)`` (seed 0): rows of bin probabilities.

    Normalised gamma draws; a seeded sample rather than a quasi-random rule
    through gamma quantiles, which cost 20 times more for the same accuracy
    of the threshold (within about 0.05 nats at 4,096 points).
    """
    gammas = np.random.default_rng(0).standard_gamma(np.asarray(alphas), size=(_DIRICHLET_POINTS, len(alphas)))
    gammas = np.maximum(gammas, 1e-300)
    return gammas / gammas.sum(axis=1, keepdims=True)


def _multinomial_tilt_roots(probabilities: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row of ``probabilities``: ``theta != 0`` with ``sum p exp(theta s) = 1``, the mean and variance.

    The log moment generating function is convex and zero at 0 with slope
    the mean, so the other root has the sign opposite to the mean; at the
    bracket ends one term alone reaches 1 (``theta = -log(p_i) / s_i``).
    Rows whose chart can never rise (no positive increment) get ``theta = inf``.
    Newton's method from the far end of the bracket converges in a few steps where
    bisection takes a hundred.
    """
    log_p = np.log(probabilities)
    mean = probabilities @ steps
    variance = probabilities @ (steps * steps) - mean * mean
    negative = mean < 0
    with np.errstate(divide="ignore"):
        ends = -log_p / steps[None, :]
    rising = steps > 0
    if rising.any():
        high_up = ends[:, rising].min(axis=1) * (1.0 + 1e-9) + 1e-300
    else:
        high_up = np.full(len(mean), np.inf)
    falling = steps < 0
    low_down = ends[:, falling].max(axis=1) * (1.0 + 1e-9) if falling.any() else np.full(len(mean), -np.inf)
    # Newton from the far end of the bracket: on a convex function it moves
    # monotonically towards the root and never overshoots it. On that path the
    # moment generating function stays at or above 1 and no term exceeds 1
    # (up to the bracket's 1e-9), so the sum of exponentials neither overflows
    # nor underflows to zero and needs no shift by the row maximum; row sums
    # are matrix products (numpy's reductions along short rows cost ten times more).
    theta = np.where(negative, high_up, low_down)
    finite = np.isfinite(theta)
    theta = np.where(finite, theta, 0.0)
    ones = np.ones(len(steps))
    for _ in range(60):
        weights = theta[:, None] * steps
        weights += log_p
        np.exp(weights, out=weights)
        total = weights @ ones
        log_mgf = np.log(total)
        slope = (weights @ steps) / total
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(log_mgf > 0, log_mgf / slope, 0.0)
        step = np.where(np.isfinite(step), step, 0.0)
        theta = theta - step
        if np.all(np.abs(step) <= 1e-12 * np.maximum(np.abs(theta), 1e-300)):
            break
    theta = np.where(finite, theta, np.inf)
    return theta, mean, variance


@functools.lru_cache(maxsize=8)
def _multinomial_posterior(
    counts: tuple[int, ...], increments: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    alphas, steps = _merged_bins(counts, increments)
    if steps.size == 1:  # one increment: the chart only rises or only falls
        probabilities = np.ones((1, 1))
    else:
        probabilities = _dirichlet_points(tuple(alphas.tolist()))
    return _multinomial_tilt_roots(probabilities, steps)


def multinomial_false_alarm_rate(
    threshold: float, counts: tuple[int, ...], increments: tuple[float, ...]
) -> float:
    """False alarms per value of a CUSUM adding ``increments[i]`` for a value in bin ``i``.

    Averaged over the posterior ``Dirichlet(counts + 1/2)`` of the bin
    probabilities; see the module docstring.
    """
    thetas, means, variances = _multinomial_posterior(tuple(counts), tuple(increments))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        arl = _wald_arl(thetas, means, variances, threshold)
    arl = np.where(np.isinf(thetas), np.inf, arl)
    return float(np.mean(1.0 / arl))


@functools.lru_cache(maxsize=1024)
def multinomial_cusum_threshold(counts: tuple[int, ...], increments: tuple[float, ...], arl: float) -> float:
    """Threshold of a multinomial CUSUM whose posterior-averaged ARL is ``arl``.

    ``counts`` are the reference counts per bin and ``increments`` what a
    value in each bin adds to the chart. :class:`ValueError` when no
    threshold reaches the target (a chart that drifts upwards under too much
    of the posterior) or the arguments are malformed.
    """
    if len(counts) != len(increments) or len(counts) < 1 or min(counts) < 0 or arl <= 1:
        raise ValueError("need as many counts (>= 0) as increments and arl > 1")
    if not all(math.isfinite(step) for step in increments):
        raise ValueError("increments must be finite")
    if max(increments) <= 0:
        raise ValueError("no increment is positive: the chart can never rise")
    target = -math.log(arl)

    def excess(h: float) -> float:
        return math.log(max(multinomial_false_alarm_rate(h, counts, increments), 1e-300)) - target

    if excess(1e5) > 0:
        raise ValueError(f"no threshold reaches arl {arl:g}: the chart drifts upwards under too much of the posterior")
    return float(optimize.brentq(excess, 1e-6, 1e5, xtol=1e-9, rtol=1e-12))
