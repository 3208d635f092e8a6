"""The topics a config names, on a real cluster: check them, create the missing ones.

``stream-monitor topics create`` and ``check-config --connect`` judge the
topics as ``run`` does at start: the predictions, alerts and dead-letter
topics must exist; a missing labels topic turns performance monitoring off;
the labels topic must have the predictions topic's partition count; the state
topic (:func:`~stream_monitor.state.changelog.changelog_topic`, compacted, one
partition per input partition) is created by ``run`` when missing and refused
with another partition count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from stream_monitor.config import Settings
from stream_monitor.errors import ConfigError, StreamMonitorError
from stream_monitor.state.changelog import CHANGELOG_CONFIG, changelog_topic, cleanup_policy, partition_mismatch

__all__ = ["BrokerUnreachable", "TopicReport", "admin_client", "check_topics", "create_topics",
           "fetch_metadata", "named_topics"]

#: roles whose topic ``run`` cannot start without
_REQUIRED = ("predictions", "alerts", "dead_letter")


class BrokerUnreachable(StreamMonitorError):
    """No broker answered a metadata request in time."""


@dataclass(frozen=True)
class TopicReport:
    """What is (or would be) true of one topic the config names."""

    role: str
    topic: str
    #: exists | created | would create | missing | failed
    status: str
    partitions: int | None = None
    #: what else the operator should know (replication, compaction, what run does)
    note: str = ""
    #: True when ``run`` would refuse to start over this topic
    problem: bool = False
    #: True for a condition worth a warning that ``run`` accepts
    warning: bool = False

    def line(self) -> str:
        count = "" if self.partitions is None else \
            f", {self.partitions} partition{'s' if self.partitions != 1 else ''}"
        mark = "ERROR " if self.problem else "WARNING " if self.warning else ""
        note = f": {self.note}" if self.note else ""
        return f"{mark}{self.role} topic {self.topic}: {self.status}{count}{note}"


def named_topics(settings: Settings) -> list[tuple[str, str]]:
    """``(role, topic)`` of every topic the config names, inputs first, the state topic last."""
    topics = settings.topics
    named = [("predictions", topics.predictions)]
    if topics.labels:
        named.append(("labels", topics.labels))
    named += [("alerts", topics.alerts), ("dead_letter", topics.dead_letter), ("state", settings.state_topic)]
    return named


def admin_client(settings: Settings) -> tuple[AdminClient, list[KafkaError]]:
    """An admin client on the configured cluster (its own log lines off), and the list its
    client errors (connection refused, authentication failed...) are collected in."""
    errors: list[KafkaError] = []
    try:
        admin = AdminClient({**settings.kafka.client_properties(), "log_level": 0, "error_cb": errors.append})
    except KafkaException as exc:
        raise ConfigError([("kafka.properties", f"admin client: {exc.args[0].str()}")]) from None
    return admin, errors


def fetch_metadata(settings: Settings, admin: AdminClient, errors: list[KafkaError],
                   timeout_s: float) -> ClusterMetadata:
    """The cluster's topics; :class:`BrokerUnreachable` (one line, naming the address) on failure."""
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serves the client's error reports: they say why (refused, unresolvable...)
        reasons = [error.str() for error in errors if error.code() != KafkaError._ALL_BROKERS_DOWN]
        why = reasons[0] if reasons else exc.args[0].str()
        raise BrokerUnreachable(
            f"cannot reach the Kafka cluster at {settings.kafka.bootstrap_servers} "
            f"(kafka.bootstrap_servers) within {timeout_s:g} s: {why}") from None


def _partitions(metadata: ClusterMetadata, topic: str) -> int | None:
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return None
    return len(found.partitions)


def check_topics(settings: Settings, admin: AdminClient, metadata: ClusterMetadata,
                 timeout_s: float) -> list[TopicReport]:
    """Each named topic as ``run`` would find it at start; nothing is created."""
    reports = []
    inputs = _partitions(metadata, settings.topics.predictions)
    for role, topic in named_topics(settings):
        count = _partitions(metadata, topic)
        if role == "state":
            reports.append(_check_state(settings, admin, topic, count, inputs, timeout_s))
        elif count is None and role == "labels":
            reports.append(TopicReport(role, topic, "missing", note="run turns performance monitoring off "
                                       "(create the topic, or set topics.labels to null)", warning=True))
        elif count is None:
            reports.append(TopicReport(role, topic, "missing", problem=True,
                                       note="run refuses to start without it "
                                            "(create it: stream-monitor topics create)"))
        elif role == "labels" and inputs is not None and count != inputs:
            reports.append(_labels_mismatch(topic, count, inputs))
        else:
            reports.append(TopicReport(role, topic, "exists", count))
    return reports


def _labels_mismatch(topic: str, count: int, inputs: int) -> TopicReport:
    return TopicReport("labels", topic, "exists", count, problem=True,
                       note=f"the predictions topic has {inputs}: run refuses to start, labels "
                            f"must be co-partitioned with their predictions")


