"""The interface every drift detector implements.

A detector watches one stream of values (one signal of one model version) and
reports the positions where the stream's distribution changed. Detectors are
built from a :class:`DetectorSpec` (a name and parameters, validated at
construction), update over numpy batches, and save and restore their whole
state as plain data so the service can checkpoint them.

Contract (checked for every detector by ``tests/detectors/test_conformance.py``):

- ``update(batch)`` returns the same detections as feeding the batch one value
  at a time through ``update_one``;
- ``load_state_dict(state_dict())`` on a fresh detector of the same spec gives
  identical future detections;
- memory is bounded by the parameters, never by the stream length;
- the same input in the same order gives the same output (no wall clock, no
  unseeded randomness);
- after a detection the detector re-arms on post-change data, so one change
  gives one detection, not a burst.
"""

from __future__ import annotations

import abc
import base64
import math
import mmap
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "Detection",
    "Detector",
    "DetectorSpec",
    "SpecError",
    "SIGNAL_KINDS",
    "check_choice",
    "check_integer",
    "check_known",
    "check_number",
    "decode_values",
    "encode_values",
    "reference_buffer",
]

#: The kinds of value streams a detector can watch.
SIGNAL_KINDS = ("numeric", "categorical", "error")


class SpecError(ValueError):
    """A detector spec names an unknown detector or carries a bad parameter.

    ``field`` is the parameter at fault (or ``"name"``) so config validation can
    point at it.
    """

    def __init__(self, detector: str, field: str, reason: str) -> None:
        super().__init__(f"detector {detector!r}: {field}: {reason}")
        self.detector = detector
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """A detector's name and its parameters, as written in the config."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected change.

    ``index`` is the position in the batch given to ``update`` (0 for
    ``update_one``); ``n_seen`` is the number of values the detector had seen
    before the one at which it detected the change (over its whole life, so it
    survives checkpoints). ``window`` gives the sizes used, for example
    ``{"reference": 1000, "current": 1000}``; ``reference`` is the id of the
    reference window or snapshot when the detector has one.
    """

    index: int
    n_seen: int
    statistic: float
    threshold: float
    p_value: float | None = None
    window: Mapping[str, int] = field(default_factory=dict)
    reference: str | None = None


class Detector(abc.ABC):
    """Base class: subclasses implement ``_update_batch`` and the state methods."""

    #: registry name used in specs and in alerts (``"page_hinkley"``, ...)
    name: ClassVar[str]
    #: which signal kind this detector watches, one of :data:`SIGNAL_KINDS`
    kind: ClassVar[str]
    #: the parameters through which a caller sets the reference: its size
    #: (``reference_size`` or ``warmup``) and a snapshot (``reference_values`` or
    #: ``reference_counts``, with ``reference_id``); the service fills them in
    #: from a model rule's ``reference`` setting
    reference_params: ClassVar[tuple[str, ...]] = ()

    @property
    @abc.abstractmethod
    def n_seen(self) -> int:
        """Values seen over the detector's life."""

    @property
    @abc.abstractmethod
    def statistic(self) -> float:
        """The current value of the test statistic (for gauges)."""

    @property
    @abc.abstractmethod
    def threshold(self) -> float:
        """The value the statistic must cross to signal drift (for gauges)."""

    @abc.abstractmethod
    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        """Feed a batch of values in order; return the detections it caused."""

    def update_finite(self, values: np.ndarray) -> list[Detection]:
        """:meth:`update` of a contiguous 1-D float64 array already known to hold finite numbers only.

        The monitor checks each numeric column once for all the signal's
        detectors; a detector whose :meth:`update` checks its input skips that
        check here. The same detections as :meth:`update`.
        """
        return self.update(values)

    def update_one(self, value: Any) -> Detection | None:
        """Feed one value; return its detection, if any."""
        if self.kind == "categorical":
            batch: Any = [value]
        else:
            batch = np.asarray([value], dtype=np.float64)
        detections = self.update(batch)
        return detections[0] if detections else None

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The whole mutable state as plain data (JSON-serialisable)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> Detector:
        """Validate ``params`` (raise :class:`SpecError` naming the field) and build.

        When ``params`` leaves the false-alarm target at its default, the
        detector targets ``DEFAULT_ARL * family_tests`` values between false alarms.
        """

    def spec(self) -> DetectorSpec:
        """The spec this detector was built from (with defaults filled in)."""
        return DetectorSpec(self.name, dict(self._params()))

    @abc.abstractmethod
    def _params(self) -> Mapping[str, Any]:
        """The construction parameters, defaults filled in."""


# -- parameter validation shared by detectors ---------------------------------


def check_known(detector: str, params: Mapping[str, Any], known: Iterable[str]) -> None:
    """:class:`SpecError` naming the first parameter that is not in ``known``."""
    allowed = set(known)
    unknown = sorted(str(key) for key in params if key not in allowed)
    if unknown:
        raise SpecError(detector, unknown[0], f"unknown parameter (known: {', '.join(sorted(allowed))})")


