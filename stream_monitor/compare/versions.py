"""Every live candidate version of a model against its baseline, on the same signals.

The baseline of a model is the version its rule names (``compare: {baseline:
"7"}``), or else the earliest-seen version still live (monitored, not
evicted); every other live version is a candidate. Each (candidate, signal)
gets a :class:`~stream_monitor.compare.source_test.SourceTest` over the
baseline's and the candidate's values of that signal, merged in event order.
Versions seen but no longer live get no comparison; when the baseline changes
(evicted, or the named one arrives) every comparison of the model restarts.
A (candidate, signal) raises at most one alert against a baseline: the
difference of a canary persists while it runs, so after its alert the pair
stops comparing (``stream_monitor_version_compare_differs`` stays 1 for it)
until the candidate or the baseline leaves.

The monitor hands over each batch's values per (version, signal) with their
ordinals (the event's position in the partition's stream), and the admissions
and evictions of versions at their ordinals; :meth:`VersionComparisons.flush`
replays them in ordinal order, so the result does not depend on batch
boundaries. Performance values (joined labels) come in the join's order through
:meth:`VersionComparisons.compare_values`.

The false-alarm budget ``compare.alpha`` (default 1e-4 per model, over an
unbounded run) is split evenly over the model's signal family and its
possible candidates (``limits.max_versions_per_model - 1``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_monitor.alerts import Alert, alert_id, rfc3339
from stream_monitor.compare.source_test import CompareDetection, SourceTest
from stream_monitor.config import CompareRule, Settings
from stream_monitor.metrics import Metrics

__all__ = ["DETECTOR", "VersionComparisons"]

#: the ``detector`` of a comparison alert
DETECTOR = "version_compare"
_PERFORMANCE_PREFIX = "performance:"

#: (position in the batch, signal, detector, alert): how the monitor sorts a batch's alerts
Emitted = tuple[int, str, str, Alert]


@dataclass(slots=True)
class _Comparison:
    """One (candidate, signal) test and its metric series."""

    test: SourceTest
    #: values of both versions compared on this pair since it started
    n_compared: int = 0
    #: the severity of the pair's alert once it raised one (it then stops comparing)
    detected: str | None = None
    gauges: tuple[Any, ...] = ()


@dataclass(slots=True)
class _Model:
    """What one model's comparisons keep."""

    #: live versions in the order they were first seen (admitted)
    live: list[str] = field(default_factory=list)
    baseline: str | None = None
    #: (candidate, signal) -> comparison
    pairs: dict[tuple[str, str], _Comparison] = field(default_factory=dict)
    #: this batch: ordinal-ordered membership changes, and values per (version, signal)
    changes: list[tuple[int, int, str]] = field(default_factory=list)
    values: dict[tuple[str, str], list[tuple[str, Any, np.ndarray]]] = field(default_factory=dict)
    #: a state record of this model is on the changelog
    persisted: bool = False