def _check_state(settings: Settings, admin: AdminClient, topic: str, count: int | None,
                 inputs: int | None, timeout_s: float) -> TopicReport:
    if count is None:
        size = f"{inputs} partitions" if inputs is not None else "the predictions topic's partition count"
        return TopicReport("state", topic, "missing", note=f"run creates it at start (compacted, {size})")
    mismatch = partition_mismatch(settings, count, inputs) if inputs is not None else None
    if mismatch:
        return TopicReport("state", topic, "exists", count, note=f"run refuses to start: {mismatch}",
                           problem=True)
    return _compaction(admin, TopicReport("state", topic, "exists", count), timeout_s)


def _compaction(admin: AdminClient, report: TopicReport, timeout_s: float) -> TopicReport:
    policy = cleanup_policy(admin, report.topic, timeout_s)
    if policy is None:
        return report
    if "compact" not in policy:
        return TopicReport(report.role, report.topic, report.status, report.partitions, warning=True,
                           note=f"cleanup.policy={policy}: not compacted, the state grows without bound "
                                f"and restores slow down (set cleanup.policy=compact)")
    return TopicReport(report.role, report.topic, report.status, report.partitions,
                       note=f"cleanup.policy={policy}")


def create_topics(settings: Settings, admin: AdminClient, metadata: ClusterMetadata, *,
                  partitions: int | None = None, replication_factor: int | None = None,
                  dry_run: bool = False, timeout_s: float = 30.0) -> list[TopicReport]:
    """Create the named topics that are missing; report every one.

    ``partitions`` / ``replication_factor`` None: the broker's defaults. The
    labels and state topics always get the predictions topic's partition count
    (the join and the state are per input partition); the state topic's
    replication factor is ``state.replication_factor`` unless given.
    """
    named = named_topics(settings)
    reports: dict[str, TopicReport] = {}
    predictions = settings.topics.predictions
    inputs = _partitions(metadata, predictions)
    if inputs is None:
        reports["predictions"] = _create(admin, NewTopic(predictions, partitions or -1, replication_factor or -1),
                                         "predictions", dry_run, timeout_s)
        inputs = reports["predictions"].partitions
    else:
        reports["predictions"] = TopicReport("predictions", predictions, "exists", inputs)
    same = inputs if inputs is not None else -1  # dry run, broker default: unknown yet
    for role, topic in named[1:]:
        count = _partitions(metadata, topic)
        if count is None and role in ("labels", "state") and inputs is None and not dry_run:
            reports[role] = TopicReport(role, topic, "missing", problem=True,
                                        note="not created: it takes the predictions topic's partition "
                                             "count, and that topic is not there")
        elif count is not None and role == "state":
            reports[role] = _check_state(settings, admin, topic, count, inputs, timeout_s)
        elif count is not None and role == "labels" and inputs is not None and count != inputs:
            reports[role] = _labels_mismatch(topic, count, inputs)
        elif count is not None:
            reports[role] = TopicReport(role, topic, "exists", count)
        elif role == "state":
            reports[role] = _create(admin, changelog_topic(settings, same, replication_factor), role, dry_run,
                                    timeout_s)
        else:
            size = same if role == "labels" else partitions or -1
            reports[role] = _create(admin, NewTopic(topic, size, replication_factor or -1), role, dry_run,
                                    timeout_s)
    return [reports[role] for role, _ in named]


def _create(admin: AdminClient, new: NewTopic, role: str, dry_run: bool, timeout_s: float) -> TopicReport:
    count = new.num_partitions if new.num_partitions > 0 else None
    if dry_run:
        return TopicReport(role, new.topic, "would create", count, note=_describe(new, role))
    future = admin.create_topics([new], operation_timeout=timeout_s, request_timeout=timeout_s)[new.topic]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # else: made meanwhile, by someone else
            return TopicReport(role, new.topic, "failed", problem=True, note=f"{error.name()}: {error.str()}")
        return TopicReport(role, new.topic, "exists", _wait_for_topic(admin, new.topic, timeout_s)[0])
    found, replicas = _wait_for_topic(admin, new.topic, timeout_s)
    return TopicReport(role, new.topic, "created", found,
                       note=_describe(new, role, replicas))


def _describe(new: NewTopic, role: str, replicas: int | None = None) -> str:
    """Replication and topic configs of a topic to create (or created, with its replica count)."""
    if replicas is not None:
        parts = [f"replication factor {replicas}"]
    elif new.replication_factor > 0:
        parts = [f"replication factor {new.replication_factor}"]
    else:
        parts = ["the broker's default replication factor"]
    if new.num_partitions <= 0 and replicas is None:
        parts.insert(0, "the broker's default partition count" if role not in ("labels", "state")
                     else "the predictions topic's partition count")
    config: dict[str, Any] = dict(new.config or {})
    if config == CHANGELOG_CONFIG:
        parts.append("cleanup.policy=compact")
    else:
        parts += [f"{key}={value}" for key, value in sorted(config.items())]
    return ", ".join(parts)


def _wait_for_topic(admin: AdminClient, topic: str, timeout_s: float) -> tuple[int | None, int | None]:
    """``(partitions, replicas)`` of a topic once its metadata shows every partition led (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if (found is not None and found.error is None and found.partitions
                and all(p.leader >= 0 and p.error is None for p in found.partitions.values())):
            return len(found.partitions), min(len(p.replicas) for p in found.partitions.values())
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.2)
