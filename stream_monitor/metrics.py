"""Prometheus metrics and the HTTP endpoint (``/metrics``, ``/healthz``, ``/readyz``).

All names carry the ``stream_monitor_`` prefix and base units. Label values
are bounded: topics and partitions are the deployment's, reject reasons are
the fixed set in :data:`stream_monitor.events.REJECT_REASONS`, and models and
signals are capped by ``limits.max_models`` and ``limits.max_signals_per_model``.

The registry is injected so that tests build a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

import errno
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_monitor import __version__
from stream_monitor.errors import StreamMonitorError

__all__ = ["Health", "Metrics", "MetricsServer"]

_SIGNAL_LABELS = ("model", "model_version", "signal", "detector", "severity")


class DetectorRecord:
    """What the four per-detector series show for one detector, set by the monitor."""

    __slots__ = ("statistic", "threshold", "detections", "active_until")

    def __init__(self) -> None:
        self.statistic = 0.0
        self.threshold = 0.0
        self.detections = 0
        #: drift_active is 1 while the clock is before this
        self.active_until = -math.inf


class DetectorSeries(Collector):
    """The series of every detector, from one small record each, made at scrape time.

    ``stream_monitor_detector_statistic``, ``_detector_threshold``,
    ``_drift_detections_total`` and ``_drift_active``, labelled by
    :data:`_SIGNAL_LABELS`. A labelled prometheus_client child costs about
    1 KiB, so four per detector made 10k signals cost about 110 MiB; a
    record costs a tenth of that (``bench/memory.py``). ``drift_active`` is
    worked out from ``clock`` at each scrape, so a hold ends even when the
    signal gets no more values.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._records: dict[tuple[str, ...], DetectorRecord] = {}
        self.clock: Callable[[], float] = time.monotonic
        if registry is not None:
            registry.register(self)

    def record(self, *labels: str) -> DetectorRecord:
        """The record of a detector (made at the first call)."""
        found = self._records.get(labels)
        if found is None:
            found = self._records[labels] = DetectorRecord()
        return found

    def remove(self, *labels: str) -> None:
        self._records.pop(labels, None)

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(name, text, labels=_SIGNAL_LABELS) for name, text in _DETECTOR_GAUGES] + [
            CounterMetricFamily(_DETECTIONS[0], _DETECTIONS[1], labels=_SIGNAL_LABELS)]

    def collect(self) -> Iterator[Metric]:
        # a copy in one C call under the GIL: the consumer thread may add or drop records meanwhile
        records = list(self._records.items())
        now = self.clock()
        families = [GaugeMetricFamily(name, text, labels=_SIGNAL_LABELS) for name, text in _DETECTOR_GAUGES]
        statistic, threshold, active = families
        detections = CounterMetricFamily(_DETECTIONS[0], _DETECTIONS[1], labels=_SIGNAL_LABELS)
        for labels, record in records:
            statistic.add_metric(labels, record.statistic)
            threshold.add_metric(labels, record.threshold)
            active.add_metric(labels, 1.0 if now < record.active_until else 0.0)
            detections.add_metric(labels, record.detections)
        yield from families
        yield detections


_DETECTOR_GAUGES = (
    ("stream_monitor_detector_statistic", "Current value of a detector's test statistic."),
    ("stream_monitor_detector_threshold", "Value a detector's statistic must cross to signal drift."),
    ("stream_monitor_drift_active",
     "1 for drift_active_hold_s seconds (default 600) after the detector's last detection on "
     "the signal, so that scrapes see it at any event rate; a restart starts at 0."),
)
_DETECTIONS = ("stream_monitor_drift_detections", "Drift detections (one alert each).")
_COMPARE_LABELS = ("model", "model_version", "baseline_version", "signal")


