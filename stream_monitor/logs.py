"""Structured logs: one JSON object per line on stderr.

Fields beyond the message go in ``extra={...}``; secrets never do (the
settings are logged only through :meth:`Settings.redacted`).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RateLimitedLog:
    """Log a repeating condition on its 1st, 10th, 100th, ... occurrence per key.

    Counting occurrences (not the wall clock) keeps the log bounded and deterministic.

    >>> limited = RateLimitedLog(logging.getLogger("doctest"))
    >>> [limited.log(("k",), "again") for _ in range(12)].count(True)
    2
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: Counter[tuple[str, ...]] = Counter()

    def log(self, key: tuple[str, ...], message: str, *, level: int = logging.WARNING,
            exc_info: bool = False, **extra: Any) -> bool:
        """Count one occurrence of ``key``; log it when due. True when it was logged."""
        self._seen[key] += 1
        count = self._seen[key]
        if count != 10 ** (len(str(count)) - 1):
            return False
        self._logger.log(level, f"{message} (occurrence {count}; logged at 1, 10, 100, ...)",
                         exc_info=exc_info, extra={"occurrences": count, **extra})
        return True

    def forget(self, stale: Callable[[tuple[str, ...]], bool]) -> None:
        """Drop the counts of the keys ``stale`` picks (e.g. those of an evicted model)."""
        for key in [key for key in self._seen if stale(key)]:
            del self._seen[key]


#: the logger librdkafka's own lines go through (set as each client's ``logger`` property)
KAFKA_LOGGER = "stream_monitor.librdkafka"
_DIGITS = str.maketrans("", "", "0123456789")


class _LibrdkafkaLines(logging.Filter):
    """Turns confluent-kafka's ``('%s [%s] %s', facility, client, text)`` into one of our lines.

    The facility and client become fields; a line repeating with only its
    numbers changed (a broker that stays down is reported on every retry) is
    logged at its 1st, 10th, 100th, ... occurrence, with the count.
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: Counter[tuple[int, str, str]] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 3 and record.msg == "%s [%s] %s":
            facility, client, text = (str(arg) for arg in args)
            key = (record.levelno, facility, text.translate(_DIGITS))
            self._seen[key] += 1
            count = self._seen[key]
            if count != 10 ** (len(str(count)) - 1):
                return False
            record.msg, record.args = text, ()
            record.facility, record.client = facility, client
            if count > 1:
                record.occurrences = count
        return True


def kafka_logger() -> logging.Logger:
    """The logger to give a Kafka client as its ``logger`` property (one filter, however often called)."""
    logger = logging.getLogger(KAFKA_LOGGER)
    if not any(isinstance(existing, _LibrdkafkaLines) for existing in logger.filters):
        logger.addFilter(_LibrdkafkaLines())
    return logger
