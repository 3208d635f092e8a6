"""Shared fixtures: a real Kafka broker and uniquely named topics per test.

The broker is ``KAFKA_BOOTSTRAP`` when set (``make test`` sets it after
starting the local broker); otherwise the session starts the local broker with
``deploy/local/kafka.py`` and stops it at the end.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _local_kafka_module():
    spec = importlib.util.spec_from_file_location(
        "local_kafka", REPO_ROOT / "deploy" / "local" / "kafka.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in item.nodeid.replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a ready broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    local_kafka = _local_kafka_module()
    port = int(os.environ.get("KAFKA_PORT", "9092"))
    layout = local_kafka.Layout(port)
    already_ours = local_kafka._read_pid(layout) is not None
    try:
        local_kafka.up(port)
    except SystemExit as exc:
        pytest.fail(f"could not start the local Kafka broker: {exc}")
    yield local_kafka.bootstrap(port)
    if not already_ours:
        local_kafka.down(port, quiet=True)


@pytest.fixture
def topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test; they are deleted afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:60]

    def create(suffix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"test.{stem}.{suffix}.{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            try:
                future.result(timeout=30)
            except Exception:  # noqa: BLE001 - deletion is clean-up only
                pass


@pytest.fixture
def group_id(request: pytest.FixtureRequest) -> str:
    """A consumer group id no other test uses."""
    return f"test-group-{request.node.name[:40]}-{uuid.uuid4().hex[:10]}"
