"""Scenario generators for the quality harness (``bench/quality.py``): the 22-signal model and its changes.

The model has 20 numeric features, one categorical feature with 5 categories
and a prediction, the sigmoid of a linear model of the (standardised)
features plus a per-category effect. Feature ``f00`` is Gaussian (the changes
of the mean, scale and shape act on it, so their information bound is
analytic); the other features cycle through shapes seen in practice:
Gaussian, lognormal, Student t with 3 degrees of freedom, integer counts
(half zeros, many ties), uniform and bimodal. A classifier's errors (the
predicted class, ``prediction >= 0.5``, against the label) are Bernoulli at a
given rate.

One :class:`Scenario` per change type. ``Scenario.generate(seed, size)``
returns the model's streams with the change starting at ``change`` (0-based:
the first changed value): every value before it is drawn exactly as in a
stationary stream of the same seed (the draws are shared, so scenarios of one
seed differ only after the change). ``Scenario.kl_profile`` gives the
Kullback-Leibler divergence per value of the primary changed signal after
the change (from the scenario's distributions, analytic where possible,
numerical integration for the bimodal split), or None where there is no
simple one; the harness turns it into a bound on the detection delay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CATEGORIES",
    "CHANGE",
    "ERROR_RATE",
    "FEATURES",
    "LABEL_DELAY",
    "SCENARIOS",
    "SHAPES",
    "Scenario",
    "Streams",
    "bernoulli_kl",
    "categorical_kl",
    "gaussian_kl",
    "stationary",
]

#: numeric features of the model; ``f00`` (Gaussian) is the one the numeric changes act on
FEATURES = tuple(f"f{j:02d}" for j in range(20))
#: the categorical feature's categories, equally likely before a change
CATEGORIES = ("a", "b", "c", "d", "e")
#: shapes of the numeric features, in order, repeated
SHAPES = ("gaussian", "lognormal", "student_t3", "counts", "uniform", "bimodal")
#: default position of the first changed value (after every default detector's warm-up)
CHANGE = 10_000
#: the classifier's error rate before a change
ERROR_RATE = 0.05
#: labels arrive this many events after their prediction
LABEL_DELAY = 500

# location and scale of the Gaussian feature f00 (the changes are in units of its sd)
_F00_MEAN, _F00_SD = 10.0, 2.0
_WEIGHT = 0.25  # logit weight of each standardised numeric feature
_INTERCEPT = -1.0
_CATEGORY_EFFECT = np.array([0.6, 0.3, 0.0, -0.3, -0.6])
_RAMP = 20_000  # values over which the mean ramp reaches +1 sd
_WIDEN = 1.5  # factor on the model weights when the prediction widens
_BIMODAL_OFFSET = 0.9  # modes at +-0.9 sd, each of sd sqrt(1 - 0.9^2): mean and sd kept
_BIMODAL_SD = math.sqrt(1 - _BIMODAL_OFFSET**2)


@dataclass
class Streams:
    """One run of the model: the value stream of each signal, in event order.

    ``numeric`` maps ``feature:<name>`` and ``prediction`` to float arrays;
    ``categorical`` maps ``feature:cat`` to an object array of strings;
    ``errors`` is the 0/1 error of each prediction against its label (what the
    label join feeds ``performance:error_rate``) and ``labels`` the labels (0/1).
    """

    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    errors: np.ndarray
    labels: np.ndarray

    def signals(self) -> dict[str, tuple[str, np.ndarray]]:
        """signal -> (kind, values) for every feature and the prediction (not the errors)."""
        out = {name: ("numeric", values) for name, values in self.numeric.items()}
        out.update({name: ("categorical", values) for name, values in self.categorical.items()})
        return out


@dataclass(frozen=True)
class _Draws:
    """The random draws of a run: shared by every scenario of a seed, so pre-change values agree."""

    features: np.ndarray  # (size, 20) raw feature values
    f00_noise: np.ndarray  # standard normal draws of f00 (f00 = mean + sd * noise)
    mode_sign: np.ndarray  # +-1: the mode of f00 once it is split in two
    category_u: np.ndarray  # uniform draws mapped to a category through the shares
    error_u: np.ndarray  # uniform draws: an error when below the error rate


def _shape_moments(shape: str) -> tuple[float, float]:
    """Mean and standard deviation of a feature shape (for the model's standardisation)."""
    return {
        "gaussian": (_F00_MEAN, _F00_SD),
        "lognormal": (math.exp(0.5), math.sqrt((math.e - 1) * math.e)),
        "student_t3": (0.0, math.sqrt(3.0)),
        "counts": (1.5, math.sqrt(3.75)),  # 0 with probability 1/2, else Poisson(3)
        "uniform": (0.5, math.sqrt(1 / 12)),
        "bimodal": (0.0, math.sqrt(5.0)),  # N(-2, 1) or N(2, 1)
    }[shape]


def feature_shape(index: int) -> str:
    """The shape of numeric feature ``index``."""
    return SHAPES[index % len(SHAPES)]


def _draw(seed: int | tuple[int, ...], size: int) -> _Draws:
    rng = np.random.default_rng(seed)
    features = np.empty((size, len(FEATURES)))
    noise = rng.standard_normal(size)
    features[:, 0] = _F00_MEAN + _F00_SD * noise
    for j in range(1, len(FEATURES)):
        shape = feature_shape(j)
        if shape == "gaussian":
            column = _F00_MEAN + _F00_SD * rng.standard_normal(size)
        elif shape == "lognormal":
            column = rng.lognormal(0.0, 1.0, size)
        elif shape == "student_t3":
            column = rng.standard_t(3, size)
        elif shape == "counts":
            column = np.where(rng.random(size) < 0.5, 0.0, rng.poisson(3.0, size).astype(np.float64))
        elif shape == "uniform":
            column = rng.random(size)
        else:
            column = rng.normal(0.0, 1.0, size) + np.where(rng.random(size) < 0.5, -2.0, 2.0)
        features[:, j] = column
    mode_sign = np.where(rng.random(size) < 0.5, -1.0, 1.0)
    return _Draws(features, noise, mode_sign, rng.random(size), rng.random(size))


def _categories(u: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Category codes from uniform draws by the inverse CDF of ``shares``."""
    codes = np.searchsorted(np.cumsum(shares), u, side="right")
    return np.minimum(codes, len(shares) - 1)


def _logit(features: np.ndarray, codes: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """The model's logit; ``scale`` multiplies every weight (the intercept stays)."""
    moments = np.array([_shape_moments(feature_shape(j)) for j in range(len(FEATURES))])
    standardised = (features - moments[:, 0]) / moments[:, 1]
    linear = _WEIGHT * standardised.sum(axis=1) + _CATEGORY_EFFECT[codes]
    return _INTERCEPT + scale * linear


def _streams(features: np.ndarray, codes: np.ndarray, error_u: np.ndarray, error_rate: np.ndarray | float,
             weight_scale: np.ndarray | float = 1.0) -> Streams:
    prediction = 1.0 / (1.0 + np.exp(-_logit(features, codes, weight_scale)))
    predicted = prediction >= 0.5
    error = error_u < error_rate
    labels = np.where(error, ~predicted, predicted).astype(np.int64)
    numeric = {f"feature:{name}": np.ascontiguousarray(features[:, j]) for j, name in enumerate(FEATURES)}
    numeric["prediction"] = prediction
    category = np.array(CATEGORIES, dtype=object)[codes]
    return Streams(numeric, {"feature:cat": category}, error.astype(np.float64), labels)


_EQUAL = np.full(len(CATEGORIES), 1 / len(CATEGORIES))


def stationary(seed: int | tuple[int, ...], size: int) -> Streams:
    """``size`` events of the model with no change."""
    draws = _draw(seed, size)
    return _streams(draws.features, _categories(draws.category_u, _EQUAL), draws.error_u, ERROR_RATE)


# -- the changes ----------------------------------------------------------------


def gaussian_kl(mean_shift: float = 0.0, sd_ratio: float = 1.0) -> float:
    """KL(N(shift, ratio^2) || N(0, 1)) per value (shift in units of the reference sd)."""
    return (sd_ratio**2 + mean_shift**2 - 1) / 2 - math.log(sd_ratio)


def categorical_kl(after: np.ndarray, before: np.ndarray) -> float:
    """KL(after || before) of two category distributions."""
    mask = after > 0
    return float(np.sum(after[mask] * np.log(after[mask] / before[mask])))


def bernoulli_kl(after: float, before: float) -> float:
    """KL(Bernoulli(after) || Bernoulli(before))."""
    return after * math.log(after / before) + (1 - after) * math.log((1 - after) / (1 - before))


def _bimodal_kl() -> float:
    """KL of the split (modes at +-offset, each of sd s, offset^2 + s^2 = 1) against N(0, 1), by quadrature."""
    from scipy import integrate, stats

    def integrand(x: float) -> float:
        q = 0.5 * (stats.norm.pdf(x, -_BIMODAL_OFFSET, _BIMODAL_SD)
                   + stats.norm.pdf(x, _BIMODAL_OFFSET, _BIMODAL_SD))
        return 0.0 if q <= 0 else q * (math.log(q) - stats.norm.logpdf(x))

    value, _ = integrate.quad(integrand, -12, 12, limit=200)
    return value


@dataclass(frozen=True)
class Scenario:
    """One change type: how the model's streams change at ``change``, and what it costs to see.

    ``signals`` are the signals whose distribution changes (a detection on any of
    them counts; the first is the primary one, whose KL gives the bound);
    ``kind`` is the primary signal's kind. ``horizon``: values after the change
    within which a detection counts. ``labelled``: the change is seen only
    through the label join (error rate), so the harness runs it through the
    pipeline instead of the detectors alone.
    """

    name: str
    description: str
    signals: tuple[str, ...]
    kind: str
    horizon: int
    apply: Callable[[_Draws, int], Streams]
    kl: float | Callable[[int], np.ndarray] | None = None
    labelled: bool = False

    def generate(self, seed: int, size: int, change: int = CHANGE) -> Streams:
        """``size`` events of seed ``seed``, changed from event ``change`` on."""
        return self.apply(_draw(seed, size), change)

    def kl_profile(self, count: int) -> np.ndarray | None:
        """KL per value of the primary signal for the first ``count`` values after the change."""
        if self.kl is None:
            return None
        if callable(self.kl):
            return self.kl(count)
        return np.full(count, float(self.kl))


def _f00_changed(draws: _Draws, change: int, new_noise: np.ndarray) -> Streams:
    """Streams with f00 = mean + sd * ``new_noise`` from ``change`` on (new_noise: standard units)."""
    features = draws.features.copy()
    features[change:, 0] = _F00_MEAN + _F00_SD * new_noise[change:]
    return _streams(features, _categories(draws.category_u, _EQUAL), draws.error_u, ERROR_RATE)


def _mean_shift(shift: float) -> Callable[[_Draws, int], Streams]:
    return lambda draws, change: _f00_changed(draws, change, draws.f00_noise + shift)


def _scale(ratio: float) -> Callable[[_Draws, int], Streams]:
    return lambda draws, change: _f00_changed(draws, change, draws.f00_noise * ratio)


def _ramp(draws: _Draws, change: int) -> Streams:
    size = draws.f00_noise.size
    reached = np.minimum(1.0, (np.arange(size) - change + 1) / _RAMP)
    return _f00_changed(draws, change, draws.f00_noise + np.maximum(reached, 0.0))


def _ramp_kl(count: int) -> np.ndarray:
    return np.minimum(1.0, np.arange(1, count + 1) / _RAMP) ** 2 / 2


def _bimodal(draws: _Draws, change: int) -> Streams:
    split = draws.mode_sign * _BIMODAL_OFFSET + _BIMODAL_SD * draws.f00_noise
    return _f00_changed(draws, change, split)


_SHARE_AFTER = np.array([0.5] + [0.5 / (len(CATEGORIES) - 1)] * (len(CATEGORIES) - 1))


def _category_share(draws: _Draws, change: int) -> Streams:
    codes = _categories(draws.category_u, _EQUAL)
    codes[change:] = _categories(draws.category_u[change:], _SHARE_AFTER)
    return _streams(draws.features, codes, draws.error_u, ERROR_RATE)


def _widen(draws: _Draws, change: int) -> Streams:
    scale = np.where(np.arange(draws.f00_noise.size) < change, 1.0, _WIDEN)
    return _streams(draws.features, _categories(draws.category_u, _EQUAL), draws.error_u, ERROR_RATE,
                    weight_scale=scale)


_ERROR_AFTER = 0.15


def _error_rise(draws: _Draws, change: int) -> Streams:
    rate = np.where(np.arange(draws.f00_noise.size) < change, ERROR_RATE, _ERROR_AFTER)
    return _streams(draws.features, _categories(draws.category_u, _EQUAL), draws.error_u, rate)


_F00 = ("feature:f00", "prediction")

#: every change type, in table order
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("mean+1sd", "mean +1 sd", _F00, "numeric", 20_000, _mean_shift(1.0), gaussian_kl(1.0)),
    Scenario("mean+0.5sd", "mean +0.5 sd", _F00, "numeric", 20_000, _mean_shift(0.5), gaussian_kl(0.5)),
    Scenario("sd*2.5", "sd x2.5, mean unchanged", _F00, "numeric", 20_000, _scale(2.5),
             gaussian_kl(sd_ratio=2.5)),
    Scenario("sd*0.4", "sd x0.4, mean unchanged", _F00, "numeric", 20_000, _scale(0.4),
             gaussian_kl(sd_ratio=0.4)),
    Scenario("category", "one category's share 20% -> 50%", ("feature:cat", "prediction"), "categorical",
             20_000, _category_share, categorical_kl(_SHARE_AFTER, _EQUAL)),
    Scenario("ramp", "mean ramps 0 -> +1 sd over 20k", _F00, "numeric", 40_000, _ramp, _ramp_kl),
    Scenario("widen", "prediction widens (weights x1.5)", ("prediction",), "numeric", 20_000, _widen),
    Scenario("error", "error rate 5% -> 15%, labels 500 late", ("performance:error_rate",), "error", 20_000,
             _error_rise, bernoulli_kl(_ERROR_AFTER, ERROR_RATE), labelled=True),
    Scenario("bimodal", "shape: bimodal split, same mean and sd", _F00, "numeric", 20_000, _bimodal,
             _bimodal_kl()),
)

