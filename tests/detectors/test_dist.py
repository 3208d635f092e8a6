"""The scipy.special forms of the default detectors' distribution functions equal scipy.stats'."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from stream_monitor.detectors import _dist


def test_chi_square_functions_are_scipy_stats_own() -> None:
    rng = np.random.default_rng(11)
    for df in range(1, 120):
        for alpha in rng.uniform(1e-12, 0.5, 5):
            assert _dist.chi2_isf(alpha, df) == float(stats.chi2.isf(alpha, df))
        for x in rng.uniform(0.0, 400.0, 5):
            assert _dist.chi2_sf(x, df) == float(stats.chi2.sf(x, df))
    q = (np.arange(256) + 0.5) / 256
    for df in (2, 29, 99, 499, 4999):
        assert np.array_equal(_dist.chi2_ppf(q, df), stats.chi2.ppf(q, df))


def test_beta_ppf_is_scipy_stats_own() -> None:
    rng = np.random.default_rng(12)
    for _ in range(2000):
        q, n = rng.uniform(0.01, 0.999), int(rng.integers(1, 100_000))
        events = int(rng.integers(0, n + 1))
        a, b = events + 0.5, n - events + 0.5
        assert _dist.beta_ppf(q, a, b) == float(stats.beta.ppf(q, a, b))


@pytest.mark.parametrize("size", [1, 7, 100, 1000])
def test_betabinom_sf_is_scipy_stats_own(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(200):
        reference_size = int(rng.integers(10, 50_000))
        reference_errors = int(rng.integers(0, reference_size + 1))
        a, b = reference_errors + 0.5, reference_size - reference_errors + 0.5
        k = int(rng.integers(-1, size + 2))
        assert _dist.betabinom_sf(k, size, a, b) == float(stats.betabinom(size, a, b).sf(k)), (k, size, a, b)


def test_the_default_detectors_do_not_import_scipy_stats() -> None:
    """Building and feeding the default sets (numeric, categorical, labels) leaves scipy.stats unimported."""
    code = """
import sys
import numpy as np
from stream_monitor.detectors import build, default_specs
from stream_monitor.monitor import Monitor
rng = np.random.default_rng(1)
for kind, values in (("numeric", rng.normal(0, 1, 6000)), ("categorical", [str(v) for v in rng.integers(0, 4, 6000)]),
                     ("error", (rng.uniform(0, 1, 6000) < 0.1).astype(float))):
    for spec in default_specs(kind):
        detector = build(spec, family_tests=4)
        detector.update(values if kind != "numeric" else values + np.r_[np.zeros(3000), np.ones(3000)])
print(sorted(m for m in sys.modules if m.startswith("scipy.stats")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
