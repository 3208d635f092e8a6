"""`topics create` and `check-config --connect` against the real broker."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from stream_monitor.cli import main

from .faults import create_topics, delete_topics
from .service_harness import write_config


@pytest.fixture
def names(kafka_bootstrap, group_id):
    """Topic names no other test uses (none exists yet); every one is deleted afterwards."""
    stem = f"test.topics.{uuid.uuid4().hex[:10]}"
    named = {"predictions": f"{stem}.predictions", "labels": f"{stem}.labels", "alerts": f"{stem}.alerts",
             "dead_letter": f"{stem}.dead-letter", "state": f"{group_id}.state"}
    yield named
    delete_topics(kafka_bootstrap, named.values())


def _config(tmp_path: Path, bootstrap: str, group_id: str, names: dict[str, str], labels: bool = True) -> Path:
    topics = {**names, "labels": names["labels"] if labels else None}
    return write_config(tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml", bootstrap, group_id, topics)


def _described(bootstrap: str, names: dict[str, str]) -> dict[str, int | None]:
    """Partition count of each role's topic (None: missing)."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    found = {}
    for role, topic in names.items():
        meta = metadata.topics.get(topic)
        found[role] = None if meta is None or meta.error is not None else len(meta.partitions)
    return found


def _cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(30)["cleanup.policy"].value


