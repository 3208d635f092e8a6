"""Route decoded events to their detectors and turn detections into alerts.

This is the part that ``replay`` and ``run`` share, so both give the same
alerts for the same events: it sees only decoded events in order, never
Kafka, and no alert depends on the wall clock (its clock only times how long
the drift_active gauge holds after a detection). One :class:`Monitor` holds
the detectors of every (model, model_version, signal) it has seen, within the
caps of the settings.

Per batch, values are gathered column-wise per signal and each detector gets
one numpy update; detections map back to the events that caused them. Alerts
of a batch come out ordered by (event position, signal, detector), which does
not depend on how the stream was cut into batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Any, Protocol

import numpy as np
import orjson

from stream_monitor import detectors
from stream_monitor.alerts import Alert, alert_id, rfc3339
from stream_monitor.compare import VersionComparisons
from stream_monitor.config import _DEFAULT_RULE, ModelRule, Settings
from stream_monitor.detectors.reference import reference_params
from stream_monitor.events import PredictionEvent
from stream_monitor.events.batch import BlockSchema, ColumnBlock, MixedBlock, PredictionBlock
from stream_monitor.logs import RateLimitedLog
from stream_monitor.metrics import DetectorRecord, Metrics

__all__ = ["Monitor", "Record", "RecordBlock", "state_key"]

#: Drift on these signals is about the model's quality, so it is always critical.
_PERFORMANCE_PREFIX = "performance:"

#: this many strings in a row on a numeric signal are reported as a schema change
SCHEMA_CHANGE_RUN = 100
#: a categorical signal that turns numeric within its first this many values was still
#: having its kind decided (one "N/A" first); later, the switch is a schema change
KIND_EVIDENCE = 20

log = logging.getLogger(__name__)


class Trace(Protocol):
    """Where a backtest records each detector's statistic (see :mod:`stream_monitor.backtest.trace`).

    Keys are ``(model, model_version, signal, detector)``; ``x`` is the event
    index (0-based position in the stream) at which the value reached the detector.
    """

    def stride(self, key: tuple[str, str, str, str]) -> int:
        """Events between two samples of the statistic."""

    def sample(self, key: tuple[str, str, str, str], x: int, statistic: float, threshold: float) -> None:
        """The statistic after the value at event ``x``."""

    def detected(self, key: tuple[str, str, str, str], x: int, statistic: float, threshold: float,
                 n_seen: int) -> None:
        """A detection at event ``x`` (its statistic, before the detector re-armed)."""


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
    #: re-read after a restore to bring the detectors up to the committed offset: it
    #: updates them as before, but its alerts went out before the restart and are not repeated
    silent: bool = False


class RecordBlock:
    """Consecutive records of one partition whose events are one block (of one schema, or a
    :class:`~stream_monitor.events.batch.MixedBlock` of several).

    Behaves as the sequence of those records (built one at a time, when an
    alert or a fallback needs one); ``timestamps`` are the Kafka message times
    (None: none), and the first ``quiet`` records are silent.
    """

    __slots__ = ("block", "partition", "timestamps", "quiet")

    def __init__(self, block: PredictionBlock | ColumnBlock | MixedBlock, partition: int = 0,
                 timestamps: Sequence[float | None] | None = None, quiet: int = 0) -> None:
        self.block = block
        self.partition = partition
        self.timestamps = timestamps
        self.quiet = quiet

    def __len__(self) -> int:
        return len(self.block)

    def __getitem__(self, index: int) -> Record:
        timestamps = self.timestamps
        return Record(self.block.event(index), self.partition,
                      None if timestamps is None else timestamps[index], index < self.quiet)

    def records(self) -> list[Record]:
        """Every record, with its event as the one-message decoder gives it."""
        timestamps = self.timestamps or [None] * len(self.block)
        quiet = self.quiet
        return [Record(event, self.partition, timestamps[index], index < quiet)
                for index, event in enumerate(self.block.events())]

    def last_time(self) -> float | None:
        """The last event time of the block as the monitor uses it (an event's ``ts``, else its Kafka
        timestamp), or None when no event has one."""
        times = self.block.times()
        kafka = self.timestamps
        for index in range(len(times) - 1, -1, -1):
            ts = times[index]
            if ts is None and kafka is not None:
                ts = kafka[index]
            if ts is not None:
                return ts
        return None


class _Absent:
    """The type of :data:`_ABSENT`: a feature the event does not carry (None is a missing value)."""


_ABSENT = _Absent()
_EVENT = attrgetter("event")
_VERSION_KEY = attrgetter("model", "model_version")
_FEATURES = attrgetter("features")
_PREDICTION = attrgetter("prediction")


@dataclass(slots=True)
class _Batch:
    """What routing one batch gathers: the signals to update, alerts, and counts per model."""

    touched: dict[int, _SignalState] = field(default_factory=dict)
    alerts: list[tuple[int, str, str, Alert]] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)
    mismatched: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    last_ts: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def count(counts: dict[str, int], model: str, number: int) -> None:
        if number:
            counts[model] = counts.get(model, 0) + number


class _SignalState:
    """The detectors of one signal of one model version, and the batch being gathered."""

    __slots__ = ("signal", "kind", "detectors", "n_values", "values", "positions",
                 "series", "last_detection", "severity", "model", "declared", "n_other", "run_mark",
                 "run_length")

    def __init__(self, signal: str, kind: str, detector_list: list[detectors.Detector | None],
                 severity: str, model: str = "", declared: bool = False) -> None:
        self.signal = signal
        self.kind = kind
        #: a detector that raised is replaced by None (isolated)
        self.detectors = detector_list
        self.severity = severity
        self.model = model
        #: the rule declared the kind: it never changes
        self.declared = declared
        #: values of the other kind seen so far (evidence for a change of kind)
        self.n_other = 0
        #: values accepted at the last mismatch, and mismatches since (a run of the other kind)
        self.run_mark = -1
        self.run_length = 0
        self.n_values = 0
        self.values: list[Any] = []
        self.positions: list[int] = []
        #: each detector's metric series (with metrics on): statistic, threshold, detections and
        #: the drift_active hold, which is not saved (a restart starts at 0)
        self.series: list[DetectorRecord] = []
        #: n_values at each detector's last detection, or None (kept in the saved state)
        self.last_detection: list[int | None] = [None] * len(detector_list)


class _VersionState:
    """Everything the monitor keeps for one (model, model_version)."""

    __slots__ = ("model", "model_version", "rule", "signals", "by_feature", "prediction",
                 "family_signals", "last_seen", "names", "unselected")

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
        #: signal names of this version, within limits.max_signals_per_model
        self.names: set[str] = set()
        #: signals the rule's ``signals`` leaves out: not monitored by choice, so not "dropped"
        self.unselected: set[str] = set()


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
    feature:amount page_hinkley e3038 3038
    feature:amount quantile_chi2 e3099 3099
    feature:amount scale e3168 3168
    """

    def __init__(self, settings: Settings, metrics: Metrics | None = None, columnar: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._metrics = metrics
        #: read for the drift_active hold only: no alert depends on it
        self._clock = clock
        if metrics is not None:
            metrics.detectors.clock = clock
        #: route whole columns per (model, version) block; False: value by value (the oracle)
        self._columnar = columnar
        self._versions: dict[tuple[str, str], _VersionState] = {}
        self._signals_per_model: dict[str, set[str]] = {}
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._events_seen = 0
        #: family size per model, remembered beyond version eviction (late labels)
        self._families: dict[str, int] = {}
        #: repeated conditions are logged at their 1st, 10th, 100th... occurrence
        self._log = RateLimitedLog(log)
        #: versions changed and versions evicted since the last take_changes() (for snapshots)
        self._dirty: set[tuple[str, str]] = set()
        self._evicted: set[tuple[str, str]] = set()
        #: the (model, version) of the last event seen (the likely schema of the next batch)
        self._last_version: tuple[str, str] | None = None
        #: live versions of a model compared with its baseline (canary); fed from process()
        self._comparisons = VersionComparisons(settings, metrics, self._comparison_family)
        #: values not fed to a detector, per (model, reason), as values_skipped_total counts them
        #: (``signal_cap``: signals_dropped_total; ``model_cap``: events of a model not monitored);
        #: counted only when a Counter is set (replay), as its keys grow with the model names seen
        self.skipped: Counter[tuple[str, str]] | None = None
        #: a backtest's statistic recorder (``replay --report``); None: nothing recorded
        self.trace: Trace | None = None
        #: the event index of the batch's first event (for the trace)
        self._batch_start = 0
        #: seconds between two reads of the detectors' statistic and threshold gauges (0: after
        #: every batch); the service reads them about once a second and when its input is idle, as
        #: reading them after every batch cost more than some detectors' updates
        self.gauge_interval_s = 0.0
        #: the signals whose detectors ran since their gauges were last read, by id
        self._stale_gauges: dict[int, _SignalState] = {}
        self._gauges_at = -math.inf

    @staticmethod
    def preflight(settings: Settings) -> list[tuple[str, str]]:
        """Build every detector the settings can make, as ``process`` would; return the problems.

        Each rule (and the default rule) is tried for every signal kind with its
        reference and at the smallest and largest family size the caps allow, so a
        config this accepts does not fail on the first event. Problems are
        ``(field, reason)`` pairs, e.g. ``("models.0.reference.warmup", ...)`` (the
        dotted form config errors use).
        """
        monitor = Monitor(settings)
        cap = settings.limits.max_signals_per_model
        problems: list[tuple[str, str]] = []
        rules = [(f"models.{i}", rule) for i, rule in enumerate(settings.models)]
        rules.append(("models (default rule)", _DEFAULT_RULE))
        for prefix, rule in rules:
            for kind in detectors.SIGNAL_KINDS:
                specs = _specs(rule, kind)
                for j, spec in enumerate(specs):
                    field = (f"{prefix}.detectors.{kind}.{j}" if rule.detectors.get(kind)  # type: ignore[call-overload]
                             else f"{prefix}.detectors.{kind} (default {spec.name})")
                    largest = cap * max(1, len(specs)) * settings.input.model_partitions
                    problem = _try_build(monitor, rule, kind, spec, (1, largest))
                    if problem is not None:
                        where, reason = problem
                        problems.append((f"{prefix}.reference.{where}" if where else field, reason))
        return problems

    def has_version(self, model: str, model_version: str) -> bool:
        return state_key(model, model_version) in self._versions

    def models(self) -> dict[str, set[str]]:
        """The models being monitored (within the model cap)."""
        return self._signals_per_model

    # -- routing --------------------------------------------------------

    def _admit(self, event: PredictionEvent, now: int) -> _VersionState | None:
        """Start monitoring a (model, version), making room by evicting idle keys.

        When ``limits.max_models`` is reached, the least recently seen model is
        evicted (all its versions and series) if it has been idle for at least
        ``limits.model_min_idle_events`` events; otherwise the new model is dropped.
        """
        model = event.model
        limits = self._settings.limits
        if model not in self._signals_per_model:
            if len(self._signals_per_model) >= limits.max_models:
                victim = self._idle_model(now)
                if victim is None:
                    if self.skipped is not None:
                        self.skipped[(model, "model_cap")] += 1
                    if self._metrics:
                        self._metrics.models_dropped.labels("model_cap").inc()
                    self._log.log(("model_cap",), "model not monitored: limits.max_models reached and "
                                  "no model idle long enough to evict", model=model,
                                  max_models=limits.max_models)
                    return None
                self._evict_model(victim)
            self._signals_per_model[model] = set()
        rule = self._settings.rule_for(model)
        family = self._family_size(rule, event)
        versions = [v for v in self._versions.values() if v.model == model]
        if len(versions) >= limits.max_versions_per_model:
            # models are redeployed: the version not seen for longest makes room
            victim_version = min(versions, key=lambda v: v.last_seen)
            self._evict(victim_version)
            self._comparisons.evicted(model, victim_version.model_version, now)
            if self._metrics:
                self._metrics.keys_evicted.labels("version").inc()
        state = _VersionState(model, event.model_version, rule, family)
        state.last_seen = now
        self._versions[state_key(model, event.model_version)] = state
        self._comparisons.admitted(model, event.model_version, now)
        return state

    def _family_size(self, rule: ModelRule, event: PredictionEvent) -> int:
        """Signals of one model version that share the false-alarm budget, over every partition
        the model is spread on (``input.model_partitions``)."""
        return self._partition_family_size(rule, event) * self._settings.input.model_partitions

    def _partition_family_size(self, rule: ModelRule, event: PredictionEvent) -> int:
        cap = self._settings.limits.max_signals_per_model
        if rule.signals is not None and not any(any(c in p for c in "*?[") for p in rule.signals):
            return min(cap, len(rule.signals))
        seen = len(event.features) + (event.prediction is not None)
        if seen == 0:
            # a derived signal (a late label) shows no schema: the model's last known one, or the cap
            return self._families.get(event.model, cap)
        # the first event shows the model's schema; signals beyond it share the budget
        family = min(cap, seen)
        self._families[event.model] = family
        return family

    def _idle_model(self, now: int) -> str | None:
        """The least recently seen model, if it has been idle long enough to evict."""
        last: dict[str, int] = {model: -1 for model in self._signals_per_model}
        for version in self._versions.values():
            last[version.model] = max(last[version.model], version.last_seen)
        if not last:
            return None
        model = min(last, key=lambda m: (last[m], m))
        if now - last[model] < self._settings.limits.model_min_idle_events:
            return None
        return model

    def _evict_model(self, model: str) -> None:
        for version in [v for v in self._versions.values() if v.model == model]:
            self._evict(version)
        del self._signals_per_model[model]
        self._families.pop(model, None)
        self._comparisons.forget_model(model)
        self._log.forget(lambda key: len(key) > 1 and key[1] == model)
        if self._metrics:
            self._metrics.keys_evicted.labels("model").inc()
            for metric in (self._metrics.signals_active, self._metrics.last_event_timestamp):
                try:
                    metric.remove(model)
                except KeyError:
                    pass

    def _evict(self, version: _VersionState) -> None:
        key = state_key(version.model, version.model_version)
        del self._versions[key]
        self._dirty.discard(key)
        self._evicted.add(key)
        names: set[str] = set()
        for other in self._versions.values():
            if other.model == version.model:
                names |= other.names
        self._signals_per_model[version.model] = names
        if self._metrics is None:
            return
        self._metrics.signals_active.labels(version.model).set(len(names))
        states = [s for s in (*version.signals.values(), *version.by_feature.values(), version.prediction)
                  if isinstance(s, _SignalState)]
        for state in states:
            self._remove_series(version, state)

    def _remove_series(self, version: _VersionState, state: _SignalState) -> None:
        assert self._metrics is not None
        for detector in state.detectors:
            if detector is None:
                continue
            labels = (version.model, version.model_version, state.signal, detector.name, state.severity)
            self._metrics.detectors.remove(*labels)

    def _new_signal(self, version: _VersionState, signal: str, value: Any,
                    kind: str | None = None) -> _SignalState | None:
        """Build a signal's detectors; None when the rule does not want it or the cap is reached.

        The kind is the rule's declared one (``kinds``), else ``kind``, else that of ``value``.
        """
        rule = version.rule
        names = version.names
        if not rule.wants(signal):
            version.unselected.add(signal)
            return None
        if signal not in names:
            if len(names) >= self._settings.limits.max_signals_per_model:
                self._log.log(("signal_cap", version.model), "signal not monitored: "
                              "limits.max_signals_per_model reached for this model version",
                              model=version.model, model_version=version.model_version, signal=signal)
                return None
            names.add(signal)
            self._signals_per_model[version.model].add(signal)
        declared = rule.kinds.get(signal.removeprefix("feature:"))
        if signal == "performance:error_rate":
            kind = "error"
        elif declared is not None:
            kind = declared
        elif kind is None:
            kind = "numeric" if isinstance(value, float) else "categorical"
        return self._build_signal(version, signal, kind, declared is not None)

    def _build_signal(self, version: _VersionState, signal: str, kind: str, declared: bool) -> _SignalState:
        """A signal's detectors (fresh) and metric series."""
        rule = version.rule
        built: list[detectors.Detector | None] = []
        for spec, family_tests in self._signal_specs(version, kind):
            try:
                built.append(self._build_detector(version, signal, kind, spec, family_tests))
            except Exception:  # noqa: BLE001 - one detector must never stop the others
                self._detector_failed(version.model, signal, spec.name)
        severity = "critical" if signal.startswith(_PERFORMANCE_PREFIX) else rule.severity
        state = _SignalState(signal, kind, built, severity, version.model, declared)
        if self._metrics:
            for detector in built:
                assert detector is not None
                labels = (version.model, version.model_version, signal, detector.name, severity)
                state.series.append(self._metrics.detectors.record(*labels))
            self._metrics.signals_active.labels(version.model).set(
                len(self._signals_per_model[version.model]))
        return state

    def _detector_failed(self, model: str, signal: str, name: str) -> None:
        """A detector raised: count it and log it (with the traceback); it stays disabled."""
        if self._metrics:
            self._metrics.detector_errors.labels(model, name).inc()
        self._log.log(("detector_error", model, name), "detector failed and was disabled for this "
                      "signal; the others keep going", level=logging.ERROR, exc_info=True,
                      model=model, signal=signal, detector=name)

    def _other_kind(self, version: _VersionState, state: _SignalState, value: Any, position: int,
                    records: Sequence[Record], out: list[tuple[int, str, str, Alert]],
                    touched: dict[int, _SignalState]) -> _SignalState | None:
        """A value of the other kind: the signal's new state if the kind changes, else None (skip).

        Numbers win: an inferred categorical signal becomes numeric once its numbers
        outnumber its strings (one "N/A" first does not fix the kind; a switch within the
        first :data:`KIND_EVIDENCE` values is the kind being decided, later it is a schema
        change). A numeric signal
        keeps its kind; a run of :data:`SCHEMA_CHANGE_RUN` strings is reported once.
        Decisions count values, so they do not depend on how the stream is batched.
        """
        state.n_other += 1
        accepted = state.n_values + len(state.values)
        if state.kind == "numeric":
            if state.run_mark != accepted:
                state.run_mark, state.run_length = accepted, 0
            state.run_length += 1
            if state.run_length == SCHEMA_CHANGE_RUN:
                self._schema_change(version, state, "numeric signal now gets strings; skipped")
            return None
        if state.declared or not isinstance(value, float) or state.n_other <= accepted:
            return None
        # the pending values go to the old detectors first, then the signal starts over as numeric
        self._detect(state, records, out)
        touched.pop(id(state), None)
        if self._metrics:
            self._remove_series(version, state)
        new = self._new_signal(version, state.signal, value, kind="numeric")
        if accepted >= KIND_EVIDENCE:
            self._schema_change(version, state, "categorical signal now gets numbers; monitored as numeric")
        else:
            log.debug("signal kind decided: numeric", extra={
                "model": version.model, "model_version": version.model_version, "signal": state.signal})
        return new

    def _schema_change(self, version: _VersionState, state: _SignalState, message: str) -> None:
        if self._metrics:
            self._metrics.schema_changes.labels(version.model, state.signal).inc()
        self._log.log(("schema_change", version.model, state.signal), f"schema change: {message}",
                      model=version.model, model_version=version.model_version, signal=state.signal)

    def _reference_params(self, rule: ModelRule, signal: str, kind: str, name: str) -> dict[str, Any]:
        """Reference settings of the rule, for the detectors that take a reference."""
        reference = rule.reference
        snapshot = None if reference.snapshot is None else self._load_snapshot(rule)
        return reference_params(detectors.REGISTRY.get(name), kind, warmup=reference.warmup,
                                snapshot=snapshot, snapshot_id=reference.reference_id(), signal=signal)

    def _load_snapshot(self, rule: ModelRule) -> dict[str, Any]:
        """The rule's snapshot, validated when the config loaded; read once per path."""
        path = str(rule.reference.snapshot)
        if path not in self._snapshots:
            self._snapshots[path] = rule.reference.snapshot_data() or {}
        return self._snapshots[path]

    def release(self) -> None:
        """Remove every metric series of this monitor (its partition moved to another member)."""
        for version in list(self._versions.values()):
            self._evict(version)
        self._comparisons.clear()
        if self._metrics:
            for model in self._signals_per_model:
                for metric in (self._metrics.signals_active, self._metrics.last_event_timestamp):
                    with contextlib.suppress(KeyError):
                        metric.remove(model)
        self._signals_per_model.clear()
        self._dirty.clear()
        self._evicted.clear()
        self._stale_gauges.clear()

    # -- state (checkpoints) --------------------------------------------

    def take_changes(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Versions changed and versions evicted since the last call."""
        dirty, evicted = self._dirty, self._evicted
        self._dirty, self._evicted = set(), set()
        return dirty, evicted - dirty

    def version_keys(self) -> list[tuple[str, str]]:
        return list(self._versions)

    def meta_state(self) -> dict[str, Any]:
        """What the monitor keeps beside its versions: the event count and family sizes."""
        return {"events_seen": self._events_seen, "families": dict(self._families)}

    def load_meta_state(self, state: dict[str, Any]) -> None:
        self._events_seen = int(state["events_seen"])
        self._families = {str(k): int(v) for k, v in state["families"].items()}

    def version_state(self, key: tuple[str, str]) -> dict[str, Any]:
        """One (model, version)'s whole state as plain data: its signals and their detectors."""
        version = self._versions[key]
        signals = []
        where: list[tuple[str, str, _SignalState | None]] = [
            ("feature", name, state) for name, state in version.by_feature.items()]
        where += [("derived", name, state) for name, state in version.signals.items()]
        if version.prediction is not False:
            where.append(("prediction", "prediction", version.prediction))  # type: ignore[arg-type]
        for place, name, state in where:
            if state is None:
                signals.append([place, name, None])
                continue
            signals.append([place, name, {
                "signal": state.signal, "kind": state.kind, "declared": state.declared,
                "n_other": state.n_other, "run_mark": state.run_mark, "run_length": state.run_length,
                "n_values": state.n_values, "last_detection": state.last_detection,
                "detectors": [None if d is None else {"name": d.name, "spec": _spec_digest(d),
                                                      "state": d.state_dict()}
                              for d in state.detectors],
            }])
        return {"model": version.model, "model_version": version.model_version,
                "family_signals": version.family_signals, "last_seen": version.last_seen,
                "names": sorted(version.names), "unselected": sorted(version.unselected),
                "signals": signals}

    def load_version_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`version_state` returned, under the current settings.

        A detector whose spec changed since the state was saved (the config
        changed between runs) starts afresh, and that is logged.
        """
        model, model_version = str(state["model"]), str(state["model_version"])
        rule = self._settings.rule_for(model)
        version = _VersionState(model, model_version, rule, int(state["family_signals"]))
        version.last_seen = int(state["last_seen"])
        version.names = set(state["names"])
        version.unselected = set(state["unselected"])
        self._versions[state_key(model, model_version)] = version
        self._signals_per_model.setdefault(model, set()).update(version.names)
        for place, name, saved in state["signals"]:
            signal_state = None if saved is None else self._restore_signal(version, saved)
            if place == "feature":
                version.by_feature[name] = signal_state
            elif place == "derived":
                version.signals[name] = signal_state
            else:
                version.prediction = signal_state
        if self._metrics:
            self._metrics.signals_active.labels(model).set(len(self._signals_per_model[model]))

    def _restore_signal(self, version: _VersionState, saved: dict[str, Any]) -> _SignalState:
        state = self._build_signal(version, saved["signal"], saved["kind"], bool(saved["declared"]))
        state.n_other, state.run_mark = int(saved["n_other"]), int(saved["run_mark"])
        state.run_length, state.n_values = int(saved["run_length"]), int(saved["n_values"])
        detectors_saved = saved["detectors"]
        if len(detectors_saved) != len(state.detectors):
            self._log.log(("state_mismatch", version.model), "detectors changed since the state was "
                          "saved (config change): this signal starts afresh", model=version.model,
                          signal=state.signal)
            return state
        state.last_detection = [None if n is None else int(n) for n in saved["last_detection"]]
        for index, (detector, entry) in enumerate(zip(state.detectors, detectors_saved)):
            if entry is None:
                state.detectors[index] = None  # it failed before the restart: it stays disabled
            elif detector is None:
                continue
            elif entry.get("name") != detector.name or entry.get("spec") != _spec_digest(detector):
                state.last_detection[index] = None
                self._log.log(("state_mismatch", version.model), "detector settings changed since the "
                              "state was saved (config change): this detector starts afresh",
                              model=version.model, signal=state.signal, detector=detector.name)
            else:
                try:
                    detector.load_state_dict(entry["state"])
                except Exception:  # noqa: BLE001 - one unreadable state must not lose the others
                    state.detectors[index] = self._fresh_detector(version, state, detector)
                    state.last_detection[index] = None
                    self._log.log(("state_unreadable", version.model), "a detector's saved state could not "
                                  "be loaded (another version of the detector?): it starts afresh",
                                  level=logging.ERROR, exc_info=True, model=version.model,
                                  signal=state.signal, detector=detector.name)
        return state

    def _signal_specs(self, version: _VersionState,
                      kind: str) -> list[tuple[detectors.DetectorSpec, int]]:
        """The specs a signal of ``kind`` runs, each with its family size (tests sharing the budget)."""
        specs = _specs(version.rule, kind)
        family_tests = max(1, version.family_signals * max(1, len(specs)))
        return [(spec, family_tests) for spec in specs]

    def _build_detector(self, version: _VersionState, signal: str, kind: str,
                        spec: detectors.DetectorSpec, family_tests: int) -> detectors.Detector:
        params = {**self._reference_params(version.rule, signal, kind, spec.name), **spec.params}
        return detectors.build(detectors.DetectorSpec(spec.name, params), family_tests=family_tests)

    def _fresh_detector(self, version: _VersionState, state: _SignalState,
                        detector: detectors.Detector) -> detectors.Detector | None:
        """A new detector like ``detector`` (a half-loaded one is unusable); None if it cannot be built."""
        for spec, family_tests in self._signal_specs(version, state.kind):
            if spec.name == detector.name:
                try:
                    return self._build_detector(version, state.signal, state.kind, spec, family_tests)
                except Exception:  # noqa: BLE001
                    return None
        return None

    # -- version comparison (canary; stream_monitor.compare) -------------

    def _comparison_family(self, model: str) -> int:
        """Signals sharing the model's comparison budget: as for its detectors."""
        families = [v.family_signals for v in self._versions.values() if v.model == model]
        if families:
            return max(families)
        return self._settings.limits.max_signals_per_model * self._settings.input.model_partitions

    def _observe_for_comparison(self, state: _SignalState, records: Sequence[Record], base: int) -> None:
        """Hand a signal's values of this batch (before detection clears them) to the comparisons."""
        positions = state.positions
        if not len(positions):
            return
        version = records[int(positions[0])].event.model_version
        self._comparisons.observe(state.model, version, state.signal, state.kind, state.values,
                                  base + np.asarray(positions, dtype=np.int64))

    def compare_derived(self, items: Sequence[tuple[str, str, str, float, Record]]) -> list[Alert]:
        """Derived values (``performance:*``) in the join's order, ``(model, version, signal, value,
        record)``: those of monitored signals go to the version comparisons. Returns their alerts."""
        groups: dict[tuple[str, str], list[tuple[str, float, Record]]] = {}
        for model, model_version, signal, value, record in items:
            version = self._versions.get(state_key(model, model_version))
            if version is None or not isinstance(version.signals.get(signal), _SignalState):
                continue
            if self._comparisons.wants(model):
                groups.setdefault((model, signal), []).append((model_version, value, record))
        out: list[tuple[int, str, str, Alert]] = []
        for (model, signal), values in groups.items():
            state = self._versions[state_key(model, values[0][0])].signals[signal]
            assert isinstance(state, _SignalState)
            out += self._comparisons.compare_values(model, signal, state.kind, values)
        out.sort(key=lambda item: item[:3])
        return [alert for *_, alert in out]

    def comparison_changes(self) -> tuple[set[str], set[str]]:
        """Models whose comparisons changed, and whose comparisons went, since the last call."""
        return self._comparisons.take_changes()

    def comparison_state(self, model: str) -> dict[str, Any]:
        return self._comparisons.model_state(model)

    def load_comparison_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`comparison_state` (after the versions are restored)."""
        live = {v.model_version for v in self._versions.values() if v.model == str(state["model"])}
        self._comparisons.load_model_state(state, live)

    def restored_comparisons(self) -> None:
        """After a restore: models with versions but no saved comparisons get their live versions."""
        by_model: dict[str, set[str]] = {}
        for model, model_version in self._versions:
            by_model.setdefault(model, set()).add(model_version)
        for model, live in by_model.items():
            self._comparisons.restored_versions(model, live)

    # -- the per-batch path ---------------------------------------------

    def process(self, records: Sequence[Record]) -> list[Alert]:
        """Feed a batch of events in order; return the alerts they caused.

        Batches whose (model, version)s are all known go column by column
        (:meth:`_route_block`); a batch that starts monitoring a new one goes
        value by value (:meth:`_route_rows`), which admits and evicts in event
        order. Both give the same detector inputs, so the same alerts.
        """
        batch = _Batch()
        self._batch_start = self._events_seen
        if records:
            last = records[-1].event
            self._last_version = (last.model, last.model_version)
        blocks = self._blocks(records) if self._columnar else None
        if blocks is None:
            self._route_rows(records, range(len(records)), batch)
        else:
            for key, positions in blocks.items():
                self._route_block(records, self._versions[key], positions, batch)
            self._last_times(records, blocks, batch)
        base = self._events_seen
        self._events_seen += len(records)
        return self._finish(records, batch, base)

    def _finish(self, records: Sequence[Record], batch: _Batch, base: int) -> list[Alert]:
        """The detectors of the signals the batch touched, the batch's counts, its alerts in order."""
        alerts = batch.alerts
        comparisons = self._comparisons
        for state in batch.touched.values():
            if comparisons.wants(state.model):
                self._observe_for_comparison(state, records, base)
            self._detect(state, records, alerts)
        comparisons.flush(records, base, alerts)
        skipped = self.skipped
        if skipped is not None:
            for reason, counts in (("missing", batch.missing), ("kind_mismatch", batch.mismatched),
                                   ("signal_cap", batch.dropped)):
                for model, count in counts.items():
                    skipped[(model, reason)] += count
        metrics = self._metrics
        if metrics:
            for model, count in batch.missing.items():
                metrics.values_skipped.labels(model, "missing").inc(count)
            for model, count in batch.mismatched.items():
                metrics.values_skipped.labels(model, "kind_mismatch").inc(count)
            for model, count in batch.dropped.items():
                metrics.signals_dropped.labels(model, "signal_cap").inc(count)
            for model, ts in batch.last_ts.items():
                metrics.last_event_timestamp.labels(model).set(ts)
        if self._stale_gauges and self._clock() - self._gauges_at >= self.gauge_interval_s:
            self.refresh_gauges()
        alerts.sort(key=lambda item: item[:3])
        return [alert for *_, alert in alerts]

    def refresh_gauges(self) -> None:
        """Read the statistic and threshold of every detector that ran since the last read into its
        metric series (``stream_monitor_detector_statistic`` and ``_threshold``)."""
        stale, self._stale_gauges = self._stale_gauges, {}
        self._gauges_at = self._clock()
        for state in stale.values():
            for detector, series in zip(state.detectors, state.series):
                if detector is not None:
                    series.statistic = detector.statistic
                    series.threshold = detector.threshold

    def block_schema(self, model: str, model_version: str) -> BlockSchema | None:
        """The shape of a (model, version)'s usual message, to decode a batch as one block.

        None when the version is not monitored yet or the monitor routes value
        by value; a block of this schema is routed column by column with
        nothing to decide per value (every signal exists, of its kind).
        """
        version = self._versions.get(state_key(model, model_version))
        if version is None or not self._columnar:
            return None
        numeric: list[str] = []
        categorical: list[str] = []
        ignored: list[str] = []
        for name, state in version.by_feature.items():
            if state is None:
                ignored.append(name)
            elif state.kind == "numeric":
                numeric.append(name)
            elif state.kind == "categorical":
                categorical.append(name)
            else:
                return None
        prediction = version.prediction
        kind = ("absent" if prediction is False else "ignored" if prediction is None
                else prediction.kind)  # type: ignore[union-attr]
        if kind not in ("absent", "ignored", "numeric", "categorical"):
            return None
        return BlockSchema(model, model_version, tuple(numeric), tuple(categorical), tuple(ignored), kind)

    def last_version(self) -> tuple[str, str] | None:
        """The (model, version) of the last event processed, or None."""
        return self._last_version

    def process_block(self, records: RecordBlock) -> list[Alert]:
        """Feed a block of one (model, version)'s events (as :meth:`process` would); return the alerts.

        The block's schema says every value is of its signal's kind or null,
        so each column goes to its detectors whole. A block whose schema no
        longer matches the monitor's goes through :meth:`process` record by record.
        """
        block = records.block
        if block.__class__ is MixedBlock:
            return self._process_mixed(records)
        schema = block.schema
        if self.block_schema(schema.model, schema.model_version) != schema \
                or self._comparisons.wants(schema.model):
            # a compared model's values go to the comparison in event order, record by record
            return self.process(records.records())
        count = len(block)
        if not count:
            return []
        version = self._versions[state_key(schema.model, schema.model_version)]
        model = version.model
        batch = _Batch()
        self._batch_start = self._events_seen
        version.last_seen = self._events_seen + count - 1
        self._dirty.add((model, version.model_version))
        self._last_version = (model, version.model_version)
        last = records.last_time()
        if last is not None:
            batch.last_ts[model] = last
        self._take_part(version, block, _arange(count), batch)
        base = self._events_seen
        self._events_seen += count
        return self._finish(records, batch, base)

    def _process_mixed(self, records: RecordBlock) -> list[Alert]:
        """A block of several (model, version)s' events (a :class:`MixedBlock`), as :meth:`process`
        routes their records column by column: each part's columns go to its signals at their
        places in the block, so the detectors, the version comparisons and the alerts see what
        the records would give them. A part whose schema no longer matches sends the block
        through :meth:`process` record by record."""
        block = records.block
        parts = block.parts
        for part, _ in parts:
            schema = part.schema
            if self.block_schema(schema.model, schema.model_version) != schema:
                return self.process(records.records())
        count = len(block)
        batch = _Batch()
        self._batch_start = self._events_seen
        kafka = records.timestamps
        latest: dict[str, tuple[int, float]] = {}
        for part, positions in parts:
            schema = part.schema
            model = schema.model
            version = self._versions[state_key(model, schema.model_version)]
            version.last_seen = self._events_seen + int(positions[-1])
            self._dirty.add((model, version.model_version))
            times = part.times()
            for index in range(len(part) - 1, -1, -1):
                position = int(positions[index])
                ts = times[index]
                if ts is None and kafka is not None:
                    ts = kafka[position]
                if ts is not None:
                    if position > latest.get(model, (-1, 0.0))[0]:
                        latest[model] = (position, ts)
                    break
            self._take_part(version, part, positions, batch)
        batch.last_ts.update({model: ts for model, (_, ts) in latest.items()})
        last = parts[int(block.owner(count - 1))][0].schema
        self._last_version = (last.model, last.model_version)
        base = self._events_seen
        self._events_seen += count
        return self._finish(records, batch, base)

    def _take_part(self, version: _VersionState, block: PredictionBlock | ColumnBlock, positions: np.ndarray,
                   batch: _Batch) -> None:
        """A block of one (model, version) whose schema is the version's: each column to its signal at
        ``positions`` (their places in the batch), the ignored features and prediction counted."""
        schema, model, count = block.schema, version.model, len(block)
        by_feature = version.by_feature
        for name, column in zip((*schema.numeric, *schema.categorical), block.columns()):
            state = by_feature[name]
            assert state is not None
            self._take_column(version, state, column, positions, batch, True)
        for name in schema.ignored:
            if not (version.unselected and "feature:" + name in version.unselected):
                batch.count(batch.dropped, model, count)
        prediction = version.prediction
        if schema.prediction == "ignored":
            if "prediction" not in version.unselected:
                batch.count(batch.dropped, model, count - block.predictions().count(None))
        elif isinstance(prediction, _SignalState):
            self._take_column(version, prediction, block.prediction_column(), positions, batch, False)

    def _take_column(self, version: _VersionState, state: _SignalState, column: Sequence[Any],
                     positions: np.ndarray, batch: _Batch, null_is_missing: bool) -> None:
        """One signal's column of a block: its values (nulls skipped, counted when ``null_is_missing``).

        A numeric column may come as a float64 array with NaN for null (a :class:`ColumnBlock`'s):
        a JSON number is never NaN, so NaN marks a null.
        """
        if state.kind == "numeric" and not isinstance(column, np.ndarray):
            try:  # one C pass; a null gives NaN or a TypeError, by numpy version (2.4 gives NaN)
                column = np.fromiter(column, dtype=np.float64, count=len(column))
            except TypeError:
                pass
        if isinstance(column, np.ndarray):
            nulls = np.isnan(column)
            missing = int(np.count_nonzero(nulls))
            if missing:
                if null_is_missing:
                    batch.count(batch.missing, version.model, missing)
                if missing == len(column):
                    return
                keep = ~nulls
                column, positions = column[keep], positions[keep]
            state.values = column
            state.positions = positions
            batch.touched[id(state)] = state
            return
        nulls = column.count(None)
        if nulls:
            if null_is_missing:
                batch.count(batch.missing, version.model, nulls)
            if nulls == len(column):
                return
            keep = [value is not None for value in column]
            column = [value for value in column if value is not None]
            positions = positions[np.array(keep, dtype=bool)]
        state.values = (np.fromiter(column, dtype=np.float64, count=len(column)) if state.kind == "numeric"
                        else list(column))
        state.positions = positions
        batch.touched[id(state)] = state

    def _blocks(self, records: Sequence[Record]) -> dict[tuple[str, str], list[int]] | None:
        """Batch positions per (model, version), in order; None when one is not monitored yet."""
        keys = list(map(_VERSION_KEY, map(_EVENT, records)))
        if not keys:
            return {}
        versions = self._versions
        first = keys[0]
        if keys.count(first) == len(keys):  # the usual batch: one model version
            return {first: list(range(len(keys)))} if first in versions else None
        blocks: dict[tuple[str, str], list[int]] = {}
        for position, key in enumerate(keys):
            block = blocks.get(key)
            if block is None:
                if key not in versions:
                    return None
                block = blocks[key] = []
            block.append(position)
        return blocks

    def _last_times(self, records: Sequence[Record], blocks: dict[tuple[str, str], list[int]],
                    batch: _Batch) -> None:
        """Each model's last event time in the batch (its ``ts``, else its Kafka timestamp)."""
        latest: dict[str, tuple[int, float]] = {}
        for (model, _), positions in blocks.items():
            for position in reversed(positions):
                record = records[position]
                ts = record.event.ts if record.event.ts is not None else record.timestamp
                if ts is not None:
                    if position > latest.get(model, (-1, 0.0))[0]:
                        latest[model] = (position, ts)
                    break
        batch.last_ts.update({model: ts for model, (_, ts) in latest.items()})

    def _route_block(self, records: Sequence[Record], version: _VersionState, positions: list[int],
                     batch: _Batch) -> None:
        """One (model, version)'s events of the batch, one column per signal.

        A signal not seen before, or a version with far more signals than its
        events carry, goes value by value: new signals must be made in event order.
        """
        model = version.model
        version.last_seen = self._events_seen + positions[-1]
        self._dirty.add((model, version.model_version))
        events = [records[position].event for position in positions]
        features = list(map(_FEATURES, events))
        carried = sum(map(len, features))
        by_feature = version.by_feature
        count = len(events)
        predictions = list(map(_PREDICTION, events))
        if (len(by_feature) * count > 4 * carried + 64 or
                (version.prediction is False and predictions.count(None) != count)):
            self._route_rows(records, positions, batch)
            return
        columns: list[tuple[str, _SignalState | None, list[Any]]] = []
        for name, state in by_feature.items():
            column = list(map(dict.get, features, repeat(name), repeat(_ABSENT)))
            present = count - column.count(_ABSENT)
            if present:
                columns.append((name, state, column))
                carried -= present
        if carried:  # a feature without a signal state yet
            self._route_rows(records, positions, batch)
            return
        where = np.array(positions, dtype=np.intp)
        for name, state, column in columns:
            if state is None:
                if not (version.unselected and "feature:" + name in version.unselected):
                    batch.count(batch.dropped, model, count - column.count(_ABSENT))
                continue
            new = self._route_column(version, state, column, positions, where, records, batch)
            if new is not state:
                by_feature[name] = new
        prediction = version.prediction
        if prediction is None:
            if "prediction" not in version.unselected:
                batch.count(batch.dropped, model, count - predictions.count(None))
        elif isinstance(prediction, _SignalState):
            new = self._route_column(version, prediction, predictions, positions, where, records, batch,
                                     absent_is_missing=False)
            if new is not prediction:
                version.prediction = new

    def _route_column(self, version: _VersionState, state: _SignalState, column: list[Any],
                      positions: list[int], where: np.ndarray, records: Sequence[Record], batch: _Batch,
                      absent_is_missing: bool = True) -> _SignalState | None:
        """Hand one signal's column to its state: whole when its values are all of the signal's kind.

        Missing values (None) are skipped and counted (a missing prediction is not
        counted); a value of the other kind goes through :meth:`_other_kind` in order.
        Returns the signal's state afterwards (a new one when the kind changed).
        """
        kinds = set(map(type, column))
        numeric = state.kind == "numeric"
        wanted = float if numeric else str
        if kinds == {wanted} and not state.values:
            values = column
            taken = where
        elif kinds <= {wanted, type(None), _Absent} and not state.values:
            types = np.array(list(map(type, column)), dtype=object)
            keep = types == wanted
            if absent_is_missing:
                batch.count(batch.missing, version.model, int(np.count_nonzero(types == type(None))))
            values = [value for value in column if value.__class__ is wanted]
            taken = where[keep]
            if not values:
                return state
        else:
            return self._route_values(version, state, column, positions, records, batch, absent_is_missing)
        state.values = np.fromiter(values, dtype=np.float64, count=len(values)) if numeric else values
        state.positions = taken
        batch.touched[id(state)] = state
        return state

    def _route_values(self, version: _VersionState, state: _SignalState, column: list[Any],
                      positions: list[int], records: Sequence[Record], batch: _Batch,
                      absent_is_missing: bool) -> _SignalState | None:
        """One signal's column value by value (the row path's rules for one signal)."""
        model = version.model
        for position, value in zip(positions, column):
            if value is _ABSENT or (value is None and not absent_is_missing):
                continue
            if value is None:
                batch.count(batch.missing, model, 1)
                continue
            if (state.kind == "numeric") is not isinstance(value, float):
                new = self._other_kind(version, state, value, position, records, batch.alerts, batch.touched)
                if new is None:
                    batch.count(batch.mismatched, model, 1)
                    continue
                state = new
            if isinstance(state.values, np.ndarray):
                state.values = state.values.tolist()
                state.positions = list(state.positions)
            state.values.append(value)
            state.positions.append(position)
            batch.touched[id(state)] = state
        return state

    def _route_rows(self, records: Sequence[Record], positions: Iterable[int], batch: _Batch) -> None:
        """Events value by value, in order, admitting new (model, version)s (the oracle path)."""
        versions = self._versions
        touched = batch.touched
        missing = batch.missing
        mismatched = batch.mismatched
        dropped = batch.dropped
        last_ts = batch.last_ts
        alerts = batch.alerts
        events_seen = self._events_seen
        for position in positions:
            record = records[position]
            event = record.event
            version = versions.get(state_key(event.model, event.model_version))
            if version is None:
                version = self._admit(event, events_seen + position)
                if version is None:
                    continue
            version.last_seen = events_seen + position
            self._dirty.add((event.model, event.model_version))
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
                    if not (version.unselected and "feature:" + name in version.unselected):
                        dropped[model] = dropped.get(model, 0) + 1
                    continue
                if value is None:
                    missing[model] = missing.get(model, 0) + 1
                    continue
                if (state.kind == "numeric") is not isinstance(value, float):
                    state = self._other_kind(version, state, value, position, records, alerts, touched)
                    if state is None:
                        mismatched[model] = mismatched.get(model, 0) + 1
                        continue
                    by_feature[name] = state
                state.values.append(value)
                state.positions.append(position)
                touched[id(state)] = state
            prediction = event.prediction
            if prediction is not None:
                state = version.prediction
                if state is False:
                    state = self._new_signal(version, "prediction", prediction)
                    version.prediction = state
                if isinstance(state, _SignalState) and (
                        (state.kind == "numeric") is not isinstance(prediction, float)):
                    state = self._other_kind(version, state, prediction, position, records, alerts,
                                             touched)
                    if state is None:
                        mismatched[model] = mismatched.get(model, 0) + 1
                        continue
                    version.prediction = state
                if state is None:
                    if "prediction" not in version.unselected:
                        dropped[model] = dropped.get(model, 0) + 1
                else:
                    state.values.append(prediction)
                    state.positions.append(position)
                    touched[id(state)] = state

    def feed_signal(self, model: str, model_version: str, signal: str,
                    values: Iterable[tuple[Any, Record]]) -> list[Alert]:
        """Feed values of a derived signal (e.g. ``performance:error_rate``) in order."""
        items = list(values)
        if not items:
            return []
        version = self._versions.get(state_key(model, model_version))
        if version is None:
            version = self._admit(items[0][1].event, self._events_seen)
            if version is None:
                return []
        state = version.signals.get(signal, False)
        if state is False:
            state = self._new_signal(version, signal, items[0][0])
            version.signals[signal] = state
        if state is None:
            if signal not in version.unselected:
                if self.skipped is not None:
                    self.skipped[(model, "signal_cap")] += len(items)
                if self._metrics:
                    self._metrics.signals_dropped.labels(model, "signal_cap").inc(len(items))
            return []
        self._dirty.add(state_key(model, model_version))
        records = [record for _, record in items]
        state.values.extend(value for value, _ in items)
        state.positions.extend(range(len(items)))
        alerts: list[tuple[int, str, str, Alert]] = []
        self._detect(state, records, alerts, derived=True)
        if self._stale_gauges and self._clock() - self._gauges_at >= self.gauge_interval_s:
            self.refresh_gauges()
        alerts.sort(key=lambda item: item[:3])
        return [alert for *_, alert in alerts]

    def _detect(self, state: _SignalState, records: Sequence[Record],
                out: list[tuple[int, str, str, Alert]], derived: bool = False) -> None:
        values: Any = (np.asarray(state.values, dtype=np.float64) if state.kind != "categorical"
                       else state.values)
        # one check of the column for all its detectors (a finite sum has finite terms only; one
        # that overflows leaves the check to each detector)
        finite = (state.kind != "categorical" and values.ndim == 1 and values.flags.c_contiguous
                  and math.isfinite(np.add.reduce(values)))
        positions = state.positions
        base = state.n_values
        metrics_on = bool(state.series)
        hold_s = self._settings.drift_active_hold_s
        trace = self.trace
        if trace is not None and len(positions):
            # a derived value (a joined label) reaches its detector at the current stream position
            where = (np.full(len(positions), self._events_seen, dtype=np.int64) if derived
                     else self._batch_start + np.asarray(positions, dtype=np.int64))
            model_version = records[int(positions[0])].event.model_version
        for index, detector in enumerate(state.detectors):
            if detector is None:
                continue
            try:
                if trace is None or not len(positions):
                    detections = list(detector.update_finite(values) if finite else detector.update(values))
                else:
                    detections = _traced_update(trace, (state.model, model_version, state.signal,
                                                        detector.name), detector, values, where, base)
            except Exception:  # noqa: BLE001 - one detector must never stop the others
                state.detectors[index] = None
                self._detector_failed(state.model, state.signal, detector.name)
                continue
            for detection in detections:
                position = int(positions[detection.index])
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
                if not record.silent:
                    out.append((position, state.signal, detector.name, alert))
                state.last_detection[index] = n_seen
                if metrics_on:
                    series = state.series[index]
                    series.detections += 1
                    series.active_until = self._clock() + hold_s
        if metrics_on:
            # the statistic and threshold gauges are read at the next refresh (refresh_gauges)
            self._stale_gauges[id(state)] = state
        state.n_values = base + len(positions)
        state.values = []
        state.positions = []


def _traced_update(trace: Trace, key: tuple[str, str, str, str], detector: detectors.Detector, values: Any,
                   where: np.ndarray, base: int) -> list[detectors.Detection]:
    """``detector.update(values)`` cut where the event index ``where`` crosses a multiple of
    ``trace.stride(key)``, sampling the statistic after each piece and at each detection.

    The detections are those of one update (the detector contract: any cut of
    a stream gives the same detections), with their indices into ``values``.
    """
    detections: list[detectors.Detection] = []
    count = len(values)
    start = 0
    while start < count:
        stride = max(1, trace.stride(key))
        # the piece ends before the first value in the next multiple of stride events
        stop = start + int(np.searchsorted(where[start:], (int(where[start]) // stride + 1) * stride))
        for detection in detector.update(values[start:stop]):
            detection = dataclasses.replace(detection, index=detection.index + start)
            detections.append(detection)
            trace.detected(key, int(where[detection.index]), detection.statistic, detection.threshold,
                           base + detection.index)
        trace.sample(key, int(where[stop - 1]), detector.statistic, detector.threshold)
        start = stop
    return detections


#: positions 0..n-1, shared by the blocks of a size (read-only)
_ARANGES: dict[int, np.ndarray] = {}


def _arange(count: int) -> np.ndarray:
    positions = _ARANGES.get(count)
    if positions is None:
        if len(_ARANGES) > 64:
            _ARANGES.clear()
        positions = _ARANGES[count] = np.arange(count, dtype=np.intp)
        positions.flags.writeable = False
    return positions


def _specs(rule: ModelRule, kind: str) -> list[detectors.DetectorSpec]:
    """The detector specs a rule runs on a signal of ``kind`` (its own, or the defaults)."""
    configured = rule.detectors.get(kind)  # type: ignore[call-overload]
    if configured:
        return [detectors.DetectorSpec(s.name, dict(s.params)) for s in configured]
    return detectors.default_specs(kind)


def _try_build(monitor: Monitor, rule: ModelRule, kind: str, spec: detectors.DetectorSpec,
               families: tuple[int, ...]) -> tuple[str, str] | None:
    """Build one spec as ``process`` would; ``(reference field or "", reason)`` if it fails."""
    signal = "performance:error_rate" if kind == "error" else "feature:"
    signals = [signal]
    if rule.reference.snapshot is not None:
        try:
            snapshot = monitor._load_snapshot(rule)
            signals.extend(str(name) for name in snapshot)
        except Exception as exc:  # noqa: BLE001 - any unreadable snapshot is a config problem
            return "snapshot", f"{type(exc).__name__}: {exc}"
    for family in families:
        try:
            detectors.build(spec, family_tests=family)
        except Exception as exc:  # noqa: BLE001
            return "", f"{exc} (family of {family} tests)"
        for name in signals:
            try:
                params = {**monitor._reference_params(rule, name, kind, spec.name), **spec.params}
                detectors.build(detectors.DetectorSpec(spec.name, params), family_tests=family)
            except Exception as exc:  # noqa: BLE001
                where = "snapshot" if name != signal else "warmup"
                return where, f"{spec.name}: {exc} (family of {family} tests)"
    return None


def _spec_digest(detector: detectors.Detector) -> str:
    """A short digest of a detector's effective parameters (a reference snapshot included).

    Saved with its state, so that a restore under changed settings starts the
    detector afresh instead of loading a state it was not built for.
    """
    params = orjson.dumps(dict(detector.spec().params),
                          option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(detector.name.encode() + b"\x1f" + params).hexdigest()[:24]


def _finite(value: float) -> float:
    """Alerts are JSON: an infinite statistic (a certain change) is written as a large number."""
    if math.isfinite(value):
        return float(value)
    return math.copysign(1e308, value)
