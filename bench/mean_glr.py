"""Window-limited GLR for the mean against multi-chart CUSUMs, at a false-alarm rate a simulation can calibrate.

Usage::

    .venv/bin/python bench/mean_glr.py          # W=8192 (env W sets the window, KNOWN=1 a known mean and sd)

The GLR statistic at each value is ``max_m (S_n - S_{n-m})**2 / (2 m)`` over a
grid of window lengths ``m`` (every length to 16, then four per octave up to
``W``) on values standardised by a 2,000-value warm-up and clipped at 4 sd.
Its threshold is calibrated by simulation (300 stationary runs of 20,000
values each: the threshold whose exceedance probability over a run is
``1 - exp(-20000 / ARL)``, ARL 10**6); the CUSUMs use the analytic
calibration of :mod:`stream_monitor.detectors.calibration` at the same ARL,
checked by the same simulation (the printed quantile of their largest
statistic-to-threshold ratio should be near 1). Delays: median [min-max] over
20 seeds, the change at the first value after the warm-up. Also printed: the
GLR's cost per value evaluated over a whole array (a lower bound for batches).
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream_monitor.detectors.calibration import gaussian_cusum_threshold
import os
N = 20000; W = int(os.environ.get("W", 8192)); TARGET = 1e6; KNOWN = os.environ.get("KNOWN") == "1"
grid = sorted(set(list(range(1, 17)) + [int(round(16 * 2 ** (i / 4))) for i in range(1, 4 * 9 + 1) if 16 * 2 ** (i / 4) <= W]))
def z_stream(seed, kind, n=N):
    rng = np.random.default_rng(seed)
    warm = rng.standard_normal(2000); x = rng.standard_normal(n)
    if kind == "ramp": x += np.minimum(np.arange(1, n + 1) / 20000, 1.0)
    elif kind is not None: x += kind
    return np.clip(x if KNOWN else (x - warm.mean()) / warm.std(ddof=1), -4, 4)
def glr_path(z):
    S = np.concatenate([np.zeros(1), np.cumsum(z)])
    G = np.zeros(len(z))
    for m in grid:
        d = S[m:] - S[:-m]
        g = d * d / (2 * m)
        np.maximum(G[m - 1:], g, out=G[m - 1:])
    return G
def cusum_ratio(z, drifts, arl):
    charts = [(s, k, gaussian_cusum_threshold(k, 2000, arl * 2 * len(drifts))) for k in drifts for s in (1, -1)]
    R = np.zeros(len(z))
    for s, k, h in charts:
        c = np.cumsum(s * z - k); S = c - np.minimum(np.minimum.accumulate(c), 0)
        np.maximum(R, S / h, out=R)
    return R
def calib(path_fn, runs=300):
    maxima = [path_fn(z_stream(1000 + r, None)).max() for r in range(runs)]
    q = 1 - np.exp(-N / TARGET)
    return float(np.quantile(maxima, 1 - q)), maxima
t = time.time()
c_glr, _ = calib(glr_path)
z = z_stream(0, None, 100_000)
start = time.perf_counter_ns()
glr_path(z)
print("GLR grid", len(grid), "points, window", W, ", c =", round(c_glr, 2), "nats (sim);",
      round((time.perf_counter_ns() - start) / 100_000), "ns/value")
dets = {"glr": (glr_path, c_glr)}
for drifts in ((0.25, 0.5), (0.125, 0.25, 0.5), (0.125, 0.25, 0.5, 1.0)):
    fn = lambda z, d=drifts: cusum_ratio(z, d, TARGET)
    c, _ = calib(fn)
    print("cusum", drifts, "sim quantile of max ratio (1.0 = analytic calibration right):", round(c, 3))
    dets[f"cusum{drifts}"] = (fn, 1.0)
for kind in (0.25, 0.5, 1.0, 2.0, "ramp"):
    row = []
    for name, (fn, c) in dets.items():
        ds = []
        for seed in range(20):
            hit = np.flatnonzero(fn(z_stream(seed, kind)) > c)
            ds.append(int(hit[0]) if hit.size else N)
        row.append(f"{name}: {statistics.median(ds):.0f} [{min(ds)}-{max(ds)}]")
    print(f"shift {kind}:", " | ".join(row))