def _main(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def test_topics_create_makes_every_named_topic_once_and_run_starts_on_them(
        kafka_bootstrap, group_id, names, tmp_path, capsys):
    config = _config(tmp_path, kafka_bootstrap, group_id, names)
    code, out, _ = _main(capsys, "topics", "create", "--config", str(config), "--partitions", "3",
                         "--replication-factor", "1")
    assert code == 0, out
    assert out == [
        f"connected to {kafka_bootstrap}: 1 broker(s)",
        f"predictions topic {names['predictions']}: created, 3 partitions: replication factor 1",
        f"labels topic {names['labels']}: created, 3 partitions: replication factor 1",
        f"alerts topic {names['alerts']}: created, 3 partitions: replication factor 1",
        f"dead_letter topic {names['dead_letter']}: created, 3 partitions: replication factor 1",
        f"state topic {names['state']}: created, 3 partitions: replication factor 1, cleanup.policy=compact",
    ]
    assert _described(kafka_bootstrap, names) == dict.fromkeys(names, 3)
    assert _cleanup_policy(kafka_bootstrap, names["state"]) == "compact"

    # a second run changes nothing and is no error
    code, out, _ = _main(capsys, "topics", "create", "--config", str(config), "--partitions", "5")
    assert code == 0, out
    assert out[1:] == [
        f"predictions topic {names['predictions']}: exists, 3 partitions",
        f"labels topic {names['labels']}: exists, 3 partitions",
        f"alerts topic {names['alerts']}: exists, 3 partitions",
        f"dead_letter topic {names['dead_letter']}: exists, 3 partitions",
        f"state topic {names['state']}: exists, 3 partitions: cleanup.policy=compact",
    ]
    assert _described(kafka_bootstrap, names) == dict.fromkeys(names, 3)

    # what topics create made, check-config --connect accepts and run runs on
    code, _, err = _main(capsys, "check-config", "--config", str(config), "--connect")
    assert code == 0, err
    assert f"predictions topic {names['predictions']}: exists, 3 partitions" in err
    run = subprocess.run([sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config),
                          "--exit-when-idle", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "labels topic not found" not in run.stderr


def test_an_existing_predictions_topic_sets_the_partitions_of_the_labels_and_state_topics(
        kafka_bootstrap, group_id, names, tmp_path, capsys):
    create_topics(kafka_bootstrap, [names["predictions"]], partitions=2)
    config = _config(tmp_path, kafka_bootstrap, group_id, names)
    code, out, _ = _main(capsys, "topics", "create", "--config", str(config), "--partitions", "4")
    assert code == 0, out
    assert out[1] == f"predictions topic {names['predictions']}: exists, 2 partitions"
    assert _described(kafka_bootstrap, names) == {"predictions": 2, "labels": 2, "alerts": 4,
                                                  "dead_letter": 4, "state": 2}


def test_dry_run_creates_nothing_and_says_what_it_would(kafka_bootstrap, group_id, names, tmp_path, capsys):
    config = _config(tmp_path, kafka_bootstrap, group_id, names, labels=False)
    code, out, _ = _main(capsys, "topics", "create", "--config", str(config), "--partitions", "2", "--dry-run")
    assert code == 0, out
    assert out[1:] == [
        f"predictions topic {names['predictions']}: would create, 2 partitions: the broker's default "
        f"replication factor",
        f"alerts topic {names['alerts']}: would create, 2 partitions: the broker's default replication factor",
        f"dead_letter topic {names['dead_letter']}: would create, 2 partitions: the broker's default "
        f"replication factor",
        f"state topic {names['state']}: would create, 2 partitions: the broker's default replication "
        f"factor, cleanup.policy=compact",
    ]
    assert set(_described(kafka_bootstrap, names).values()) == {None}


def test_a_topic_the_cluster_refuses_is_one_error_line_and_exit_1(kafka_bootstrap, group_id, names, tmp_path,
                                                                  capsys):
    config = _config(tmp_path, kafka_bootstrap, group_id, names, labels=False)
    code, out, _ = _main(capsys, "topics", "create", "--config", str(config), "--replication-factor", "3")
    assert code == 1
    assert out[1].startswith(f"ERROR predictions topic {names['predictions']}: failed: "
                             f"INVALID_REPLICATION_FACTOR: ")
    assert out[-1] == "4 topic problem(s): 'run' would not start"
    assert set(_described(kafka_bootstrap, names).values()) == {None}


@pytest.mark.parametrize("command", [["topics", "create"], ["check-config", "--connect"]])
def test_an_unreachable_cluster_is_one_line_and_exit_1(tmp_path, command):
    config = tmp_path / "config.yaml"
    config.write_text("kafka: {bootstrap_servers: 127.0.0.1:1}\n")
    done = subprocess.run([sys.executable, "-m", "stream_monitor.cli", *command, "--config", str(config),
                           "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line != "config OK"]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("stream-monitor: cannot reach the Kafka cluster at 127.0.0.1:1 "
                               "(kafka.bootstrap_servers) within 2 s: 127.0.0.1:1/bootstrap: Connect to "
                               "ipv4#127.0.0.1:1 failed: Connection refused"), lines
    assert "connected" not in done.stdout


def test_check_connect_reports_partitions_and_fails_on_a_missing_input_topic(
        kafka_bootstrap, group_id, names, tmp_path, capsys):
    config = _config(tmp_path, kafka_bootstrap, group_id, names)
    code, _, err = _main(capsys, "check-config", "--config", str(config), "--connect")
    assert code == 1
    assert err[2:] == [
        f"ERROR predictions topic {names['predictions']}: missing: run refuses to start without it "
        f"(create it: stream-monitor topics create)",
        f"WARNING labels topic {names['labels']}: missing: run turns performance monitoring off (create "
        f"the topic, or set topics.labels to null)",
        f"ERROR alerts topic {names['alerts']}: missing: run refuses to start without it (create it: "
        f"stream-monitor topics create)",
        f"ERROR dead_letter topic {names['dead_letter']}: missing: run refuses to start without it (create "
        f"it: stream-monitor topics create)",
        f"state topic {names['state']}: missing: run creates it at start (compacted, the predictions "
        f"topic's partition count)",
        "3 topic problem(s): 'run' would not start",
    ]
    # the outputs and predictions there, labels not: what run accepts (with its warning) passes
    create_topics(kafka_bootstrap, [names["predictions"], names["alerts"], names["dead_letter"]], partitions=2)
    code, _, err = _main(capsys, "check-config", "--config", str(config), "--connect")
    assert code == 0, err
    assert err[2:] == [
        f"predictions topic {names['predictions']}: exists, 2 partitions",
        f"WARNING labels topic {names['labels']}: missing: run turns performance monitoring off (create "
        f"the topic, or set topics.labels to null)",
        f"alerts topic {names['alerts']}: exists, 2 partitions",
        f"dead_letter topic {names['dead_letter']}: exists, 2 partitions",
        f"state topic {names['state']}: missing: run creates it at start (compacted, 2 partitions)",
    ]


def test_topics_run_would_refuse_are_errors_and_an_uncompacted_state_topic_a_warning(
        kafka_bootstrap, group_id, names, tmp_path, capsys):
    create_topics(kafka_bootstrap, [names["predictions"], names["alerts"], names["dead_letter"]], partitions=2)
    create_topics(kafka_bootstrap, [names["labels"], names["state"]], partitions=1)
    config = _config(tmp_path, kafka_bootstrap, group_id, names)
    state_mismatch = (f"ERROR state topic {names['state']}: exists, 1 partition: run refuses to start: state "
                      f"topic '{names['state']}' has 1 partitions, the predictions topic 2: partition i of "
                      f"the state holds input partition i, so they must be equal (delete the state topic, "
                      f"or set state.topic to a new name)")
    labels_mismatch = (f"ERROR labels topic {names['labels']}: exists, 1 partition: the predictions topic "
                       f"has 2: run refuses to start, labels must be co-partitioned with their predictions")
    for command in (["check-config", "--connect"], ["topics", "create"]):
        code, out, err = _main(capsys, *command, "--config", str(config))
        lines = out if command[0] == "topics" else err
        assert code == 1, lines
        assert lines[-6:] == [f"predictions topic {names['predictions']}: exists, 2 partitions", labels_mismatch,
                              f"alerts topic {names['alerts']}: exists, 2 partitions",
                              f"dead_letter topic {names['dead_letter']}: exists, 2 partitions", state_mismatch,
                              "2 topic problem(s): 'run' would not start"]

    # run refuses the same: without labels, on the state topic's partition count
    no_labels = _config(tmp_path, kafka_bootstrap, group_id, names, labels=False)
    code, _, err = _main(capsys, "check-config", "--config", str(no_labels), "--connect")
    assert (code, err[-2:]) == (1, [state_mismatch, "1 topic problem(s): 'run' would not start"])
    run = subprocess.run([sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(no_labels),
                          "--exit-when-idle", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert state_mismatch.split("run refuses to start: ")[1] in run.stderr

    # a state topic of the right size that is not compacted: run starts (and warns), so no error
    other = _config(tmp_path, kafka_bootstrap, group_id, names, labels=False)
    other.write_text(other.read_text() + f"state: {{topic: {names['predictions']}.state-delete}}\n")
    create_topics(kafka_bootstrap, [f"{names['predictions']}.state-delete"], partitions=2)
    try:
        code, _, err = _main(capsys, "check-config", "--config", str(other), "--connect")
        assert code == 0, err
        assert err[-1] == (f"WARNING state topic {names['predictions']}.state-delete: exists, 2 partitions: "
                           f"cleanup.policy=delete: not compacted, the state grows without bound and restores "
                           f"slow down (set cleanup.policy=compact)")
    finally:
        delete_topics(kafka_bootstrap, [f"{names['predictions']}.state-delete"])
