"""Quantile-bin chi-square: exactness against scipy and a slow oracle, bins and ties, calibration,
delay and false alarms on seeded streams."""

from __future__ import annotations

import json
import math
from collections import deque

import numpy as np
import pytest
from scipy import stats
from scipy.special import gammaln

from stream_monitor.detectors import DEFAULT_ARL, SpecError, build
from stream_monitor.detectors.quantile_chi2 import TIED_FACTOR, quantile_bins


def _detector(family_tests: int = 1, **params):
    return build({"name": "quantile_chi2", "params": params}, family_tests=family_tests)


def _bimodal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two modes at -0.9 and 0.9: mean 0 and variance 1, as N(0, 1)."""
    return rng.choice([-0.9, 0.9], size) + rng.normal(0.0, math.sqrt(0.19), size)


def _point_mass(rng: np.random.Generator, size: int) -> np.ndarray:
    """N(0, 1) with 30% of the values replaced by 0."""
    values = rng.normal(0.0, 1.0, size)
    values[rng.random(size) < 0.3] = 0.0
    return values


STATIONARY = {
    "gaussian": lambda rng, size: rng.normal(0.0, 1.0, size),
    "student t3": lambda rng, size: rng.standard_t(3, size),
    "lognormal": lambda rng, size: rng.lognormal(0.0, 1.0, size),
    "poisson(2)": lambda rng, size: rng.poisson(2.0, size).astype(np.float64),
    "50% zeros": lambda rng, size: np.where(rng.random(size) < 0.5, 0.0, rng.exponential(1.0, size)),
}


def _feed(detector, stream: np.ndarray, batch: int = 1000) -> list[int]:
    found = []
    for start in range(0, stream.size, batch):
        found += [start + d.index for d in detector.update(stream[start : start + batch])]
    return found


# --- exactness ----------------------------------------------------------------------------


def _table(edges: np.ndarray, counts: np.ndarray, window: np.ndarray) -> np.ndarray:
    window_counts = np.bincount(np.searchsorted(edges, window, side="right"), minlength=counts.size)
    return np.array([counts, window_counts])


@pytest.mark.parametrize("shape", ["gaussian", "poisson(2)", "50% zeros"])
def test_statistic_equals_scipy_chi2_contingency(shape: str) -> None:
    rng = np.random.default_rng(1)
    generate = STATIONARY[shape]
    for _ in range(30):
        stride = int(rng.integers(1, 40))
        window = stride * int(rng.integers(2, 12))
        bins = int(rng.integers(2, 17))
        stream = generate(rng, 1000 + window + int(rng.integers(0, 3 * stride + 1)))
        detector = _detector(window=window, stride=stride, bins=bins, arl=1e300)
        sizes = rng.choice([1, 7, 100, 999], 50)
        position = 0
        for size in sizes.tolist():
            assert detector.update(stream[position : position + size]) == []
            position += size
        assert detector.update(stream[position:]) == []
        reference = detector.state_dict()["reference"]
        edges, counts = np.array(reference["edges"]), np.array(reference["counts"])
        last = stream.size - (stream.size - 1000) % stride
        table = _table(edges, counts, stream[last - window : last])
        expected = stats.chi2_contingency(table, correction=False).statistic if counts.size > 1 else 0.0
        assert detector.statistic == pytest.approx(expected, rel=1e-12, abs=1e-12)


def _slow_oracle(stream: np.ndarray, reference_size: int, window: int, stride: int, bins: int,
                 threshold_of) -> list[int]:
    """The obvious implementation: keep the window's values, count and test at every evaluation."""
    detections: list[int] = []
    reference: list[float] = []
    current: deque[float] = deque(maxlen=window)
    monitored = 0
    for index, value in enumerate(stream.tolist()):
        if len(reference) < reference_size:
            reference.append(value)
            if len(reference) == reference_size:
                edges, counts = quantile_bins(np.array(reference), bins, math.ceil(10 * reference_size / window))
            continue
        current.append(value)
        monitored += 1
        if monitored >= window and monitored % stride == 0 and counts.size > 1:
            statistic = stats.chi2_contingency(_table(edges, counts, np.array(current)), correction=False).statistic
            if statistic >= threshold_of(counts.size - 1):
                detections.append(index)
                reference, monitored = [], 0
                current.clear()
    return detections


