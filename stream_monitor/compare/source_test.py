"""Does a value tell which version it came from? An anytime-valid two-sample test.

With a random traffic split, the version that served a request is a coin flip
independent of the request: given a value (its bin), the source is
``Bernoulli(pi)`` with ``pi`` the candidate's share of the two versions'
traffic. That null needs no model of the values, and it holds when both
versions drift together (a feature drift common to both raises nothing).

The test is an e-process by universal inference. The numerator predicts each
source from the running counts of its bin (Krichevsky-Trofimov, a
Beta(1/2, 1/2) mixture per bin); the denominator is the null's maximum
likelihood over every value so far, ``max_pi pi^n_c (1 - pi)^n_b``. For every
null ``pi`` the ratio is at most a nonnegative martingale of mean 1, so by
Ville's inequality ``P(sup_n log E_n >= log(1/alpha)) <= alpha``: the false-alarm
target holds however long the comparison runs. ``1 / max E`` is an anytime-valid
p-value.

Bins come from the first ``warmup`` pooled values: quantiles for numeric values
(ties merged, so a 0/1 signal gets its two values), the most frequent
categories plus "other" for categorical ones. They depend on the values only,
never on the sources, so under the null the sources stay independent of the
bins and the warm-up values are tested too (retroactively, once the bins are
set; a crossing among them is reported at the value that ended the warm-up).

Values are processed in order with sequential sums, so the result does not
depend on how the stream is cut into batches.

A candidate (source 1) at 20% of traffic with a higher mean than the baseline:

>>> import numpy as np
>>> rng = np.random.default_rng(5)
>>> sources = (rng.random(20_000) < 0.2).astype(np.int8)
>>> values = rng.normal(0, 1, 20_000) + 0.3 * sources
>>> test = SourceTest("numeric", threshold=np.log(1e5))
>>> [(d.index, d.n_baseline, d.n_candidate, d.candidate_mean > d.baseline_mean)
...  for d in test.update(values, sources)]
[(4156, 3281, 876, True), (9177, 4028, 993, True), (14012, 3876, 959, True), (16368, 1866, 490, True)]

The same without a difference raises nothing:

>>> SourceTest("numeric", threshold=np.log(1e5)).update(rng.normal(0, 1, 20_000), sources)
[]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CompareDetection", "SourceTest"]

#: a categorical value outside the top categories of the warm-up
_OTHER = "\x00other"


@dataclass(frozen=True, slots=True)
class CompareDetection:
    """One detection: where, the evidence, and both sides over the comparison's period."""

    #: index in the values passed to :meth:`SourceTest.update`
    index: int
    log_e: float
    max_log_e: float
    n_baseline: int
    n_candidate: int
    baseline_mean: float | None
    candidate_mean: float | None

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_e))


