"""Prediction scores: does a scale chart see a widening sooner on the logit scale? (a Gaussian z**2 stand-in)

Usage::

    .venv/bin/python bench/score_logit.py

Scores are ``sigmoid(b + w.x)`` (5 Gaussian inputs, ``|w| = 1``); at the
change ``w`` grows by 1.5 (the spread widens). Values are standardised by a
2,000-value warm-up, raw or as ``logit(p)`` (``p`` clipped to
``[1e-6, 1 - 1e-6]``), clipped at 4 sd; a one-sided CUSUM of the Gaussian
log-likelihood ratio for variance x2 runs on them. Each scale gets its own
threshold by simulation (300 stationary runs of 20,000 values: exceedance
probability ``1 - exp(-20000 / 10**6)``), so both meet the same false-alarm
rate. Delays: median [min-max] over 10 seeds, for biases -1, -2 and 0.
(The mean chart on the same scores: ``bench/mean_chart.py --kinds widen:-1``,
with and without ``--logit``.)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mean_chart import _score  # noqa: E402

RUN = 20_000
TARGET_ARL = 1e6
RATIO = 2.0  # the design variance ratio of the chart


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def standardised_scores(seed: int, bias: float, widen: bool, on_logit: bool) -> np.ndarray:
    """A warm-up of scores, then ``RUN`` more (widened or not), standardised by the warm-up and clipped."""
    rng = np.random.default_rng(seed)
    warm = _score(rng, 2000, 1.0, bias)
    after = _score(rng, RUN, 1.5 if widen else 1.0, bias)
    if on_logit:
        warm, after = logit(warm), logit(after)
    return np.clip((after - warm.mean()) / warm.std(ddof=1), -4.0, 4.0)


def scale_chart(z: np.ndarray) -> np.ndarray:
    """CUSUM of the Gaussian log-likelihood ratio of variance ``RATIO`` against 1."""
    walk = np.cumsum(0.5 * z * z * (1 - 1 / RATIO) - 0.5 * np.log(RATIO))
    return walk - np.minimum(np.minimum.accumulate(walk), 0.0)


def main() -> int:
    for bias in (-1.0, -2.0, 0.0):
        for on_logit in (False, True):
            maxima = [scale_chart(standardised_scores(1000 + run, bias, False, on_logit)).max() for run in range(300)]
            threshold = float(np.quantile(maxima, np.exp(-RUN / TARGET_ARL)))
            found = []
            for seed in range(10):
                over = np.flatnonzero(scale_chart(standardised_scores(seed, bias, True, on_logit)) > threshold)
                found.append(int(over[0]) if over.size else RUN)
            scale = "logit" if on_logit else "raw  "
            print(f"bias {bias:+.0f} {scale} z^2 chart (variance x{RATIO:g}), threshold {threshold:.1f} nats: "
                  f"widening detected after {statistics.median(found):.0f} [{min(found)}-{max(found)}] values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
