"""ADWIN: adaptive windowing, the same detections as ``river.drift.ADWIN``.

ADWIN keeps the values since the last change in an exponential histogram:
row ``i`` holds up to ``max_buckets`` buckets, each summarising ``2**i``
values by their total and variance; when a row overflows, its two oldest
buckets merge into one bucket of the next row. Every ``clock`` values (once
the window holds more than ``grace_period`` values) it compares, at every
bucket boundary, the mean of the older part ``W0`` with the mean of the newer
part ``W1`` and reports a change when they differ by more than

    eps = sqrt(2 m var ln(2 ln(n) / delta)) + 2/3 m ln(2 ln(n) / delta),
    m = 1 / (n0 - min_window_length + 1) + 1 / (n1 - min_window_length + 1)

(``n`` the window width, ``var`` the window's variance per value). Like
river, the detector then starts afresh on the values after the change, so one
change gives one alert.

The window runs in river's own compiled implementation (the
``AdaptiveWindowing`` helper ``river.drift.ADWIN`` wraps), so detections are
river's by construction and the cost is river's: about 120 ns per value
against 1,600 for the port below (``bench/detectors.py``). Between tests
(every ``clock`` values) values go to it in one C-level ``map``; before a
test value the helper's serialised state is kept, so the statistic,
threshold and cut of a test (read only at a detection or when asked) are
computed by the port from that state and the value, and equal river's.
Checkpoints stay this module's JSON bucket structure: the helper's state is
decoded from, and encoded to, river's serialisation (serde's bincode: the
helper's fields in order, little-endian, 64-bit lengths). That layout is
checked once against the installed river (decode then encode gives the same
bytes, and the totals agree); if river is missing or its layout differs, the
detector runs the port instead, with the same detections.

The port is line by line of river's implementation (``rust_src/adwin.rs``,
itself a port of ``adwin_c.pyx``), keeping its order of floating-point
operations so that detections match ``river.drift.ADWIN`` exactly (tested on
seeded streams). Values are inserted one by one; the test at the bucket
boundaries is vectorised with cumulative sums (``numpy.cumsum`` and
``numpy.subtract.accumulate`` add in the same order as river's loop). The
state is the bucket structure as plain lists, so checkpoints are JSON.

Values beyond ``±VALUE_BOUND`` (``1e100``) are clipped to it before they
enter the window, so sums and squares stay finite for every finite input (a
``1.7e308`` would otherwise make the variance infinite and the detector blind
for good); a clipped value is far enough out that ADWIN reports it as a
change and restarts without it. Smaller values are used as they are, so
detections still match river.

Memory: at most ``max_buckets + 1`` buckets per row and one row per doubling
of the window, so never more than ``64 * (max_buckets + 1)`` buckets.

ADWIN is not in the default set: ``delta`` bounds the error of each test, not
the rate of false alarms over a stream, so it cannot be calibrated to an ARL
target the way the CUSUM is, and it is slower to see small or gradual shifts.

Examples
--------
>>> import numpy as np
>>> from stream_monitor.detectors import DetectorSpec, build
>>> rng = np.random.default_rng(42)
>>> stream = np.concatenate([rng.normal(0.0, 1.0, 3000), rng.normal(1.0, 1.0, 1000)])
>>> detector = build(DetectorSpec("adwin"))
>>> for detection in detector.update(stream):
...     print(f"change detected at index {detection.index}")
change detected at index 3039

References
----------
A. Bifet and R. Gavalda (2007). Learning from time-changing data with
adaptive windowing. SIAM International Conference on Data Mining, 443-448.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream_monitor.detectors import register
from stream_monitor.detectors.base import (
    Detection,
    Detector,
    SpecError,
    check_integer,
    check_known,
    check_number,
)

__all__ = ["Adwin"]

_STATE_VERSION = 1
#: values are clipped to [-VALUE_BOUND, VALUE_BOUND]: squares of differences,
#: times any window width, stay far below the largest float
VALUE_BOUND = 1e100

# river's serialised AdaptiveWindowing (bincode): delta, clock, max_buckets,
# min_window_length, grace_period, total, variance, width, total_width,
# n_buckets, max_n_buckets, tick, n_detections, then the bucket list (a length,
# then per bucket: max_size, current_idx, totals, variances; each a length and
# that many doubles), then the constructor's arguments
_HEADER = struct.Struct("<diQddddddiiii")
_ARGUMENTS = struct.Struct("<diQii")
_LENGTH = struct.Struct("<Q")
_BUCKET = struct.Struct("<QQ")


def _river_window_class() -> Any:
    """river's compiled ADWIN window, or None when it is missing."""
    try:
        from river._river_rust.drift import AdaptiveWindowing
    except ImportError:  # pragma: no cover - river without its compiled part
        return None
    return AdaptiveWindowing


