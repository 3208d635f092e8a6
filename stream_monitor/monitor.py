"""Route decoded events to their detectors and turn detections into alerts.

This is the part that ``replay`` and ``run`` share, so both give the same
alerts for the same events: it sees only decoded events in order, never the
wall clock or Kafka. One :class:`Monitor` holds the detectors of every
(model, model_version, signal) it has seen, within the caps of the settings.

Per batch, values are gathered column-wise per signal and each detector gets
one numpy update; detections map back to the events that caused them. Alerts
of a batch come out ordered by (event position, signal, detector), which does
not depend on how the stream was cut into batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_monitor import detectors
from stream_monitor.alerts import Alert, alert_id, rfc3339
from stream_monitor.config import ModelRule, Settings
from stream_monitor.detectors.reference import reference_params
from stream_monitor.events import PredictionEvent
from stream_monitor.metrics import Metrics

__all__ = ["Monitor", "Record", "state_key"]

#: Drift on these signals is about the model's quality, so it is always critical.
_PERFORMANCE_PREFIX = "performance:"


def state_key(model: str, model_version: str) -> tuple[str, str]:
    """The key under which a model version's detector state lives.

    Kept in one place: when state moves with Kafka partitions (changelog
    topics), this is the function that changes.
    """
    return (model, model_version)


@dataclass(slots=True)
class Record:
    """One decoded prediction event and where it came from."""

    event: PredictionEvent
    partition: int = 0
    #: the Kafka message timestamp in epoch seconds, used when the event has no ``ts``
    timestamp: float | None = None


class _SignalState:
    """The detectors of one signal of one model version, and the batch being gathered."""

    __slots__ = ("signal", "kind", "detectors", "n_values", "values", "positions",
                 "statistic_gauges", "threshold_gauges", "active_gauges", "detection_counters",
                 "last_detection", "severity")

    def __init__(self, signal: str, kind: str, detector_list: list[detectors.Detector],
                 severity: str) -> None:
        self.signal = signal
        self.kind = kind
        self.detectors = detector_list
        self.severity = severity
        self.n_values = 0
        self.values: list[Any] = []
        self.positions: list[int] = []
        self.statistic_gauges: list[Any] = []
        self.threshold_gauges: list[Any] = []
        self.active_gauges: list[Any] = []
        self.detection_counters: list[Any] = []
        #: n_values at each detector's last detection, or None
        self.last_detection: list[int | None] = [None] * len(detector_list)


class _VersionState:
    """Everything the monitor keeps for one (model, model_version)."""

    __slots__ = ("model", "model_version", "rule", "signals", "by_feature", "prediction",
                 "family_signals", "last_seen")

    def __init__(self, model: str, model_version: str, rule: ModelRule, family_signals: int) -> None:
        self.model = model
        self.model_version = model_version
        self.rule = rule
        self.signals: dict[str, _SignalState | None] = {}
        #: feature name -> state (None: not monitored); saves building "feature:<name>" per value
        self.by_feature: dict[str, _SignalState | None] = {}
        self.prediction: _SignalState | None | bool = False  # False: not seen yet
        self.family_signals = family_signals
        #: the monitor's event count when this version last had an event (for eviction)
        self.last_seen = 0


class Monitor:
    """Routes events to per-signal detectors and produces alerts.

    A +1 sd shift of one feature at event 3000, in one batch:

    >>> import numpy as np
    >>> from stream_monitor.config import Settings
    >>> rng = np.random.default_rng(1)
    >>> values = np.concatenate([rng.normal(0, 1, 3000), rng.normal(1, 1, 1000)])
    >>> records = [Record(PredictionEvent(f"e{i}", "fraud", "3", None, {"amount": float(v)}, None))
    ...            for i, v in enumerate(values)]
    >>> for alert in Monitor(Settings()).process(records):
    ...     print(alert.signal, alert.detector, alert.event_id, alert.n_seen)
    feature:amount page_hinkley e3036 3036
    feature:amount ks e3099 3099
    """

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._versions: dict[tuple[str, str], _VersionState] = {}
        self._signals_per_model: dict[str, set[str]] = {}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._events_seen = 0

    def has_version(self, model: str, model_version: str) -> bool:
        return state_key(model, model_version) in self._versions

    def models(self) -> dict[str, set[str]]:
        """The models being monitored (within the model cap)."""
        return self._signals_per_model

    # -- routing --------------------------------------------------------

    def _admit(self, event: PredictionEvent) -> _VersionState | None:
        model = event.model
        if model not in self._signals_per_model:
            if len(self._signals_per_model) >= self._settings.limits.max_models:
                if self._metrics:
                    self._metrics.models_dropped.inc()
                return None
            self._signals_per_model[model] = set()
        rule = self._settings.rule_for(model)
        cap = self._settings.limits.max_signals_per_model
        if rule.signals is not None and not any(any(c in p for c in "*?[") for p in rule.signals):
            family = min(cap, len(rule.signals))
        else:
            # the first event shows the model's schema; signals beyond it share the budget
            seen = len(event.features) + (event.prediction is not None)
            family = min(cap, max(1, seen))
        versions = [v for v in self._versions.values() if v.model == model]
        if len(versions) >= self._settings.limits.max_versions_per_model:
            # models are redeployed: the version not seen for longest makes room
            self._evict(min(versions, key=lambda v: v.last_seen))
        state = _VersionState(model, event.model_version, rule, family)
        self._versions[state_key(model, event.model_version)] = state
        return state

    def _evict(self, version: _VersionState) -> None:
        del self._versions[state_key(version.model, version.model_version)]
        if self._metrics is None:
            return
        states = [s for s in (*version.signals.values(), *version.by_feature.values(), version.prediction)
                  if isinstance(s, _SignalState)]
        for state in states:
            for detector in state.detectors:
                labels = (version.model, version.model_version, state.signal, detector.name)
                for metric in (self._metrics.detector_statistic, self._metrics.detector_threshold,
                               self._metrics.drift_active, self._metrics.drift_detections):
                    try:
                        metric.remove(*labels)
                    except KeyError:
                        pass

    def _new_signal(self, version: _VersionState, signal: str, value: Any) -> _SignalState | None:
        rule = version.rule
        names = self._signals_per_model[version.model]
        if not rule.wants(signal):
            return None
        if signal not in names:
            if len(names) >= self._settings.limits.max_signals_per_model:
                return None
            names.add(signal)
        if signal == "performance:error_rate":
            kind = "error"
        else:
            kind = "numeric" if isinstance(value, float) else "categorical"
        configured = rule.detectors.get(kind)  # type: ignore[call-overload]
        specs = ([detectors.DetectorSpec(s.name, dict(s.params)) for s in configured]
                 if configured else detectors.default_specs(kind))
        family_tests = max(1, version.family_signals * max(1, len(specs)))
        built = []
        for spec in specs:
            params = {**self._reference_params(rule, signal, kind, spec.name), **spec.params}
            built.append(detectors.build(detectors.DetectorSpec(spec.name, params),
                                         family_tests=family_tests))
        severity = "critical" if signal.startswith(_PERFORMANCE_PREFIX) else rule.severity
        state = _SignalState(signal, kind, built, severity)
        if self._metrics:
            for detector in built:
                labels = (version.model, version.model_version, signal, detector.name)
                state.statistic_gauges.append(self._metrics.detector_statistic.labels(*labels))
                state.threshold_gauges.append(self._metrics.detector_threshold.labels(*labels))
                state.active_gauges.append(self._metrics.drift_active.labels(*labels))
                state.detection_counters.append(self._metrics.drift_detections.labels(*labels))
                state.active_gauges[-1].set(0)
            self._metrics.signals_active.labels(version.model).set(
                len(self._signals_per_model[version.model]))
        return state

    def _reference_params(self, rule: ModelRule, signal: str, kind: str, name: str) -> dict[str, Any]:
        """Reference settings of the rule, for the detectors that take a reference."""
        reference = rule.reference
        snapshot = None if reference.snapshot is None else self._load_snapshot(rule)
        return reference_params(detectors.REGISTRY.get(name), kind, warmup=reference.warmup,
                                snapshot=snapshot, snapshot_id=reference.id, signal=signal)

    def _load_snapshot(self, rule: ModelRule) -> dict[str, Any]:
        """The rule's snapshot, validated when the config loaded; read once per path."""
        path = str(rule.reference.snapshot)
        if path not in self._snapshots:
            self._snapshots[path] = rule.reference.snapshot_data() or {}
        return self._snapshots[path]

    # -- the per-batch path ---------------------------------------------

    def process(self, records: Sequence[Record]) -> list[Alert]:
        """Feed a batch of events in order; return the alerts they caused."""
        metrics = self._metrics
        versions = self._versions
        touched: dict[int, _SignalState] = {}
        missing: dict[str, int] = {}
        mismatched: dict[str, int] = {}
        dropped: dict[str, int] = {}
        last_ts: dict[str, float] = {}
        events_seen = self._events_seen
        for position, record in enumerate(records):
            event = record.event
            version = versions.get(state_key(event.model, event.model_version))
            if version is None:
                version = self._admit(event)
                if version is None:
                    continue
            version.last_seen = events_seen + position
            model = event.model
            event_ts = event.ts if event.ts is not None else record.timestamp
            if event_ts is not None:
                last_ts[model] = event_ts
            by_feature = version.by_feature
            for name, value in event.features.items():
                state = by_feature.get(name, False)
                if state is False:
                    if value is None:
                        missing[model] = missing.get(model, 0) + 1
                        continue
                    state = self._new_signal(version, "feature:" + name, value)
                    by_feature[name] = state
                if state is None:
                    dropped[model] = dropped.get(model, 0) + 1
                    continue
                if value is None:
                    missing[model] = missing.get(model, 0) + 1
                    continue
                if (state.kind == "numeric") is not isinstance(value, float):
                    mismatched[model] = mismatched.get(model, 0) + 1
                    continue
                state.values.append(value)
                state.positions.append(position)
                touched[id(state)] = state
            prediction = event.prediction
            if prediction is not None:
                state = version.prediction
                if state is False:
                    state = self._new_signal(version, "prediction", prediction)
                    version.prediction = state
                if state is None:
                    dropped[model] = dropped.get(model, 0) + 1
                elif (state.kind == "numeric") is not isinstance(prediction, float):
                    mismatched[model] = mismatched.get(model, 0) + 1
                else:
                    state.values.append(prediction)
                    state.positions.append(position)
                    touched[id(state)] = state

        self._events_seen = events_seen + len(records)
        alerts: list[tuple[int, str, str, Alert]] = []
        for state in touched.values():
            self._detect(state, records, alerts)
        if metrics:
            for model, count in missing.items():
                metrics.values_skipped.labels(model, "missing").inc(count)
            for model, count in mismatched.items():
                metrics.values_skipped.labels(model, "kind_mismatch").inc(count)
            for model, count in dropped.items():
                metrics.signals_dropped.labels(model).inc(count)
            for model, ts in last_ts.items():
                metrics.last_event_timestamp.labels(model).set(ts)
        alerts.sort(key=lambda item: item[:3])
        return [alert for *_, alert in alerts]

    def feed_signal(self, model: str, model_version: str, signal: str,
                    values: Iterable[tuple[Any, Record]]) -> list[Alert]:
        """Feed values of a derived signal (e.g. ``performance:error_rate``) in order."""
        items = list(values)
        if not items:
            return []
        version = self._versions.get(state_key(model, model_version))
        if version is None:
            version = self._admit(items[0][1].event)
            if version is None:
                return []
        state = version.signals.get(signal, False)
        if state is False:
            state = self._new_signal(version, signal, items[0][0])
            version.signals[signal] = state
        if state is None:
            if self._metrics:
                self._metrics.signals_dropped.labels(model).inc(len(items))
            return []
        records = [record for _, record in items]
        state.values.extend(value for value, _ in items)
        state.positions.extend(range(len(items)))
        alerts: list[tuple[int, str, str, Alert]] = []
        self._detect(state, records, alerts)
        alerts.sort(key=lambda item: item[:3])
        return [alert for *_, alert in alerts]

    def _detect(self, state: _SignalState, records: Sequence[Record],
                out: list[tuple[int, str, str, Alert]]) -> None:
        values: Any = (np.asarray(state.values, dtype=np.float64) if state.kind != "categorical"
                       else state.values)
        positions = state.positions
        base = state.n_values
        metrics_on = bool(state.statistic_gauges)
        hold = self._settings.drift_active_values
        for index, detector in enumerate(state.detectors):
            for detection in detector.update(values):
                position = positions[detection.index]
                record = records[position]
                event = record.event
                n_seen = base + detection.index
                event_ts = event.ts if event.ts is not None else record.timestamp
                alert = Alert(
                    alert_id=alert_id(event.model, event.model_version, state.signal,
                                      detector.name, event.event_id, n_seen),
                    model=event.model, model_version=event.model_version, signal=state.signal,
                    detector=detector.name, event_id=event.event_id,
                    detected_at=rfc3339(event_ts), n_seen=n_seen,
                    statistic=_finite(detection.statistic), threshold=_finite(detection.threshold),
                    p_value=detection.p_value, severity=state.severity,
                    reference=detection.reference, window=dict(detection.window),
                    partition=record.partition,
                )
                out.append((position, state.signal, detector.name, alert))
                state.last_detection[index] = n_seen
                if metrics_on:
                    state.detection_counters[index].inc()
                    state.active_gauges[index].set(1)
            if metrics_on:
                state.statistic_gauges[index].set(detector.statistic)
                state.threshold_gauges[index].set(detector.threshold)
        state.n_values = base + len(positions)
        if metrics_on:
            for index, last in enumerate(state.last_detection):
                if last is not None and state.n_values - last >= hold:
                    state.active_gauges[index].set(0)
                    state.last_detection[index] = None
        state.values = []
        state.positions = []


def _finite(value: float) -> float:
    """Alerts are JSON: an infinite statistic (a certain change) is written as a large number."""
    if math.isfinite(value):
        return float(value)
    return math.copysign(1e308, value)
