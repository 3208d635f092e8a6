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

A detector running several charts (both directions, several ``k``) splits
its rate equally between them; the union of the charts then alarms at most at
the sum of their rates (Bonferroni), so the detector meets its target.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import optimize, stats

__all__ = [
    "bernoulli_cusum_threshold",
    "bernoulli_false_alarm_rate",
    "gaussian_cusum_threshold",
    "gaussian_false_alarm_rate",
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
    sd_ratio = np.sqrt(stats.chi2.ppf(quantiles, warmup - 1) / (warmup - 1))[None, :]
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


def _tilt_roots(rates: np.ndarray, up: float, down: float) -> tuple[np.ndarray, np.ndarray]:
    """Per true rate: the non-zero root ``theta`` of ``log E[exp(theta Y)]``, and ``E[Y]``.

    ``Y`` is ``up`` with probability ``rate`` and ``-down`` otherwise. The
    root is positive when ``E[Y] < 0`` and negative when ``E[Y] > 0``; found
    by bisection, vectorised over the rates.
    """
    mean = rates * up - (1.0 - rates) * down
    negative = mean < 0
    log_p, log_q = np.log(rates), np.log1p(-rates)
    # Brackets: at these ends one term of the moment generating function alone is 1.
    low = np.where(negative, 0.0, log_q / down * (1.0 + 1e-9))
    high = np.where(negative, -log_p / up * (1.0 + 1e-9) + 1e-300, 0.0)
    for _ in range(120):
        middle = 0.5 * (low + high)
        log_mgf = np.logaddexp(log_p + middle * up, log_q - middle * down)
        right = np.where(negative, log_mgf < 0, log_mgf > 0)
        low = np.where(right, middle, low)
        high = np.where(right, high, middle)
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
    rates = stats.beta.ppf(0.5 * (edges[1:] + edges[:-1]), events + 0.5, n - events + 0.5)
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
