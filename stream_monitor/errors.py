"""One error hierarchy for the service.

An error that concerns one input message keeps the raw bytes, so whoever
catches it can dead-letter the original message unchanged.
"""

from __future__ import annotations


class StreamMonitorError(Exception):
    """Base of every error the service raises on purpose."""


class ConfigError(StreamMonitorError):
    """The configuration is invalid; ``problems`` lists ``(field, reason)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {field}: {reason}" for field, reason in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class BadMessage(StreamMonitorError):
    """An input message that cannot be used; it goes to the dead-letter topic.

    ``reason`` is a short, bounded label (it becomes a metric label value);
    ``detail`` says what exactly is wrong; ``raw`` is the original value.
    """

    __slots__ = ("reason", "detail", "raw")

    def __init__(self, reason: str, detail: str, raw: bytes | None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw


class DeliveryError(StreamMonitorError):
    """Kafka did not accept messages we must not lose (alerts, dead letters)."""
