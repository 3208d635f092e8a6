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
"""

import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mean_chart import _score  # noqa: E402
def logit(p):
    p = np.clip(p, 1e-6, 1-1e-6); return np.log(p) - np.log1p(-p)
def stream(seed, bias, change, n_after=20000, stationary=False):
    rng = np.random.default_rng(seed)
    warm = _score(rng, 2000, 1.0, bias)
    if stationary:
        after = _score(rng, n_after, 1.0, bias)
    elif change == "widen":
        after = _score(rng, n_after, 1.5, bias)
    else:
        after = _score(rng, n_after, 1.0, bias + change)
    return warm, after
def z_of(warm, after, tf):
    if tf: warm, after = logit(warm), logit(after)
    m, s = warm.mean(), warm.std(ddof=1)
    return np.clip((after - m) / s, -4, 4)
def cusum_excursions(inc, h):
    # number of alarms with reset (sequential, numpy via python loop over cumsum trick is hard; do plain loop in chunks)
    s = 0.0; n = 0; first = None
    c = np.cumsum(inc)
    # vectorised CUSUM with reset approximated by no-reset excursion count
    floor = np.minimum.accumulate(np.minimum(c, 0))
    S = c - floor
    above = S > h
    return above
def scale_inc(z, r=2.0):
    return 0.5 * z * z * (1 - 1 / r) - 0.5 * np.log(r)
def mean_inc(z, k=0.25):
    return np.concatenate([z - k, -z - k])
for bias in (-1.0, -2.0, 0.0):
    for tf in (False, True):
        # calibrate h: P(alarm within 20000 values after warm-up) = 1 - exp(-20000/ARL), ARL = 1e6
        maxima = []
        for seed in range(1000, 1300):
            w, a = stream(seed, bias, None, stationary=True)
            z = z_of(w, a, tf)
            c = np.cumsum(scale_inc(z)); S = c - np.minimum.accumulate(np.minimum(c, 0))
            maxima.append(S.max())
        q = 1 - np.exp(-20000 / 1e6)
        h = float(np.quantile(maxima, 1 - q))
        out = []
        for change in ("widen",):
            delays = []
            for seed in range(10):
                w, a = stream(seed, bias, change)
                z = z_of(w, a, tf)
                c = np.cumsum(scale_inc(z)); S = c - np.minimum.accumulate(np.minimum(c, 0))
                hit = np.flatnonzero(S > h)
                delays.append(int(hit[0]) if hit.size else None)
            got = [d for d in delays if d is not None]
            out.append(f"{change}: median {statistics.median(got) if got else None} [{min(got) if got else '-'}-{max(got) if got else '-'}] missed {len(delays)-len(got)}")
        print(f"bias {bias} {'logit' if tf else 'raw  '} z^2 chart r=2, h={h:.1f} (sim ARL 1e6):", *out)
