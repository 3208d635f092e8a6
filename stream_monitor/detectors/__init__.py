"""Online drift detectors (numpy, scipy and river only; no service code here).

Build detectors from specs with :func:`build`; :func:`default_specs` gives the
calibrated default set for a signal kind. Every detector's default threshold is
set from a target average run length under no drift (``arl``: expected number
of values between false alarms, default 10**7); :func:`build` multiplies it by
``family_tests`` (the number of detector instances of one model) so a model's
false-alarm rate does not grow with the number of signals it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream_monitor.detectors.base import (
    SIGNAL_KINDS,
    Detection,
    Detector,
    DetectorSpec,
    SpecError,
)

__all__ = [
    "DEFAULT_ARL",
    "REGISTRY",
    "SIGNAL_KINDS",
    "Detection",
    "Detector",
    "DetectorSpec",
    "SpecError",
    "build",
    "default_specs",
    "register",
]

#: Expected number of values between false alarms per signal, by default.
DEFAULT_ARL = 10**7

#: name -> detector class; filled by :func:`register` as detector modules import.
REGISTRY: dict[str, type[Detector]] = {}

#: kind -> names of the detectors run on such a signal when the config names none
_DEFAULTS: dict[str, tuple[str, ...]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector buildable by its ``name``."""
    if cls.kind not in SIGNAL_KINDS:
        raise TypeError(f"{cls.__name__}.kind must be one of {SIGNAL_KINDS}")
    REGISTRY[cls.name] = cls
    return cls


def default_specs(kind: str) -> list[DetectorSpec]:
    """The default detector set for a signal kind (``numeric``, ``categorical``, ``error``)."""
    if kind not in SIGNAL_KINDS:
        raise ValueError(f"unknown signal kind {kind!r}; expected one of {SIGNAL_KINDS}")
    return [DetectorSpec(name) for name in _DEFAULTS.get(kind, ())]


def build(spec: DetectorSpec | Mapping[str, Any], *, family_tests: int = 1) -> Detector:
    """Build a detector from a spec, validating its parameters.

    ``family_tests`` is the number of detector instances watching the same
    model; a detector whose false-alarm target is left at its default (no
    explicit ``arl`` or threshold in the spec) targets ``arl * family_tests``.
    """
    if isinstance(spec, Mapping):
        spec = DetectorSpec(str(spec.get("name", "")), dict(spec.get("params", {})))
    cls = REGISTRY.get(spec.name)
    if cls is None:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise SpecError(spec.name, "name", f"unknown detector (known: {known})")
    if family_tests < 1:
        raise SpecError(spec.name, "family_tests", "must be at least 1")
    try:
        return cls.from_spec(spec.params, family_tests=family_tests)  # type: ignore[attr-defined]
    except SpecError:
        raise
    except (ValueError, TypeError, ArithmeticError) as exc:
        # e.g. a calibration that cannot reach the false-alarm target with these parameters
        raise SpecError(spec.name, "params", f"cannot build with {dict(spec.params)!r} and family_tests="
                        f"{family_tests}: {exc}") from None


# Detector modules register themselves on import; the order here is the
# order of the default sets.
# --- numeric detectors, error rate, calibration (owner: numeric) ---
from stream_monitor.detectors import adwin, error_rate, page_hinkley  # noqa: E402,F401

# Numeric signals: Page-Hinkley/CUSUM for mean shifts (fast, near-optimal for
# shifts of half a standard deviation and more, gradual ramps included) plus
# the quantile-bin chi-square test for changes that keep the mean (variance,
# shape: a split into two modes, a point mass), which sees them sooner than the
# windowed KS test at a tenth of its cost (bench/shape.py); ``ks`` stays
# available by name. ADWIN is available by name but not a default: its
# Hoeffding-style bound is set by a per-test confidence, not a false-alarm
# rate, and it is slower to see small or gradual shifts than the calibrated CUSUM.
_DEFAULTS["numeric"] = ("page_hinkley", "quantile_chi2")
_DEFAULTS["error"] = ("error_rate",)
# --- windowed KS, quantile chi-square and categorical (owner: distribution) ---
from stream_monitor.detectors import ks as _ks  # noqa: E402,F401
from stream_monitor.detectors import categorical as _categorical  # noqa: E402,F401
from stream_monitor.detectors import quantile_chi2 as _quantile_chi2  # noqa: E402,F401

# Categorical signals: the chi-square test of the window's category frequencies.
_DEFAULTS["categorical"] = ("chi_square",)
# --- multinomial CUSUMs: scale and categories (owner: bins) ---
from stream_monitor.detectors import scale as _scale  # noqa: E402,F401
from stream_monitor.detectors import category_cusum as _category_cusum  # noqa: E402,F401

# Numeric signals also run the scale chart: variance up or down, distribution-free
# (bench/scale.py: sd x2.5 in a median of 17 values where the KS test needs 224).
_DEFAULTS["numeric"] = (*_DEFAULTS["numeric"], "scale")
# Categorical signals: the category CUSUM beside the chi-square test. The CUSUM is
# faster for one category's share moving (20% -> 50% in a median of 90 values,
# chi-square 236); the chi-square pools every column's evidence, so it stays for
# diffuse changes of several shares that no single column's chart is designed for.
_DEFAULTS["categorical"] = ("chi_square", "category_cusum")
