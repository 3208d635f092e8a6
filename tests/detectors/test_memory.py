"""Memory of the numeric detectors: parameter-only arrays are shared, per-signal state stays small.

Issue 13's target is at most 30 KiB per numeric signal at steady state with the
default numeric set (``bench/memory.py`` prints the figure); these tests hold
the detectors to it with tracemalloc, and check that what depends only on the
parameters is one object shared by every detector that has those parameters.
"""

from __future__ import annotations

import gc
import mmap
import json
import tracemalloc

import numpy as np
import pytest

from stream_monitor.detectors import DetectorSpec, build, default_specs
from stream_monitor.detectors.base import decode_values, encode_values
from stream_monitor.detectors.page_hinkley import PageHinkley
from stream_monitor.detectors.quantile_chi2 import _block_offsets

#: issue 13: bytes per numeric signal at steady state
PER_SIGNAL_BOUND = 30 * 1024


def _signal(seed: int, size: int) -> np.ndarray:
    """Gaussian, lognormal, count and score signals in turn; every other one shifts half way."""
    rng = np.random.default_rng(seed)
    shape = seed % 4
    if shape == 0:
        values = rng.normal(5.0, 2.0, size)
    elif shape == 1:
        values = rng.lognormal(0.0, 0.8, size)
    elif shape == 2:
        values = rng.poisson(3.0, size).astype(np.float64)
    else:
        values = rng.beta(2.0, 5.0, size)
    if seed % 2:
        values[size // 2 :] += np.std(values)
    return values


def _held_and_shared(names: list[str] | None, signals: int, size: int) -> tuple[float, int, int]:
    """Bytes held per signal by the detectors after ``size`` values each, bytes left after deleting
    them, and the number of detections."""
    streams = [_signal(seed, size) for seed in range(signals)]
    specs = default_specs("numeric") if names is None else [DetectorSpec(name) for name in names]
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        sets = [[build(spec, family_tests=44) for spec in specs] for _ in range(signals)]
        detections = 0
        for detectors, stream in zip(sets, streams):
            for position in range(0, size, 1000):
                for detector in detectors:
                    detections += len(detector.update(stream[position : position + 1000]))
        gc.collect()
        total = tracemalloc.get_traced_memory()[0] - start
        del sets
        gc.collect()
        shared = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    return (total - shared) / signals, shared, detections


def test_default_numeric_set_holds_at_most_30_kib_per_signal_at_steady_state() -> None:
    held, _, detections = _held_and_shared(None, signals=12, size=20_000)
    assert detections, "the shifts must cause detections, so re-armed references are part of the figure"
    assert held <= PER_SIGNAL_BOUND, f"{held / 1024:.1f} KiB per signal"


def test_shared_caches_stay_bounded_as_references_multiply() -> None:
    # Each scale reference has its own bins; calibrating 40 of them must not keep
    # posteriors and samples for each (they were 0.1 to 0.7 MiB apiece).
    _, shared, _ = _held_and_shared(["scale"], signals=40, size=2_500)
    assert shared <= 16 * 2**20, f"{shared / 2**20:.1f} MiB kept after the detectors were deleted"


def test_page_hinkley_drift_ramps_are_shared_read_only_and_exact() -> None:
    first, second = build(DetectorSpec("page_hinkley"), family_tests=44), build(DetectorSpec("page_hinkley"),
                                                                               family_tests=44)
    assert isinstance(first, PageHinkley) and isinstance(second, PageHinkley)
    assert first._ramp is second._ramp and first._ramp_gap is second._ramp_gap
    assert not first._ramp.flags.writeable and not first._ramp_gap.flags.writeable
    other = build(DetectorSpec("page_hinkley", {"drifts": [0.3, 0.6]}), family_tests=44)
    assert isinstance(other, PageHinkley) and other._ramp is not first._ramp
    steps = np.arange(1, first._ramp.shape[1] + 1)
    for row, drift in enumerate(other._fixed_drifts.tolist()):
        assert np.array_equal(other._ramp[row], drift * steps)
    leads = other._directions
    for row in range(leads, other._ramp.shape[0]):
        assert np.array_equal(other._ramp_gap[row - leads], other._ramp[row] - other._ramp[row % leads])


def test_page_hinkley_and_scale_drop_their_warm_up_buffer_once_the_reference_is_set() -> None:
    stream = _signal(0, 2_500)
    for name in ("page_hinkley", "scale"):
        detector = build(DetectorSpec(name), family_tests=44)
        detector.update(stream[:1_999])
        assert detector._buffer is not None and detector._buffer.size == 2_000  # type: ignore[attr-defined]
        detector.update(stream[1_999:])
        assert detector._buffer is None, name  # type: ignore[attr-defined]


def test_quantile_chi2_block_offsets_are_one_table_per_stride_and_cells() -> None:
    small = _block_offsets(25, 7, 1_000)
    assert _block_offsets(25, 7, 300) is small
    assert not small.flags.writeable
    assert np.array_equal(small[:1_000], (np.arange(1_000) // 25) * 7)
    grown = _block_offsets(25, 7, 5_000)
    assert grown.size >= 5_000 and np.array_equal(grown[:5_000], (np.arange(5_000) // 25) * 7)
    assert _block_offsets(25, 7, 1_000) is grown
    assert _block_offsets(25, 8, 1_000) is not grown


# -- compact checkpoints ------------------------------------------------------------------

#: detector -> (its state's key of the values being collected, the state version that held a list)
_WARMUP_FIELDS = {"page_hinkley": ("warmup_values", 3), "scale": ("warmup_values", 2), "quantile_chi2": ("warmup", 1)}


def test_a_checkpoint_while_references_fill_holds_about_11_characters_a_value() -> None:
    stream = _signal(0, 1_500)
    sizes = {}
    for name in _WARMUP_FIELDS:
        detector = build(DetectorSpec(name), family_tests=44)
        detector.update(stream)
        sizes[name] = len(json.dumps(detector.state_dict()))
    # the values collected dominate: 1,500 for each (1,000 for quantile_chi2, then its window)
    assert sizes["page_hinkley"] <= 11 * 1_500 + 600, sizes
    assert sizes["scale"] <= 11 * 1_500 + 600, sizes
    assert sizes["quantile_chi2"] <= 1_000, sizes  # its reference (1,000) is complete: counts only


def test_values_encoding_round_trips_every_bit_and_refuses_garbage() -> None:
    values = np.array([0.1, -0.0, 5e-324, 1.7976931348623157e308, -1e-300, 3.0, np.pi])
    decoded = decode_values(encode_values(values))
    assert decoded.dtype == np.float64 and decoded.tobytes() == values.tobytes()
    assert decode_values(encode_values(np.empty(0))).size == 0
    assert np.array_equal(decode_values([1.5, 2.0]), [1.5, 2.0])  # older states: a list
    with pytest.raises(ValueError):
        decode_values("not base64!")
    with pytest.raises(ValueError):
        decode_values(encode_values(values)[:-4])  # not a whole number of values


@pytest.mark.parametrize("name", sorted(_WARMUP_FIELDS))
@pytest.mark.parametrize("cut", [700, 2_900])
def test_a_state_saved_with_a_list_of_values_still_restores_identically(name: str, cut: int) -> None:
    field, old_version = _WARMUP_FIELDS[name]
    stream = _signal(1, 6_000)  # shifts at 3,000: detections and a re-armed reference after the cut
    original = build(DetectorSpec(name), family_tests=44)
    original.update(stream[:cut])
    state = json.loads(json.dumps(original.state_dict()))
    state[field] = decode_values(state[field]).tolist()
    state["version"] = old_version
    restored = build(DetectorSpec(name), family_tests=44)
    restored.load_state_dict(state)
    assert restored.state_dict() == original.state_dict()
    expected = [(d.index, d.statistic, d.reference) for d in original.update(stream[cut:])]
    assert [(d.index, d.statistic, d.reference) for d in restored.update(stream[cut:])] == expected


def test_reference_buffers_get_their_own_mapping_released_when_freed() -> None:
    from stream_monitor.detectors import base

    live = base._mapped_live
    buffer = base.reference_buffer(2_000)
    assert buffer.dtype == np.float64 and buffer.shape == (2_000,) and buffer.flags.writeable
    assert isinstance(buffer.base, memoryview) and isinstance(buffer.base.obj, mmap.mmap)
    assert base._mapped_live == live + 1
    buffer[:] = np.arange(2_000.0)
    assert buffer.sum() == 1_999_000.0
    del buffer
    gc.collect()
    assert base._mapped_live == live  # unmapped with the array
    assert base.reference_buffer(100).base is None  # small: from the heap


def test_reference_buffers_come_from_the_heap_past_the_mapping_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_monitor.detectors import base

    monkeypatch.setattr(base, "MAPPED_BUFFERS_MOST", base._mapped_live)
    assert base.reference_buffer(2_000).base is None
    stream = _signal(2, 5_000)
    for name in ("page_hinkley", "scale", "quantile_chi2"):  # and the detectors work the same
        capped, mapped = build(DetectorSpec(name), family_tests=44), None
        expected = [(d.index, d.statistic) for d in capped.update(stream)]
        monkeypatch.undo()
        mapped = build(DetectorSpec(name), family_tests=44)
        assert [(d.index, d.statistic) for d in mapped.update(stream)] == expected
        assert capped.state_dict() == mapped.state_dict()
        monkeypatch.setattr(base, "MAPPED_BUFFERS_MOST", base._mapped_live)