def _decode(data: bytes) -> dict[str, Any]:
    """river's serialised window as a dict (the header fields and the bucket rows)."""
    fields = _HEADER.unpack_from(data, 0)
    names = ("delta", "clock", "max_buckets", "min_window_length", "grace_period", "total", "variance",
             "width", "total_width", "n_buckets", "max_n_buckets", "tick", "n_detections")
    out: dict[str, Any] = dict(zip(names, fields))
    offset = _HEADER.size
    (rows,) = _LENGTH.unpack_from(data, offset)
    offset += _LENGTH.size
    totals, variances = [], []
    for _ in range(rows):
        _, used = _BUCKET.unpack_from(data, offset)
        offset += _BUCKET.size
        row = []
        for _ in range(2):
            (size,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            row.append(list(struct.unpack_from(f"<{size}d", data, offset)))
            offset += 8 * size
        totals.append(row[0][:used])
        variances.append(row[1][:used])
        out.setdefault("capacity", size)
    if len(data) - offset != _ARGUMENTS.size:
        raise ValueError("unexpected bytes after river's ADWIN window")
    out["arguments"] = _ARGUMENTS.unpack_from(data, offset)
    out["totals"], out["variances"] = totals, variances
    return out


def _encode(window: Mapping[str, Any]) -> bytes:
    """The inverse of :func:`_decode` (rows are padded with zeros to the bucket capacity)."""
    capacity = int(window["max_buckets"]) + 1
    parts = [
        _HEADER.pack(*(window[name] for name in (
            "delta", "clock", "max_buckets", "min_window_length", "grace_period", "total", "variance",
            "width", "total_width", "n_buckets", "max_n_buckets", "tick", "n_detections"))),
        _LENGTH.pack(len(window["totals"])),
    ]
    for totals, variances in zip(window["totals"], window["variances"]):
        parts.append(_BUCKET.pack(int(window["max_buckets"]), len(totals)))
        for row in (totals, variances):
            parts.append(_LENGTH.pack(capacity))
            parts.append(struct.pack(f"<{capacity}d", *row, *([0.0] * (capacity - len(row)))))
    parts.append(_ARGUMENTS.pack(*window["arguments"]))
    return b"".join(parts)


@functools.cache
def _river_layout_ok() -> bool:
    """Whether the installed river's window serialises as :func:`_decode` reads it."""
    window_class = _river_window_class()
    if window_class is None:
        return False
    try:
        window = window_class(0.002, 32, 5, 5, 10)
        for value in range(1, 200):
            window.update(float(value % 7))
        data = window.__getstate__()
        decoded = _decode(data)
        return (_encode(decoded) == data and decoded["arguments"] == (0.002, 32, 5, 5, 10)
                and decoded["width"] == window.get_width() == 199.0
                and decoded["total"] == window.get_total()
                and sum(map(sum, decoded["totals"])) == decoded["total"])
    except Exception:  # noqa: BLE001 - any mismatch means: use the port
        return False


@register
class Adwin(Detector):
    """Adaptive windowing change detector (river-compatible).

    Parameters
    ----------
    delta
        Confidence of each test at a bucket boundary, in (0, 1).
    clock
        Test every ``clock`` values.
    max_buckets
        Buckets per row before the two oldest merge (at least 2).
    min_window_length
        Neither side of a cut may hold fewer values.
    grace_period
        No test until the window holds more than this many values.
    """

    name = "adwin"
    kind = "numeric"

    def __init__(
        self,
        *,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        name = self.name
        self.delta = check_number(name, "delta", delta, low=0.0, high=1.0, open_low=True)
        if self.delta >= 1.0:
            raise SpecError(name, "delta", "must be below 1")
        self.clock = check_integer(name, "clock", clock, minimum=1, maximum=2**31 - 1)
        # river.drift.ADWIN fails with max_buckets=1, so the oracle stops at 2
        self.max_buckets = check_integer(name, "max_buckets", max_buckets, minimum=2, maximum=1000)
        self.min_window_length = check_integer(
            name, "min_window_length", min_window_length, minimum=1, maximum=2**31 - 1
        )
        self.grace_period = check_integer(name, "grace_period", grace_period, minimum=0, maximum=2**31 - 1)
        self._river = _river_layout_ok()
        self._n_seen = 0
        self._reset_window()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], *, family_tests: int = 1) -> Adwin:
        """Build from spec parameters (``family_tests`` does not apply: ADWIN has no ARL target)."""
        check_known(cls.name, params, ("delta", "clock", "max_buckets", "min_window_length", "grace_period"))
        return cls(**params)

    def _params(self) -> Mapping[str, Any]:
        return {
            "delta": self.delta,
            "clock": self.clock,
            "max_buckets": self.max_buckets,
            "min_window_length": self.min_window_length,
            "grace_period": self.grace_period,
        }

    def _reset_window(self) -> None:
        """Build the window state: empty, as after a detection."""
        self._total = 0.0
        self._variance = 0.0
        self._width = 0.0
        self._tick = 0
        self._river_tick = 0
        # row i: totals and variances of buckets of 2**i values, oldest first
        self._totals: list[list[float]] = [[]]
        self._variances: list[list[float]] = [[]]
        self._last_statistic = 0.0
        self._last_threshold = math.inf
        self._last_window: dict[str, int] = {}
        # river's window: the helper, and (state before, value) of its last test not yet evaluated
        self._helper = self._new_helper() if self._river else None
        self._pending_test: tuple[bytes, float] | None = None

    def _new_helper(self) -> Any:
        return _river_window_class()(
            self.delta, self.clock, self.max_buckets, self.min_window_length, self.grace_period
        )

    @property
    def n_seen(self) -> int:
        return self._n_seen

    @property
    def width(self) -> int:
        """Values in the current window."""
        if self._helper is not None:
            return int(self._helper.get_width())
        return int(self._width)

    @property
    def statistic(self) -> float:
        """At the last test: the largest ``|mean(W0) - mean(W1)| - eps`` over the cuts, plus eps."""
        self._evaluate_pending_test()
        return self._last_statistic

    @property
    def threshold(self) -> float:
        """At the last test: ``eps`` at the cut where the statistic was taken."""
        self._evaluate_pending_test()
        return self._last_threshold

    def _evaluate_pending_test(self) -> bool:
        """Run the port's test of river's last test (from its state before and its value); its verdict."""
        if self._pending_test is None:
            return False
        before, value = self._pending_test
        self._pending_test = None
        self._load_window(_decode(before))
        self._insert(value)
        self._tick += 1
        return self._test()

    def _load_window(self, window: Mapping[str, Any]) -> None:
        """The port's window from a decoded river window (or a checkpoint)."""
        self._total = float(window["total"])
        self._variance = float(window["variance"])
        self._width = float(window["width"])
        self._tick = int(window["tick"])
        self._totals = [[float(x) for x in row] for row in window["totals"]]
        self._variances = [[float(x) for x in row] for row in window["variances"]]

    def _insert(self, value: float) -> None:
        """The port's insertion of one value (as in :meth:`_update_port`)."""
        self._totals[0].append(value)
        self._variances[0].append(0.0)
        self._width += 1.0
        if self._width > 1.0:
            delta_v = value - self._total / (self._width - 1.0)
            self._variance += (self._width - 1.0) * delta_v * delta_v / self._width
        self._total += value
        if len(self._totals[0]) == self.max_buckets + 1:
            self._compress()

    def update(self, values: np.ndarray | Sequence[Any]) -> list[Detection]:
        """Feed values in order; return the detections, indexed within ``values``."""
        batch = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if not np.isfinite(batch).all():
            raise ValueError("adwin: values must be finite (NaN and infinities are filtered upstream)")
        if batch.size and float(np.max(np.abs(batch))) > VALUE_BOUND:
            batch = np.clip(batch, -VALUE_BOUND, VALUE_BOUND)
        if self._helper is not None:
            return self._update_river(batch)
        return self._update_port(batch)

    def _update_river(self, batch: np.ndarray) -> list[Detection]:
        """Values through river's window; a test's figures come from the port, from the state before it."""
        detections: list[Detection] = []
        start_seen = self._n_seen
        values = batch.tolist()
        clock, grace = self.clock, self.grace_period
        position, size = 0, len(values)
        # river's window holds every value since the last detection, so its width is its tick
        tick = self._river_tick
        while position < size:
            # values up to the next tested one: river tests at ticks that are multiples of clock
            test_tick = (tick // clock + 1) * clock
            stop = position + test_tick - tick - 1
            if stop >= size:
                any(map(self._helper.update, values[position:]))  # no test among them
                tick += size - position
                break
            any(map(self._helper.update, values[position:stop]))
            tick = test_tick
            position = stop + 1
            value = values[stop]
            if test_tick <= grace:  # not tested: the window is within the grace period
                self._helper.update(value)
                continue
            self._pending_test = (self._helper.__getstate__(), value)
            if not self._helper.update(value):
                continue
            if not self._evaluate_pending_test():
                raise RuntimeError("adwin: river's window and the port disagree on a test")
            detections.append(
                Detection(
                    index=stop,
                    n_seen=start_seen + stop,
                    statistic=self._last_statistic,
                    threshold=self._last_threshold,
                    window=dict(self._last_window),
                )
            )
            self._reset_window()
            tick = 0
        self._river_tick = tick
        self._n_seen = start_seen + size
        return detections

    def _update_port(self, batch: np.ndarray) -> list[Detection]:
        """Values through the port, one by one."""
        detections: list[Detection] = []
        start_seen = self._n_seen
        clock, grace = self.clock, float(self.grace_period)
        limit = self.max_buckets + 1
        # The window's counters live in locals inside the loop (the hot path);
        # they are written back before a test and at the end.
        total, variance, width, tick = self._total, self._variance, self._width, self._tick
        first_totals, first_variances = self._totals[0], self._variances[0]
        for index, value in enumerate(batch.tolist()):
            first_totals.append(value)
            first_variances.append(0.0)
            width += 1.0
            if width > 1.0:
                delta_v = value - total / (width - 1.0)
                variance += (width - 1.0) * delta_v * delta_v / width
            total += value
            if len(first_totals) == limit:
                self._compress()
            tick += 1
            if tick % clock == 0 and width > grace:
                self._total, self._variance, self._width, self._tick = total, variance, width, tick
                if self._test():
                    detections.append(
                        Detection(
                            index=index,
                            n_seen=start_seen + index,
                            statistic=self._last_statistic,
                            threshold=self._last_threshold,
                            window=dict(self._last_window),
                        )
                    )
                    self._reset_window()
                    total, variance, width, tick = self._total, self._variance, self._width, self._tick
                    first_totals, first_variances = self._totals[0], self._variances[0]
        self._total, self._variance, self._width, self._tick = total, variance, width, tick
        self._n_seen = start_seen + len(batch)
        return detections

    def _compress(self) -> None:
        """Merge the two oldest buckets of each full row into the next row."""
        totals, variances = self._totals, self._variances
        limit = self.max_buckets + 1
        row = 0
        while len(totals[row]) == limit:
            size = float(1 << row)
            t0, t1 = totals[row][0], totals[row][1]
            v0, v1 = variances[row][0], variances[row][1]
            mu1 = t0 / size
            mu2 = t1 / size
            if row + 1 == len(totals):
                totals.append([])
                variances.append([])
            totals[row + 1].append(t0 + t1)
            variances[row + 1].append(v0 + v1 + size * 0.5 * (mu1 - mu2) * (mu1 - mu2))
            del totals[row][:2]
            del variances[row][:2]
            row += 1

    def _test(self) -> bool:
        """Test every bucket boundary, oldest first; True at the first cut found."""
        # [window total, bucket totals oldest first]: subtract.accumulate then
        # gives the newer side's total at each boundary, in river's order.
        values = [self._total]
        sizes: list[float] = []
        rows = self._totals
        for row in range(len(rows) - 1, -1, -1):
            buckets = rows[row]
            values.extend(buckets)
            sizes.extend([float(1 << row)] * len(buckets))
        # The boundary after the newest bucket is no cut.
        values.pop()
        sizes.pop()
        width = self._width
        minimum = float(self.min_window_length)
        n0 = np.cumsum(sizes)
        n1 = width - n0
        # Cuts with both sides at least min_window_length long: one run of
        # boundaries, as n0 grows and n1 shrinks.
        low = int(np.searchsorted(n0, minimum))
        high = int(np.searchsorted(-n1, -minimum, side="right"))
        if low >= high:
            self._last_statistic, self._last_threshold = 0.0, math.inf
            return False
        totals = np.array(values)
        u1 = np.subtract.accumulate(totals)[1 + low : 1 + high]
        u0 = np.cumsum(totals[1:high + 1])[low:high]
        n0, n1 = n0[low:high], n1[low:high]
        delta_mean = np.abs(u0 / n0 - u1 / n1)
        delta_prime = math.log(2.0 * math.log(width) / self.delta)
        m_recip = 1.0 / (n0 - minimum + 1.0) + 1.0 / (n1 - minimum + 1.0)
        epsilon = np.sqrt(2.0 * m_recip * (self._variance / width) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
        margin = delta_mean - epsilon
        cuts = margin > 0.0
        detected = bool(cuts.any())
        cut = int(np.argmax(cuts)) if detected else int(np.argmax(margin))
        self._last_statistic = float(delta_mean[cut])
        self._last_threshold = float(epsilon[cut])
        self._last_window = {"reference": int(n0[cut]), "current": int(n1[cut])}
        return detected

    def state_dict(self) -> dict[str, Any]:
        """The bucket structure and counters as plain JSON-serialisable data."""
        if self._helper is not None:
            self._evaluate_pending_test()
            self._load_window(_decode(self._helper.__getstate__()))
        return {
            "version": _STATE_VERSION,
            "n_seen": self._n_seen,
            "total": self._total,
            "variance": self._variance,
            "width": int(self._width),
            "tick": self._tick,
            "totals": [list(row) for row in self._totals],
            "variances": [list(row) for row in self._variances],
            "statistic": self._last_statistic,
            "threshold": None if math.isinf(self._last_threshold) else self._last_threshold,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` of a detector with the same spec."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError("state was saved by a different adwin version")
        self._reset_window()
        self._n_seen = int(state["n_seen"])
        self._total = float(state["total"])
        self._variance = float(state["variance"])
        self._width = float(state["width"])
        self._tick = int(state["tick"])
        self._totals = [[float(x) for x in row] for row in state["totals"]]
        self._variances = [[float(x) for x in row] for row in state["variances"]]
        if len(self._totals) != len(self._variances) or not self._totals:
            raise ValueError("adwin state: malformed bucket rows")
        self._last_statistic = float(state["statistic"])
        threshold = state["threshold"]
        self._last_threshold = math.inf if threshold is None else float(threshold)
        if self._helper is not None:
            self._river_tick = self._tick
            buckets = sum(len(row) for row in self._totals)
            self._helper.__setstate__(_encode({
                "delta": self.delta, "clock": self.clock, "max_buckets": self.max_buckets,
                "min_window_length": float(self.min_window_length), "grace_period": float(self.grace_period),
                "total": self._total, "variance": self._variance, "width": self._width,
                "total_width": 0.0, "n_buckets": buckets, "max_n_buckets": buckets, "tick": self._tick,
                "n_detections": 0, "totals": self._totals, "variances": self._variances,
                "arguments": (self.delta, self.clock, self.max_buckets, self.min_window_length, self.grace_period),
            }))