@pytest.mark.parametrize("seed", range(3))
def test_detections_match_slow_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0.0, 1.0, 3000), _bimodal(rng, 3000), rng.normal(0.0, 2.0, 3000),
             rng.poisson(2.0, 3000).astype(float), _point_mass(rng, 3000)]
    stream = np.concatenate(parts)
    params = {"reference_size": 500, "window": 200, "stride": 20, "bins": 8, "arl": 1e4}
    detector = _detector(**params)
    found = _feed(detector, stream, batch=333)
    expected = _slow_oracle(stream, 500, 200, 20, 8, lambda df: stats.chi2.isf(20 / 1e4, df))
    assert found == expected
    assert len(found) >= 4


# --- bins ---------------------------------------------------------------------------------


def test_continuous_reference_gives_equal_count_bins() -> None:
    reference = np.random.default_rng(2).normal(0.0, 1.0, 1000)
    edges, counts = quantile_bins(reference, 10, 40)
    assert counts.tolist() == [100] * 10
    assert np.array_equal(edges, np.sort(reference)[100:1000:100])


def test_atoms_get_their_own_bins_and_small_bins_are_merged() -> None:
    rng = np.random.default_rng(3)
    counts_of = {value: int(count) for value, count in zip(*np.unique(rng.poisson(2.0, 1000), return_counts=True))}
    reference = np.repeat(np.array(list(counts_of), dtype=float), list(counts_of.values()))
    edges, counts = quantile_bins(reference, 10, 40)
    # 0, 1, 2 and 3 each fill a quantile step: one bin each; 4 and above share the last
    assert counts.tolist() == [counts_of[0], counts_of[1], counts_of[2], counts_of[3],
                               sum(c for v, c in counts_of.items() if v >= 4)]
    codes = np.searchsorted(edges, [0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 9.0, -1.0], side="right")
    assert codes.tolist() == [0, 1, 2, 2, 3, 4, 4, 0]
    # half zeros: the zeros alone in one bin, the continuous half in quantile bins
    values = np.where(rng.random(1000) < 0.5, 0.0, rng.exponential(1.0, 1000))
    edges, counts = quantile_bins(values, 10, 40)
    assert counts[0] == np.count_nonzero(values == 0.0) and counts.size == 6
    assert np.searchsorted(edges, [0.0, 1e-300], side="right").tolist() == [0, 1]
    assert counts.min() >= 40


def test_constant_reference_has_one_bin_and_never_alarms() -> None:
    detector = _detector(arl=1e3)
    assert detector.update(np.concatenate([np.zeros(1000), np.random.default_rng(4).normal(0, 1, 5000)])) == []
    assert detector.state_dict()["reference"] == {"edges": [], "counts": [1000], "tied": True}
    assert detector.threshold == math.inf


# --- calibration --------------------------------------------------------------------------


def _exact_null_tail(counts: np.ndarray, gaps: np.ndarray, window: int, threshold: float, step: float) -> float:
    """An upper bound on P(statistic >= threshold) under no drift, for continuous data.

    A bin between two reference order statistics has a uniform spacing as its
    probability, so the window's counts are Dirichlet-multinomial with the
    numbers of reference gaps in the bins as parameters. Dynamic programming
    over the bins (state: values placed so far, the statistic so far rounded up
    to ``step``) gives the law of the statistic exactly, up to that rounding.
    """
    n, m = int(counts.sum()), window
    levels = math.ceil(threshold / step)
    placed = np.arange(m + 1)
    law = np.zeros((m + 1, levels))
    law[0, 0] = 1.0
    later = np.concatenate([np.cumsum(gaps[::-1])[::-1][1:], [0]])
    for count, gap, rest in zip(counts.tolist(), gaps.tolist(), later.tolist()):
        following = np.zeros_like(law)
        for w in range(m + 1):
            level = math.ceil((count * m - w * n) ** 2 / (n * m * (count + w)) / step - 1e-9)
            if level >= levels:
                continue
            left = m - placed[: m + 1 - w]  # values still to place, before this bin
            if rest == 0:  # the last bin takes what is left
                chance = (left == w).astype(float)
            else:  # beta-binomial: this bin's share of what is left
                with np.errstate(invalid="ignore", divide="ignore"):
                    log_chance = (gammaln(left + 1) - gammaln(w + 1) - gammaln(left - w + 1)
                                  + gammaln(w + gap) + gammaln(left - w + rest) - gammaln(left + gap + rest)
                                  - gammaln(gap) - gammaln(rest) + gammaln(gap + rest))
                chance = np.where(left >= w, np.exp(log_chance), 0.0)
            following[w:, level:] += law[: m + 1 - w, : levels - level] * chance[:, None]
        law = following
    return float(1.0 - law[m].sum())


