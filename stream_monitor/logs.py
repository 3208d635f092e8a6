"""Structured logs on stderr: one JSON object per line, or one readable line on a terminal.

Fields beyond the message go in ``extra={...}``; secrets never do (the
settings are logged only through :meth:`Settings.redacted`). ``log_format``
``auto`` writes text when stderr is a terminal and JSON otherwise (a file, a
pipe, a container's log collector).
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
        payload.update(_extras(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")}


def _text_value(value: Any) -> str:
    """A field's value on a text line: bare when unambiguous, else JSON (quoted, escaped)."""
    if isinstance(value, str):
        if value and not any(character.isspace() or character in '"=\\' for character in value):
            return value
        return orjson.dumps(value).decode()
    if value is None or isinstance(value, (bool, int, float)):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, default=str).decode()


class TextFormatter(logging.Formatter):
    """One readable line: ``time LEVEL logger: message key=value ...`` (for a terminal).

    >>> record = logging.LogRecord("stream_monitor.runtime", logging.WARNING, "", 0, "drift alert",
    ...                            (), None)
    >>> record.created, record.model, record.signal = 0.0, "fraud", "feature:amount"
    >>> TextFormatter().format(record)
    '1970-01-01T00:00:00.000Z WARNING  stream_monitor.runtime: drift alert model=fraud signal=feature:amount'
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=timezone.utc)
        parts = [f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.{moment.microsecond // 1000:03d}Z",
                 f"{record.levelname:8s}", f"{record.name}:", record.getMessage()]
        parts += [f"{key}={_text_value(value)}" for key, value in _extras(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


#: the values of the ``log_format`` setting
LOG_FORMATS = ("auto", "json", "text")


def formatter_for(log_format: str, stream: Any = None) -> logging.Formatter:
    """The formatter of ``log_format``; ``auto``: text when ``stream`` (stderr) is a terminal."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if log_format == "auto":
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        log_format = "text" if isatty is not None and isatty() else "json"
    return TextFormatter() if log_format == "text" else JsonFormatter()


def configure(level: str = "INFO", log_format: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format, sys.stderr))
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

    def counts(self) -> dict[tuple[str, ...], int]:
        """Per key, the occurrences counted (logged or not)."""
        return dict(self._seen)

    def suppressed(self) -> dict[tuple[str, ...], int]:
        """Per key, the occurrences counted but not logged (only keys with some)."""
        # logged: the 1st, 10th, 100th, ... occurrence, as many as the count has digits
        return {key: count - len(str(count)) for key, count in self._seen.items()
                if count > len(str(count))}

    def forget(self, stale: Callable[[tuple[str, ...]], bool]) -> None:
        """Drop the counts of the keys ``stale`` picks (e.g. those of an evicted model)."""
        for key in [key for key in self._seen if stale(key)]:
            del self._seen[key]


#: the logger librdkafka's own lines go through (set as each client's ``logger`` property)
KAFKA_LOGGER = "stream_monitor.librdkafka"
#: drops digits: the key that groups repeated messages differing only in numbers (ids, counts, ports)
WITHOUT_DIGITS = str.maketrans("", "", "0123456789")


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
            key = (record.levelno, facility, text.translate(WITHOUT_DIGITS))
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
