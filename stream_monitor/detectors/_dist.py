"""The few distribution functions the default detectors need, from ``scipy.special``.

``scipy.stats`` is a large import: about 50 MiB more resident memory than
``scipy.special`` and ``scipy.optimize``, which is a tenth of the 10k-signal
budget (bench/memory.py). The default detectors use five of its functions;
each is here as the ``scipy.special`` function ``scipy.stats`` itself calls,
so the numbers are the same floats (tests/detectors/test_dist.py holds them
equal to ``scipy.stats`` over many arguments). The windowed KS detector,
which needs ``scipy.stats``' two-sample distribution, imports it when it is
built.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

__all__ = ["beta_ppf", "betabinom_sf", "chi2_isf", "chi2_ppf", "chi2_sf"]


def chi2_isf(alpha: float, df: int) -> float:
    """``scipy.stats.chi2.isf(alpha, df)``: the value a chi-square variable exceeds with probability alpha."""
    return float(special.chdtri(df, alpha))


def chi2_sf(x: float, df: int) -> float:
    """``scipy.stats.chi2.sf(x, df)``: the probability a chi-square variable exceeds x."""
    return float(special.chdtrc(df, x))


def chi2_ppf(q: np.ndarray, df: float) -> np.ndarray:
    """``scipy.stats.chi2.ppf(q, df)`` for probabilities strictly between 0 and 1."""
    return 2.0 * special.gammaincinv(df / 2.0, q)  # type: ignore[no-any-return]


def beta_ppf(q: np.ndarray | float, a: float, b: float) -> Any:
    """``scipy.stats.beta.ppf(q, a, b)`` for ``0 < q < 1`` (an array for an array)."""
    return special.betaincinv(a, b, q)


def betabinom_sf(k: int, n: int, a: float, b: float) -> float:
    """``scipy.stats.betabinom(n, a, b).sf(k)``: P(X > k) for a beta-binomial count X.

    As ``scipy.stats`` computes it for a count within the support: one less
    the sum of the probabilities of 0..k.
    """
    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    counts = np.arange(0, k + 1, dtype=np.float64)
    log_pmf = (-np.log(n + 1) - special.betaln(n - counts + 1, counts + 1)
               + special.betaln(counts + a, n - counts + b) - special.betaln(a, b))
    return float(np.clip(1.0 - np.sum(np.exp(log_pmf), axis=0), 0.0, 1.0))