class Metrics:
    """Every metric the service exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.build_info = Info("stream_monitor_build", "Version of the running stream-monitor.",
                               registry=registry)
        self.build_info.info({"version": __version__})
        self.events_consumed = Counter(
            "stream_monitor_events_consumed_total", "Messages read from an input topic.",
            ("topic",), registry=registry)
        self.events_rejected = Counter(
            "stream_monitor_events_rejected_total",
            "Input messages sent to the dead-letter topic, by reason.", ("topic", "reason"),
            registry=registry)
        self.values_skipped = Counter(
            "stream_monitor_values_skipped_total",
            "Signal values not fed to detectors, by reason: missing (null), kind_mismatch (a string "
            "for a numeric signal or a number for a categorical one).",
            ("model", "reason"), registry=registry)
        self.signals_dropped = Counter(
            "stream_monitor_signals_dropped_total",
            "Values of signals not monitored, by reason: signal_cap (the model version reached "
            "limits.max_signals_per_model).", ("model", "reason"), registry=registry)
        self.models_dropped = Counter(
            "stream_monitor_models_dropped_total",
            "Events of models not monitored, by reason: model_cap (limits.max_models reached and "
            "no model idle for limits.model_min_idle_events).", ("reason",), registry=registry)
        self.signals_active = Gauge(
            "stream_monitor_signals", "Signals monitored per model.", ("model",), registry=registry)
        #: per detector: statistic, threshold, detections, drift_active (one record each, read at scrape)
        self.detectors = DetectorSeries(registry)
        self.alerts_produced = Counter(
            "stream_monitor_alerts_produced_total", "Alerts delivered to the alerts topic.",
            registry=registry)
        self.processing_seconds = Histogram(
            "stream_monitor_batch_processing_seconds",
            "Time to decode, route and detect one consumed batch.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry)
        self.batch_size = Histogram(
            "stream_monitor_batch_size_messages", "Messages per consumed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000), registry=registry)
        self.consumer_lag = Gauge(
            "stream_monitor_consumer_lag_messages",
            "Messages between the consumer's stored offset and the partition's high watermark.",
            ("topic", "partition"), registry=registry)
        self.last_event_timestamp = Gauge(
            "stream_monitor_last_event_timestamp_seconds",
            "Event time of the last event processed, per model.", ("model",), registry=registry)
        self.labels_total = Counter(
            "stream_monitor_labels_total",
            "Labels by outcome of the join: joined, duplicate, late (prediction expired), "
            "unmatched (no prediction came), invalid (cannot be scored).", ("model", "outcome"),
            registry=registry)
        self.predictions_expired = Counter(
            "stream_monitor_predictions_expired_total",
            "Predictions that left the join without a label (retention reached).", ("model",),
            registry=registry)
        self.label_delay_seconds = Histogram(
            "stream_monitor_label_delay_seconds",
            "Event time from a prediction to its label, for joined pairs.",
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600),
            registry=registry)
        self.model_performance = Gauge(
            "stream_monitor_model_performance",
            "Mean of a performance signal over the last 1000 joined labels "
            "(error rate for performance:error_rate, mean absolute error for performance:abs_error).",
            ("model", "model_version", "signal"), registry=registry)
        self.join_waiting = Gauge(
            "stream_monitor_join_waiting",
            "Entries waiting in the label join: predictions without label, labels queued.",
            ("kind",), registry=registry)
        self.produce_failures = Counter(
            "stream_monitor_produce_failures_total",
            "Alerts or dead letters Kafka refused for good (e.g. too large, not authorised).",
            ("kind", "code"), registry=registry)
        self.kafka_errors = Counter(
            "stream_monitor_kafka_errors_total", "Errors reported by the Kafka client, by code.",
            ("code",), registry=registry)
        # -- monitor: kinds, caps and detector isolation (issue 9) --
        self.keys_evicted = Counter(
            "stream_monitor_keys_evicted_total",
            "Least recently seen keys evicted to make room, by kind: model (limits.max_models) or "
            "version (limits.max_versions_per_model).", ("kind",), registry=registry)
        self.schema_changes = Counter(
            "stream_monitor_schema_changes_total",
            "A signal's values changed kind mid-stream (numbers after strings, or a long run of "
            "strings on a numeric signal).", ("model", "signal"), registry=registry)
        self.detector_errors = Counter(
            "stream_monitor_detector_errors_total",
            "A detector raised; it was disabled for that signal and the others kept going.",
            ("model", "detector"), registry=registry)
        # -- label join and input contract (issue 9: clamped times, unknown fields, join bound)
        self.event_time_clamped = Counter(
            "stream_monitor_event_time_clamped_total",
            "Events whose ts was more than limits.max_event_time_skew_s ahead of the Kafka message "
            "time (or of the stream's clock) and was replaced by it.",
            ("topic_kind",), registry=registry)
        self.unknown_fields = Counter(
            "stream_monitor_unknown_fields_total",
            "Events carrying top-level fields the input contract does not know (processed; with "
            "input.strict they are dead-lettered as unknown_field instead).",
            ("topic_kind",), registry=registry)
        self.join_dropped = Counter(
            "stream_monitor_join_dropped_total",
            "Waiting predictions the label join gave up early (reason global_bound: more than "
            "labels.max_waiting_predictions over all models; also counted as expired for their model).",
            ("reason",), registry=registry)
        self.state_restore_seconds = Histogram(
            "stream_monitor_state_restore_seconds",
            "Time to restore one input partition's state from the changelog on assignment.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=registry)
        self.state_restores = Counter(
            "stream_monitor_state_restores_total",
            "Partition restores on assignment by outcome: restored (from a snapshot), fresh (no "
            "state on the changelog: a first start), failed (a state that could not be read; the "
            "partition started afresh, see the log).",
            ("outcome",), registry=registry)
        self.transaction_rolled_back = Counter(
            "stream_monitor_transaction_rolled_back_messages_total",
            "delivery exactly_once: input messages whose output an aborted transaction rolled back; "
            "they are read again, so events_consumed_total counts them twice.",
            ("topic",), registry=registry)
        self.state_replayed = Counter(
            "stream_monitor_state_replayed_messages_total",
            "Input messages re-read after a restore to bring the state up to the committed offset "
            "(they update the detectors; their alerts went out before and are not repeated).",
            ("topic",), registry=registry)
        self.changelog_bytes = Counter(
            "stream_monitor_state_changelog_bytes_total",
            "Bytes of state records (keys and values) produced to the changelog topic.",
            registry=registry)
        self.transactions = Counter(
            "stream_monitor_transactions_total",
            "delivery exactly_once: transactions by outcome (committed; aborted: an abortable error, "
            "the owned partitions went back to their last committed state; failed: fenced or fatal, "
            "the service stopped with exit 1).",
            ("outcome",), registry=registry)
        self.state_keys = Gauge(
            "stream_monitor_state_keys",
            "State keys (model versions and label-join models) held for an input partition.",
            ("partition",), registry=registry)
        # -- version comparison (issue 14): candidate against baseline, per signal
        self.compare_log_e = Gauge(
            "stream_monitor_version_compare_log_e",
            "Log of the e-value of a candidate version against its baseline on one signal (the "
            "evidence that the version a value came from depends on the value); it keeps its value "
            "at an alert (the pair then stops comparing). Versions per model are capped by limits.max_versions_per_model.",
            _COMPARE_LABELS, registry=registry)
        self.compare_threshold = Gauge(
            "stream_monitor_version_compare_threshold",
            "log(1/alpha) of a version comparison: log_e at or above it raises a comparison alert.",
            _COMPARE_LABELS, registry=registry)
        self.compare_differs = Gauge(
            "stream_monitor_version_compare_differs",
            "1 once a candidate version (model_version) was found to differ from baseline_version on "
            "the signal (one alert per pair; it stays 1 while both versions are live); severity "
            "critical when the candidate is worse on a performance signal.",
            (*_COMPARE_LABELS, "severity"), registry=registry)
        self.compare_detections = Counter(
            "stream_monitor_version_compare_detections_total",
            "Version comparison alerts: the candidate (model_version) differs from baseline_version "
            "on the signal; severity critical when it is worse on a performance signal.",
            (*_COMPARE_LABELS, "severity"), registry=registry)
        self.state_snapshot_timestamp = Gauge(
            "stream_monitor_state_last_snapshot_timestamp_seconds",
            "Wall-clock time of the last complete snapshot of an input partition's state; "
            "time() minus this is the snapshot's age.",
            ("partition",), registry=registry)


class Health:
    """Liveness and readiness, updated by the consumer loop, read by the HTTP server."""

    def __init__(self, stale_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._last_beat = clock()
        self._ready = False
        self._ready_reason = "starting"
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def set_ready(self, ready: bool, reason: str) -> None:
        with self._lock:
            self._ready, self._ready_reason = ready, reason

    def alive(self) -> tuple[bool, str]:
        with self._lock:
            age = self._clock() - self._last_beat
        if age > self._stale_after_s:
            return False, f"consumer loop silent for {age:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._ready_reason


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Scrapes every few seconds would flood the log; stay silent."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _bind_error(host: str, port: int, exc: OSError) -> str:
    """One line on why the metrics port cannot be served, naming the settings that move it."""
    moves = "set metrics.port (or STREAM_MONITOR_METRICS__PORT; 0 picks a free port)"
    if exc.errno == errno.EADDRINUSE:
        return f"metrics port {host}:{port} is already in use: {moves}"
    if exc.errno == errno.EACCES:
        return f"metrics port {host}:{port} needs privileges: {moves}"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): set metrics.host " \
               f"(or STREAM_MONITOR_METRICS__HOST)"
    return f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; {moves}"


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on one port, in a thread."""

    def __init__(self, registry: CollectorRegistry, health: Health, host: str, port: int) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ, start_response):  # type: ignore[no-untyped-def]
            path = environ.get("PATH_INFO", "/")
            if path in ("/healthz", "/readyz"):
                ok, reason = health.alive() if path == "/healthz" else health.ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [f"{reason}\n".encode()]
            if path == "/metrics" or path == "/":
                return metrics_app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics, /healthz or /readyz\n"]

        try:
            self._server = make_server(host, port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
        except OSError as exc:
            raise StreamMonitorError(_bind_error(host, port, exc)) from None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
