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
    """Mark the broker tests; leave the long chaos runs out unless ``-m`` names them."""
    chaos_asked = "chaos" in (config.option.markexpr or "")
    kept, chaos = [], []
    for item in items:
        node = item.nodeid.replace(os.sep, "/")
        if "tests/integration/" in node or "tests/chaos/" in node:
            item.add_marker(pytest.mark.integration)
        if "tests/chaos/" in node:
            item.add_marker(pytest.mark.chaos)
        (kept if chaos_asked or item.get_closest_marker("chaos") is None else chaos).append(item)
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = kept


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


@pytest.fixture
def state_topics(kafka_bootstrap: str, group_id: str) -> Iterator[list[str]]:
    """Changelog topics the monitor creates for ``group_id`` (the default one listed); deleted afterwards."""
    from tests.integration.faults import delete_topics, state_topic_of

    names = [state_topic_of(group_id)]
    yield names
    delete_topics(kafka_bootstrap, names)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[object]:
    """A broker of the test's own (data under tmp_path), for tests that bounce it."""
    from tests.integration.faults import PrivateBroker

    broker = PrivateBroker(tmp_path / "broker")
    broker.up()
    yield broker
    broker.down()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The table of every fault run judged in the session (tests/integration/faults.py), both modes."""
    from tests.integration.faults import RESULTS, table

    if RESULTS:
        terminalreporter.section("fault runs: alerts vs replay, dead letters vs the bad input")
        rows = sorted(RESULTS, key=lambda row: (row["fault"], row["delivery"]))
        for line in table(rows).splitlines():
            terminalreporter.write_line(line)