@pytest.mark.parametrize("arl", [1e4, 1e6, 1e8])
def test_per_evaluation_false_alarm_chance_is_at_most_the_calibrated_one(arl: float) -> None:
    # the exact law for continuous data (reference 400, window 100, 5 bins) against chi2.isf
    detector = _detector(reference_size=400, window=100, stride=25, bins=5, arl=arl)
    detector.update(np.random.default_rng(5).normal(0.0, 1.0, 400))
    counts = np.array(detector.state_dict()["reference"]["counts"])
    assert counts.tolist() == [80] * 5
    gaps = counts.copy()
    gaps[0] += 1  # n reference values leave n + 1 gaps; the first bin holds the one below them all
    alpha = 25 / arl
    tail = _exact_null_tail(counts, gaps, 100, detector.threshold, step=0.02)
    assert tail <= alpha, (tail, alpha)
    assert tail >= alpha / 3  # and not far off: the test keeps its power


def _exact_conditional_tail(totals: np.ndarray, n: int, m: int, threshold: float, step: float) -> float:
    """An upper bound on P(statistic >= threshold | the bins' totals over both samples).

    Under no drift, given the totals ``t_i = r_i + w_i``, the window's counts are
    multivariate hypergeometric (every split of the pooled values into a
    reference and a window is equally likely), whatever the distribution.
    """
    levels = math.ceil(threshold / step)
    law = np.zeros((m + 1, levels))
    law[0, 0] = 1.0
    log_all = (gammaln(n + m + 1) - gammaln(m + 1) - gammaln(n + 1)) / totals.size
    for total in totals.tolist():
        following = np.zeros_like(law)
        for w in range(min(total, m) + 1):
            r = total - w
            level = math.ceil((r * m - w * n) ** 2 / (n * m * total) / step - 1e-9)
            if level < levels:
                chance = math.exp(gammaln(total + 1) - gammaln(w + 1) - gammaln(r + 1) - log_all)
                following[w:, level:] += law[: m + 1 - w, : levels - level] * chance
        law = following
    return float(1.0 - law[m].sum())


@pytest.mark.parametrize("arl", [1e6, 1e8])
def test_tied_references_are_calibrated_below_the_target(arl: float) -> None:
    # four atoms of 100 reference values each (window 200: 25 expected per bin, the smallest
    # allowed with ties) and one large bin; the bins' totals at their expected values
    reference = np.repeat([0.0, 1.0, 2.0, 3.0, 4.0], [100, 100, 100, 100, 400])
    detector = _detector(reference_size=800, window=200, stride=25, bins=8, arl=arl,
                         reference_values=reference.tolist(), reference_id="atoms")
    counts = np.array(detector.state_dict()["reference"]["counts"])
    assert counts.tolist() == [100, 100, 100, 100, 400] and detector.state_dict()["reference"]["tied"]
    totals = counts + counts // 4  # the window expects a quarter of the reference's count
    alpha = 25 / arl
    tail = _exact_conditional_tail(totals, 800, 200, detector.threshold, step=0.02)
    assert tail <= alpha, (tail / alpha)
    # the chi-square critical value alone would not do: the reason for TIED_FACTOR
    untied = stats.chi2.isf(alpha, counts.size - 1)
    assert _exact_conditional_tail(totals, 800, 200, untied, step=0.02) > alpha / 2


@pytest.mark.parametrize("shape", sorted(STATIONARY))
def test_false_alarms_within_the_arl_bound(shape: str) -> None:
    # 2,000,000 values at arl 10**5: the union bound allows 20 on average; measured 2 to 7
    rng = np.random.default_rng(6)
    detector = _detector(arl=1e5)
    alarms = 0
    for _ in range(4):
        alarms += len(_feed(detector, STATIONARY[shape](rng, 500_000)))
    assert alarms <= 20, alarms


def test_quiet_with_defaults_under_no_drift() -> None:
    rng = np.random.default_rng(7)
    for shape, generate in STATIONARY.items():
        detector = _detector(family_tests=44)
        assert _feed(detector, generate(rng, 400_000)) == [], shape
        reference = detector.state_dict()["reference"]
        degrees = len(reference["counts"]) - 1  # 4 for Poisson(2), 5 for half zeros
        assert reference["tied"] == (shape in ("poisson(2)", "50% zeros"))
        factor = TIED_FACTOR if reference["tied"] else 1
        assert detector.threshold == pytest.approx(stats.chi2.isf(25 / (DEFAULT_ARL * 44) / factor, degrees))