class SourceTest:
    """The e-process of one (candidate, baseline) pair on one signal.

    ``kind`` is ``numeric`` (values are floats; bins at quantiles) or
    ``categorical`` (strings). ``threshold`` is ``log(1/alpha)``. After a
    detection the test starts afresh (new warm-up, new bins), so one difference
    gives one detection.
    """

    def __init__(self, kind: str, threshold: float, bins: int = 8, warmup: int = 200) -> None:
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"kind must be numeric or categorical, got {kind!r}")
        if not threshold > 0:
            raise ValueError(f"threshold (log 1/alpha) must be positive, got {threshold}")
        if not 2 <= bins <= 64:
            raise ValueError(f"bins must be between 2 and 64, got {bins}")
        if warmup < bins:
            raise ValueError(f"warmup must be at least bins ({bins}), got {warmup}")
        self.kind = kind
        self.threshold = float(threshold)
        self.bins = bins
        self.warmup = warmup
        self._reset()

    def _reset(self) -> None:
        #: numeric: the inner bin edges of each resolution; categorical: the categories with a bin
        self.edges: list[list[float]] | None = None
        self.categories: list[str] | None = None
        self.buffer_values: list[Any] = []
        self.buffer_sources: list[int] = []
        #: per resolution: values and candidate values per bin
        self.counts: list[np.ndarray] = []
        self.candidate_counts: list[np.ndarray] = []
        #: per resolution: log of the sequential prediction of the sources so far
        self.log_numerators: list[float] = []
        self.n = 0
        self.n_candidate = 0
        self.log_e = 0.0
        self.max_log_e = 0.0
        #: sums of the values per source (numeric), for the direction of a difference
        self.sums = [0.0, 0.0]

    @property
    def n_baseline(self) -> int:
        return self.n - self.n_candidate

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_e))

    def update(self, values: Any, sources: Any) -> list[CompareDetection]:
        """Feed values in order, each with its source (0 baseline, 1 candidate)."""
        sources = np.asarray(sources, dtype=np.int8)
        if self.kind == "numeric":
            values = np.asarray(values, dtype=np.float64)
        detections: list[CompareDetection] = []
        start, total = 0, len(sources)
        while start < total:
            if not self.counts:
                take = min(total - start, self.warmup - len(self.buffer_sources))
                self.buffer_values.extend(values[start:start + take].tolist() if self.kind == "numeric"
                                          else values[start:start + take])
                self.buffer_sources.extend(sources[start:start + take].tolist())
                start += take
                if len(self.buffer_sources) < self.warmup:
                    break
                buffered = np.asarray(self.buffer_values) if self.kind == "numeric" else self.buffer_values
                buffered_sources = np.asarray(self.buffer_sources, dtype=np.int8)
                self._fit_bins(buffered)
                self.buffer_values, self.buffer_sources = [], []
                hit = self._advance(buffered, buffered_sources, stop=False)
                if hit is not None:
                    # the evidence was there once the bins were known: at the warm-up's last value
                    detections.append(self._detection(start - 1))
                    self._reset()
                continue
            hit = self._advance(values[start:], sources[start:])
            if hit is None:
                break
            detections.append(self._detection(start + hit))
            self._reset()
            start += hit + 1
        return detections

    def _fit_bins(self, values: Any) -> None:
        """Bins from the warm-up; numeric values get nested resolutions (2, 4, ... bins)."""
        if self.kind == "numeric":
            levels: list[list[float]] = []
            for size in sorted({min(2 ** k, self.bins) for k in range(1, self.bins.bit_length() + 1)}):
                cuts = np.quantile(values, np.arange(1, size) / size, method="inverted_cdf")
                edges = [float(edge) for edge in np.unique(cuts)]
                if edges not in levels:  # a discrete signal repeats its edges: test each set once
                    levels.append(edges)
            self.edges = levels
            sizes = [len(edges) + 1 for edges in levels]
        else:
            counts = Counter(values)
            top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:self.bins - 1]
            self.categories = sorted(name for name, _ in top)
            sizes = [len(self.categories) + 1]
        self.counts = [np.zeros(size, dtype=np.int64) for size in sizes]
        self.candidate_counts = [np.zeros(size, dtype=np.int64) for size in sizes]
        self.log_numerators = [0.0] * len(sizes)

    def _bins(self, values: Any) -> list[np.ndarray]:
        """The bin of each value, at each resolution."""
        if self.kind == "numeric":
            assert self.edges is not None
            # (-inf, e0], (e0, e1], ...: a value equal to an edge (a tie, e.g. 0 of a 0/1 signal) is in its bin
            return [np.searchsorted(np.asarray(edges), values, side="left").astype(np.intp)
                    for edges in self.edges]
        assert self.categories is not None
        index = {name: position for position, name in enumerate(self.categories)}
        other = len(self.categories)
        return [np.fromiter((index.get(value, other) for value in values), dtype=np.intp,
                            count=len(values))]

    def _advance(self, values: Any, sources: np.ndarray, stop: bool = True) -> int | None:
        """Take values in order up to the first crossing (its index), or all of them (None).

        ``stop=False`` takes every value and returns the first crossing among them.
        """
        size = len(sources)
        candidate = sources.astype(np.int64)
        level_logs = []
        for level, bins in enumerate(self._bins(values)):
            within, candidate_within = _earlier_in_bin(bins, candidate)
            before = self.counts[level][bins] + within
            candidate_before = self.candidate_counts[level][bins] + candidate_within
            p_candidate = (candidate_before + 0.5) / (before + 1.0)
            terms = np.log(np.where(sources == 1, p_candidate, 1.0 - p_candidate))
            # a sequential sum from the carried value: the same whatever the batch boundaries
            level_logs.append((bins, np.cumsum(np.concatenate(([self.log_numerators[level]], terms)))[1:]))
        stacked = np.vstack([log for _, log in level_logs])
        # the numerator mixes the resolutions with equal weights (a Bayesian mixture: still a
        # sequential prediction, so still valid), paying log(levels) for not knowing the best one
        log_numerator = np.logaddexp.reduce(stacked, axis=0) - math.log(len(level_logs))
        n = self.n + np.arange(1, size + 1)
        n_candidate = self.n_candidate + np.cumsum(candidate)
        n_baseline = n - n_candidate
        with np.errstate(divide="ignore", invalid="ignore"):
            log_null = (np.where(n_candidate > 0, n_candidate * np.log(n_candidate / n), 0.0)
                        + np.where(n_baseline > 0, n_baseline * np.log(n_baseline / n), 0.0))
        log_e = log_numerator - log_null
        crossed = np.flatnonzero(log_e >= self.threshold)
        end = size if len(crossed) == 0 or not stop else int(crossed[0]) + 1
        for level, (bins, log) in enumerate(level_logs):
            np.add.at(self.counts[level], bins[:end], 1)
            np.add.at(self.candidate_counts[level], bins[:end], candidate[:end])
            self.log_numerators[level] = float(log[end - 1])
        self.n = int(n[end - 1])
        self.n_candidate = int(n_candidate[end - 1])
        self.log_e = float(log_e[end - 1])
        self.max_log_e = max(self.max_log_e, float(log_e[:end].max()))
        if self.kind == "numeric":
            taken = np.asarray(values[:end], dtype=np.float64)
            self.sums[1] += float(taken[sources[:end] == 1].sum())
            self.sums[0] += float(taken[sources[:end] == 0].sum())
        return None if len(crossed) == 0 else int(crossed[0])

    def _detection(self, index: int) -> CompareDetection:
        baseline_mean = candidate_mean = None
        if self.kind == "numeric":
            baseline_mean = self.sums[0] / self.n_baseline if self.n_baseline else None
            candidate_mean = self.sums[1] / self.n_candidate if self.n_candidate else None
        return CompareDetection(index, self.log_e, self.max_log_e, self.n_baseline, self.n_candidate,
                                baseline_mean, candidate_mean)

    # -- state ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything the test's future output depends on, as plain data."""
        return {"kind": self.kind, "threshold": self.threshold, "bins": self.bins, "warmup": self.warmup,
                "edges": self.edges, "categories": self.categories,
                "buffer_values": list(self.buffer_values), "buffer_sources": list(self.buffer_sources),
                "counts": [c.tolist() for c in self.counts],
                "candidate_counts": [c.tolist() for c in self.candidate_counts],
                "log_numerators": list(self.log_numerators), "n": self.n, "n_candidate": self.n_candidate,
                "log_e": self.log_e, "max_log_e": self.max_log_e, "sums": list(self.sums)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SourceTest:
        test = cls(str(state["kind"]), float(state["threshold"]), int(state["bins"]), int(state["warmup"]))
        test.edges = None if state["edges"] is None else [[float(e) for e in level] for level in state["edges"]]
        test.categories = None if state["categories"] is None else [str(c) for c in state["categories"]]
        test.buffer_values = list(state["buffer_values"])
        test.buffer_sources = [int(s) for s in state["buffer_sources"]]
        test.counts = [np.asarray(c, dtype=np.int64) for c in state["counts"]]
        test.candidate_counts = [np.asarray(c, dtype=np.int64) for c in state["candidate_counts"]]
        test.log_numerators = [float(v) for v in state["log_numerators"]]
        test.n, test.n_candidate = int(state["n"]), int(state["n_candidate"])
        test.log_e, test.max_log_e = float(state["log_e"]), float(state["max_log_e"])
        test.sums = [float(s) for s in state["sums"]]
        return test


def _earlier_in_bin(bins: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each value, how many values before it in the batch share its bin, and how many of those
    are the candidate's: one stable sort by bin, running counts within each bin's run.

    >>> [a.tolist() for a in _earlier_in_bin(np.array([2, 0, 2, 2, 0]), np.array([1, 1, 0, 1, 0]))]
    [[0, 0, 1, 2, 1], [0, 0, 1, 1, 1]]
    """
    size = len(bins)
    # bins are few: as 16-bit integers numpy's stable sort is a radix sort
    small = bins.astype(np.uint16) if size and int(bins.max()) < 1 << 16 else bins
    order = np.argsort(small, kind="stable")
    ordered = bins[order]
    sizes = np.bincount(ordered)
    starts = (np.cumsum(sizes) - sizes)[ordered]  # where each value's bin starts in the sorted order
    within = np.empty(size, dtype=np.int64)
    within[order] = np.arange(size) - starts
    running = np.cumsum(candidate[order]) - candidate[order]  # the candidate's values before, any bin
    candidate_within = np.empty(size, dtype=np.int64)
    candidate_within[order] = running - running[starts]
    return within, candidate_within