def check_integer(detector: str, field: str, value: Any, *, minimum: int, maximum: int) -> int:
    """``value`` as an int in ``[minimum, maximum]``, or :class:`SpecError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(detector, field, f"must be an integer, got {value!r}")
    if not minimum <= value <= maximum:
        raise SpecError(detector, field, f"must be between {minimum} and {maximum}, got {value}")
    return int(value)


def check_number(
    detector: str, field: str, value: Any, *, low: float, high: float, open_low: bool = False
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` when ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(detector, field, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number > high or number < low or (open_low and number == low):
        bound = "above" if open_low else "at least"
        raise SpecError(detector, field, f"must be {bound} {low} and at most {high}, got {value!r}")
    return number


def check_choice(detector: str, field: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, or :class:`SpecError` naming ``field``."""
    if value not in choices:
        raise SpecError(detector, field, f"must be one of {tuple(choices)}, got {value!r}")
    return str(value)


#: reference buffers of at least this many bytes get a memory mapping of their own
MAPPED_BUFFER_BYTES = 4096
#: most such mappings alive at once: well under Linux's default limit of 65,530 mappings per
#: process, which the interpreter and numpy need too (past it a buffer comes from the heap)
MAPPED_BUFFERS_MOST = 32_768
_mapped_live = 0


def _unmapped() -> None:
    global _mapped_live
    _mapped_live -= 1


def reference_buffer(size: int) -> np.ndarray:
    """An empty float64 array for the ``size`` values of a reference being collected.

    A warm-up buffer lives from the start of a reference to its end, and
    every signal of a model collects its reference at once (at the start,
    and after a change they all see). Freed from the heap, the buffers
    would stay in the process as holes between live allocations (glibc
    returns only the top of its heap to the system): at 10k signals about
    420 MiB of RSS the process no longer used. So a buffer of at least
    :data:`MAPPED_BUFFER_BYTES` gets an anonymous memory mapping of its own,
    which goes back to the system as soon as the array is freed; past
    :data:`MAPPED_BUFFERS_MOST` live mappings, or where mappings fail, it
    comes from the heap as before.
    """
    global _mapped_live
    nbytes = size * 8
    if nbytes < MAPPED_BUFFER_BYTES or _mapped_live >= MAPPED_BUFFERS_MOST:
        return np.empty(size, dtype=np.float64)
    try:
        area = mmap.mmap(-1, nbytes)
    except (OSError, ValueError):
        return np.empty(size, dtype=np.float64)
    _mapped_live += 1
    weakref.finalize(area, _unmapped)
    return np.frombuffer(area, dtype=np.float64, count=size)


def encode_values(values: np.ndarray) -> str:
    """Float values as compact, exact plain data: base64 of their little-endian float64 bytes.

    About 10.7 characters a value where a JSON list of floats takes about 19,
    and every bit kept (a state must restore to identical detections).
    """
    raw = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return base64.b64encode(raw).decode("ascii")


def decode_values(data: str | Sequence[float]) -> np.ndarray:
    """The float64 array :func:`encode_values` encoded (a list of numbers, as older states hold, too).

    :class:`ValueError` when ``data`` is not such an encoding.
    """
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except (UnicodeEncodeError, ValueError):
            raise ValueError("encoded values: not base64") from None
        if len(raw) % 8:
            raise ValueError("encoded values: not a whole number of float64 values")
        return np.frombuffer(raw, dtype="<f8").astype(np.float64)
    return np.asarray(data, dtype=np.float64).reshape(-1)


def check_reference_values(
    detector: str, values: Any, reference_id: Any, *, minimum: int, maximum: int
) -> tuple[np.ndarray | None, str | None]:
    """A numeric reference snapshot as a float array and its id (both None when absent).

    :class:`SpecError` names ``reference_values`` or ``reference_id`` when they are
    not ``minimum`` to ``maximum`` finite numbers with a non-empty id.
    """
    if values is None:
        if reference_id is not None:
            raise SpecError(detector, "reference_id", "only allowed with reference_values")
        return None, None
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray)):
        raise SpecError(detector, "reference_values", "must be a list of numbers")
    if any(isinstance(value, bool) for value in values):
        raise SpecError(detector, "reference_values", "must be a list of numbers, not booleans")
    try:
        snapshot = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError(detector, "reference_values", "must be a list of numbers") from None
    if snapshot.ndim != 1 or not minimum <= snapshot.size <= maximum:
        raise SpecError(detector, "reference_values", f"must hold between {minimum} and {maximum} numbers")
    if not np.isfinite(snapshot).all():
        raise SpecError(detector, "reference_values", "must be finite numbers")
    if not isinstance(reference_id, str) or not reference_id:
        raise SpecError(detector, "reference_id", "a non-empty string is required with reference_values")
    return snapshot, reference_id