# --- delay --------------------------------------------------------------------------------

PINNED = {"bimodal": 3249, "point mass": 3124, "sd x2.5": 3124}
PINNED_HUGE = 3124  # seed 9: sd x2.5 at value 3000, with +-1.8e308 at 500 and 2000


@pytest.mark.parametrize("change", sorted(PINNED))
def test_pinned_detection_indices(change: str) -> None:
    rng = np.random.default_rng(7)
    before = rng.normal(0.0, 1.0, 3000)
    after = {"bimodal": _bimodal, "point mass": _point_mass,
             "sd x2.5": lambda r, size: r.normal(0.0, 2.5, size)}[change](rng, 2000)
    assert _feed(_detector(family_tests=44), np.concatenate([before, after])) == [PINNED[change]]


@pytest.mark.parametrize(("change", "bound"), [("bimodal", 400), ("point mass", 250), ("sd x2.5", 175)])
def test_median_delay_over_seeds(change: str, bound: int) -> None:
    generate = {"bimodal": _bimodal, "point mass": _point_mass,
                "sd x2.5": lambda r, size: r.normal(0.0, 2.5, size)}[change]
    delays = []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        found = _feed(_detector(family_tests=44), np.concatenate([rng.normal(0.0, 1.0, 5000), generate(rng, 5000)]))
        assert found and found[0] >= 5000, found
        delays.append(found[0] - 5000 + 1)
    assert np.median(delays) <= bound, delays


# --- detections, reference, re-arming -------------------------------------------------------


def test_detection_fields_and_re_arming() -> None:
    rng = np.random.default_rng(7)
    stream = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(0.0, 2.5, 4000), rng.normal(0.0, 1.0, 3000)])
    detector = _detector(family_tests=44)
    detections = [d for start in range(0, 10_000, 1000) for d in detector.update(stream[start : start + 1000])]
    assert [d.n_seen for d in detections] == [3124, 7124]
    first, second = detections
    assert first.reference == "warmup:0-999" and second.reference == "warmup:3125-4124"
    assert first.window == {"reference": 1000, "current": 250}
    assert first.statistic >= first.threshold == detector.threshold
    assert first.p_value == pytest.approx(stats.chi2.sf(first.statistic, 9))
    assert detector.state_dict()["reference_id"] == "warmup:7125-8124"


def test_reference_snapshot() -> None:
    rng = np.random.default_rng(8)
    snapshot = rng.normal(0.0, 1.0, 2000).tolist()
    detector = _detector(family_tests=44, reference_values=snapshot, reference_id="train")
    found = detector.update(_bimodal(rng, 2000))
    assert [d.reference for d in found] == ["snapshot:train"]
    assert found[0].window == {"reference": 2000, "current": 250}
    # a fresh detector of the same spec starts from the snapshot again
    assert build(detector.spec()).state_dict()["reference"] == _detector(
        reference_values=snapshot, reference_id="train").state_dict()["reference"]


def test_non_finite_values_are_rejected() -> None:
    detector = _detector()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            detector.update([0.0, bad])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window": 260}, "window"),
        ({"stride": 300}, "window"),
        ({"bins": 1}, "bins"),
        ({"bins": 65}, "bins"),
        ({"arl": 10}, "arl"),
        ({"arl": math.inf}, "arl"),
        ({"reference_size": 1}, "reference_size"),
        ({"reference_id": "x"}, "reference_id"),
        ({"reference_values": [1.0, 2.0]}, "reference_id"),
        ({"reference_values": [1.0, math.nan], "reference_id": "x"}, "reference_values"),
    ],
)
def test_spec_errors_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(SpecError) as error:
        _detector(**params)
    assert error.value.field == field


def test_huge_values_and_an_atom_at_the_largest_float() -> None:
    largest = float(np.finfo(np.float64).max)
    rng = np.random.default_rng(9)
    stream = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(0.0, 2.5, 2000)])
    stream[500], stream[2000] = largest, -largest  # in the reference and in the window
    detector = _detector(family_tests=44)
    assert [d.n_seen for d in detector.update(stream)] == [PINNED_HUGE]
    # half the snapshot at the largest float: its own bin, no infinite edge above it
    detector = _detector(reference_values=[largest] * 500 + list(range(500)), reference_id="max")
    reference = detector.state_dict()["reference"]
    assert reference["edges"][-1] == largest and reference["counts"][-1] == 500
    json.dumps(detector.state_dict(), allow_nan=False)
    assert [d.n_seen for d in detector.update(np.full(250, largest))] == [249]