class VersionComparisons:
    """The comparisons of one partition's monitor (see the module docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics | None,
                 family_size: Callable[[str], int]) -> None:
        self._settings = settings
        self._metrics = metrics
        #: signals sharing a model's false-alarm budget (the monitor's family size)
        self._family_size = family_size
        self._models: dict[str, _Model] = {}
        self._dirty: set[str] = set()
        self._removed: set[str] = set()

    def rule(self, model: str) -> CompareRule:
        return self._settings.rule_for(model).compare

    # -- membership -------------------------------------------------------

    def admitted(self, model: str, version: str, ordinal: int) -> None:
        """A version starts being monitored at this ordinal."""
        if self.rule(model).enabled:
            self._models.setdefault(model, _Model()).changes.append((ordinal, 1, version))

    def evicted(self, model: str, version: str, ordinal: int | None) -> None:
        """A version stops being monitored (at this ordinal; None: at once)."""
        state = self._models.get(model)
        if state is None:
            return
        if ordinal is None:
            self._leave(model, state, version)
        else:
            state.changes.append((ordinal, 0, version))

    def forget_model(self, model: str) -> None:
        """Every comparison of an evicted model goes (its metric series too)."""
        state = self._models.pop(model, None)
        if state is None:
            return
        for key in list(state.pairs):
            self._drop(model, state, key)
        self._dirty.discard(model)
        self._removed.add(model)

    def clear(self) -> None:
        for model in list(self._models):
            self.forget_model(model)
        self._dirty.clear()
        self._removed.clear()

    def _join(self, model: str, state: _Model, version: str) -> None:
        if version not in state.live:
            state.live.append(version)
            self._rebase(model, state)

    def _leave(self, model: str, state: _Model, version: str) -> None:
        if version in state.live:
            state.live.remove(version)
            for key in [key for key in state.pairs if key[0] == version]:
                self._drop(model, state, key)
            self._rebase(model, state)

    def _rebase(self, model: str, state: _Model) -> None:
        """Pick the baseline; a new one restarts every comparison of the model."""
        named = self.rule(model).baseline
        if named is not None:
            baseline = named if named in state.live else None
        else:
            baseline = state.live[0] if state.live else None
        self._dirty.add(model)
        if baseline != state.baseline:
            for key in list(state.pairs):
                self._drop(model, state, key)
            state.baseline = baseline

    def _drop(self, model: str, state: _Model, key: tuple[str, str]) -> None:
        comparison = state.pairs.pop(key)
        if self._metrics and comparison.gauges:
            candidate, signal = key
            labels = (model, candidate, state.baseline or "", signal)
            for metric in (self._metrics.compare_log_e, self._metrics.compare_threshold):
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)
            if comparison.detected is not None:
                with contextlib.suppress(KeyError):
                    self._metrics.compare_differs.remove(*labels, comparison.detected)

    # -- values -----------------------------------------------------------

    def wants(self, model: str) -> bool:
        """Whether values of this model are compared (two live versions, or a change pending)."""
        state = self._models.get(model)
        return state is not None and (len(state.live) > 1 or bool(state.changes))

    def observe(self, model: str, version: str, signal: str, kind: str, values: Any,
                ordinals: np.ndarray) -> None:
        """Values of one (version, signal) in this batch, each at its ordinal."""
        state = self._models[model]
        state.values.setdefault((version, signal), []).append((kind, values, np.asarray(ordinals)))

    def flush(self, records: Sequence[Any], base: int, out: list[Emitted]) -> None:
        """Run this batch's values and membership changes in ordinal order; alerts to ``out``.

        ``records[ordinal - base]`` is the record of the value at ``ordinal``.
        """
        for model, state in self._models.items():
            if not state.changes and not state.values:
                continue
            changes = sorted(state.changes)
            values = state.values
            state.changes, state.values = [], {}
            cut = -1
            for ordinal, joins, version in changes:
                if ordinal > cut:
                    self._run_segment(model, state, values, cut, ordinal, records, base, out)
                    cut = ordinal
                (self._join if joins else self._leave)(model, state, version)
            self._run_segment(model, state, values, cut, None, records, base, out)

    def _run_segment(self, model: str, state: _Model, values: dict[tuple[str, str], list[tuple[str, Any, np.ndarray]]],
                     low: int, high: int | None, records: Sequence[Any], base: int,
                     out: list[Emitted]) -> None:
        """The values with ``low <= ordinal < high`` (``high`` None: all the rest)."""
        if state.baseline is None or len(state.live) < 2 or not values:
            return
        signals = {signal for _, signal in values}
        for signal in sorted(signals):
            baseline_parts = values.get((state.baseline, signal), [])
            for candidate in state.live:
                if candidate == state.baseline:
                    continue
                candidate_parts = values.get((candidate, signal), [])
                if not candidate_parts and not baseline_parts:
                    continue
                merged = _merge(baseline_parts, candidate_parts, low, high)
                if merged is None:
                    continue
                kind, merged_values, sources, ordinals = merged
                self._compare(model, state, candidate, signal, kind, merged_values, sources,
                              lambda index, ordinals=ordinals: records[int(ordinals[index]) - base], out,
                              lambda index, ordinals=ordinals: int(ordinals[index]) - base)

    def compare_values(self, model: str, signal: str, kind: str,
                       items: Sequence[tuple[str, Any, Any]]) -> list[Emitted]:
        """Derived values (``performance:*``) of one model in order: ``(version, value, record)``."""
        state = self._models.get(model)
        out: list[Emitted] = []
        if state is None:
            return out
        if state.changes:
            self.flush((), 0, out)
        if state.baseline is None or len(state.live) < 2:
            return out
        for candidate in state.live:
            if candidate == state.baseline:
                continue
            chosen = [(value, int(version == candidate), record) for version, value, record in items
                      if version in (candidate, state.baseline)]
            if (candidate, signal) not in state.pairs:
                # the comparison starts at the candidate's first joined value: when a version is
                # admitted relative to the labels depends on batching, the pairs' order does not
                first = next((i for i, (_, source, _) in enumerate(chosen) if source), None)
                chosen = [] if first is None else chosen[first:]
            if not chosen:
                continue
            values = np.array([value for value, _, _ in chosen], dtype=np.float64)
            sources = np.array([source for _, source, _ in chosen], dtype=np.int8)
            self._compare(model, state, candidate, signal, kind, values, sources,
                          lambda index, chosen=chosen: chosen[index][2], out, lambda index: index)
        return out

    def _compare(self, model: str, state: _Model, candidate: str, signal: str, kind: str, values: Any,
                 sources: np.ndarray, record_at: Callable[[int], Any], out: list[Emitted],
                 position_at: Callable[[int], int]) -> None:
        key = (candidate, signal)
        kind = "categorical" if kind == "categorical" else "numeric"  # error rates are 0/1 numbers
        comparison = state.pairs.get(key)
        if comparison is not None and comparison.test.kind != kind:
            self._drop(model, state, key)  # the signal changed kind: compare afresh
            comparison = None
        if comparison is None:
            comparison = state.pairs[key] = self._new_comparison(model, state, candidate, signal, kind)
        if comparison.detected is not None:
            return  # one alert per (candidate, baseline, signal): the difference is known
        self._dirty.add(model)
        before = comparison.n_compared
        test = comparison.test
        detections = test.update(values, sources)
        if not detections:
            comparison.n_compared = before + len(sources)
            if comparison.gauges:
                comparison.gauges[0].set(test.log_e)
            return
        detection = detections[0]
        record = record_at(detection.index)
        n_seen = before + detection.index
        comparison.n_compared = n_seen + 1
        severity = comparison.detected = self._severity(model, signal, detection)
        if not record.silent:
            out.append((position_at(detection.index), signal, DETECTOR,
                        self._alert(model, state.baseline or "", candidate, signal, detection,
                                    record, n_seen, test.threshold, severity)))
        if self._metrics:
            labels = (model, candidate, state.baseline or "", signal)
            self._metrics.compare_detections.labels(*labels, severity).inc()
            self._metrics.compare_differs.labels(*labels, severity).set(1)
            if comparison.gauges:
                comparison.gauges[0].set(detection.log_e)

    def _new_comparison(self, model: str, state: _Model, candidate: str, signal: str,
                        kind: str) -> _Comparison:
        rule = self.rule(model)
        limits = self._settings.limits
        tests = max(1, self._family_size(model)) * max(1, limits.max_versions_per_model - 1)
        threshold = math.log(tests / rule.alpha)
        test = SourceTest(kind, threshold, bins=rule.bins, warmup=rule.warmup)
        comparison = _Comparison(test)
        if self._metrics:
            labels = (model, candidate, state.baseline or "", signal)
            comparison.gauges = (self._metrics.compare_log_e.labels(*labels),
                                 self._metrics.compare_threshold.labels(*labels))
            comparison.gauges[1].set(threshold)
            comparison.gauges[0].set(0.0)
        return comparison

    def _severity(self, model: str, signal: str, detection: CompareDetection) -> str:
        """``critical`` when the candidate is worse on a performance signal (higher error)."""
        if (signal.startswith(_PERFORMANCE_PREFIX) and detection.candidate_mean is not None
                and detection.baseline_mean is not None and detection.candidate_mean > detection.baseline_mean):
            return "critical"
        return self._settings.rule_for(model).severity

    def _alert(self, model: str, baseline: str, candidate: str, signal: str, detection: CompareDetection,
               record: Any, n_seen: int, threshold: float, severity: str) -> Alert:
        event = record.event
        ts = event.ts if event.ts is not None else record.timestamp
        return Alert(
            alert_id=alert_id(model, candidate, signal, f"{DETECTOR}/{baseline}", event.event_id, n_seen),
            model=model, model_version=candidate, signal=signal, detector=DETECTOR,
            event_id=event.event_id, detected_at=rfc3339(ts), n_seen=n_seen,
            statistic=float(detection.log_e), threshold=float(threshold), p_value=detection.p_value,
            severity=severity, reference=f"version:{baseline}",
            window={"baseline": detection.n_baseline, "candidate": detection.n_candidate},
            partition=record.partition, baseline_version=baseline)

    # -- state ------------------------------------------------------------

    def take_changes(self) -> tuple[set[str], set[str]]:
        """Models whose comparisons changed, and models whose comparisons went, since the last call.

        A model with a single live version has nothing to save (a restore finds its one version).
        """
        dirty, removed = set(), self._removed
        for model in self._dirty:
            state = self._models.get(model)
            if state is None:
                continue
            if len(state.live) > 1 or state.pairs:
                dirty.add(model)
                state.persisted = True
            elif state.persisted:
                # one live version left: nothing to compare, and its order needs no record
                removed.add(model)
                state.persisted = False
        self._dirty, self._removed = set(), set()
        return dirty, removed - dirty

    def model_state(self, model: str) -> dict[str, Any]:
        state = self._models[model]
        rule = self.rule(model)
        return {"model": model, "live": list(state.live), "baseline": state.baseline,
                "rule": [rule.baseline, rule.alpha, rule.bins, rule.warmup],
                "pairs": [[candidate, signal, comparison.n_compared, comparison.detected,
                           comparison.test.state_dict()]
                          for (candidate, signal), comparison in state.pairs.items()]}

    def load_model_state(self, saved: dict[str, Any], live: set[str]) -> None:
        """Restore :meth:`model_state`; ``live`` are the model's restored versions.

        Comparisons saved under other ``compare`` settings start afresh.
        """
        model = str(saved["model"])
        if not self.rule(model).enabled:
            return
        state = self._models.setdefault(model, _Model())
        state.persisted = True
        state.live = [str(v) for v in saved["live"] if str(v) in live]
        state.live += sorted(live - set(state.live))
        rule = self.rule(model)
        same_rule = list(saved["rule"]) == [rule.baseline, rule.alpha, rule.bins, rule.warmup]
        state.baseline = None if saved["baseline"] is None else str(saved["baseline"])
        if same_rule and state.baseline in state.live:
            for candidate, signal, n_compared, detected, test_state in saved["pairs"]:
                if str(candidate) not in state.live:
                    continue
                test = SourceTest.from_state(test_state)
                comparison = self._new_comparison(model, state, str(candidate), str(signal), test.kind)
                comparison.test = test
                comparison.n_compared = int(n_compared)
                comparison.detected = None if detected is None else str(detected)
                if comparison.gauges:
                    comparison.gauges[0].set(test.log_e)
                    if comparison.detected is not None:
                        self._metrics.compare_differs.labels(  # type: ignore[union-attr]
                            model, str(candidate), state.baseline, str(signal), comparison.detected).set(1)
                state.pairs[(str(candidate), str(signal))] = comparison
        else:
            state.baseline = None
        self._rebase(model, state)

    def restored_versions(self, model: str, live: set[str]) -> None:
        """A restored model without saved comparisons (an older state): its versions, in name order."""
        if model not in self._models and self.rule(model).enabled:
            state = self._models[model] = _Model(live=sorted(live))
            self._rebase(model, state)


def _merge(baseline_parts: list[tuple[str, Any, np.ndarray]], candidate_parts: list[tuple[str, Any, np.ndarray]],
           low: int, high: int | None) -> tuple[str, Any, np.ndarray, np.ndarray] | None:
    """The two versions' values with ``low <= ordinal < high``, in ordinal order, and their sources.

    The baseline's kind wins; candidate values of another kind are left out.
    """
    kinds = [kind for kind, _, _ in baseline_parts] or [kind for kind, _, _ in candidate_parts]
    kind = kinds[-1]
    chunks: list[tuple[Any, np.ndarray, int]] = []
    for source, parts in ((0, baseline_parts), (1, candidate_parts)):
        for part_kind, values, ordinals in parts:
            if part_kind != kind and (part_kind == "categorical" or kind == "categorical"):
                continue
            keep = ordinals >= low if high is None else (ordinals >= low) & (ordinals < high)
            if not keep.all():
                values = (np.asarray(values)[keep] if kind != "categorical"
                          else [v for v, k in zip(values, keep) if k])
                ordinals = ordinals[keep]
            if len(ordinals):
                chunks.append((values, ordinals, source))
    if not chunks:
        return None
    ordinals = np.concatenate([o for _, o, _ in chunks])
    sources = np.concatenate([np.full(len(o), s, dtype=np.int8) for _, o, s in chunks])
    order = np.argsort(ordinals, kind="stable")
    if kind == "categorical":
        flat = [v for values, _, _ in chunks for v in values]
        merged: Any = [flat[i] for i in order]
    else:
        merged = np.concatenate([np.asarray(v, dtype=np.float64) for v, _, _ in chunks])[order]
    return kind, merged, sources[order], ordinals[order]
