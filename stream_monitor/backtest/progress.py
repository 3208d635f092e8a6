"""Progress of a replay on stderr: a bar on a terminal, a plain line now and then otherwise.

Never on stdout, which may carry the alerts (``--alerts-out -``). The counts
come from the replay's summary as it grows; the share done is the bytes read
of the input files.

>>> import io
>>> from stream_monitor.replay import ReplaySummary
>>> ticks = iter(range(100))
>>> out = io.StringIO()
>>> summary = ReplaySummary()
>>> progress = Progress(1000, summary, out, interval_s=2.0, tty=False, clock=lambda: float(next(ticks)))
>>> for _ in range(4):
...     summary.events += 100
...     progress(250)
>>> progress.finish()
>>> print(out.getvalue(), end="")
replay: 50% (500 B of 1.0 kB read), 200 events, 100 events/s, 0 alerts, about 2 s left
replay: 100% (1.0 kB of 1.0 kB read), 400 events, 100 events/s, 0 alerts
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from stream_monitor.replay import ReplaySummary

__all__ = ["Progress"]

#: a terminal's bar is redrawn at most this often
BAR_INTERVAL_S = 0.2
BAR_WIDTH = 30


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Called with the bytes read since the last call; reports on ``stream`` (stderr).

    ``tty`` (default: ``stream.isatty()``) picks the bar; otherwise a line is
    printed at most every ``interval_s`` seconds (0: at every call), and one at
    :meth:`finish` when any was printed before.
    """

    def __init__(self, total_bytes: int, summary: ReplaySummary, stream: TextIO, *, interval_s: float = 5.0,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(0, total_bytes)
        self.summary = summary
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = BAR_INTERVAL_S if self.tty else max(0.0, interval_s)
        self.clock = clock
        self.done = 0
        self.started = clock()
        self.last = self.started
        #: (bytes, events) of the last report, None before the first
        self.shown: tuple[int, int] | None = None

    def __call__(self, nbytes: int) -> None:
        self.done += nbytes
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._show(now)

    def finish(self) -> None:
        """The last report (100%); the bar ends its line."""
        if self.shown is None:
            return
        self.done = max(self.done, self.total)
        if self.shown != (self.done, self.summary.events):
            self._show(self.clock(), final=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _show(self, now: float, final: bool = False) -> None:
        self.shown = (self.done, self.summary.events)
        done = min(self.done, self.total) if self.total else self.done
        share = done / self.total if self.total else 1.0
        elapsed = now - self.started
        events = self.summary.events
        rate = events / elapsed if elapsed > 0 else 0.0
        alerts = sum(self.summary.alerts.values())
        left = ""
        if not final and 0 < share < 1 and elapsed > 0:
            left = f", about {_duration(elapsed * (1 - share) / share)} left"
        if self.tty:
            filled = int(BAR_WIDTH * share)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(f"\rreplay [{bar}] {share:4.0%} {_size(done)}/{_size(self.total)}, "
                              f"{events:,} events, {rate:,.0f}/s, {alerts} alerts{left}\x1b[K")
        else:
            self.stream.write(f"replay: {share:.0%} ({_size(done)} of {_size(self.total)} read), "
                              f"{events} events, {rate:.0f} events/s, {alerts} alerts{left}\n")
        self.stream.flush()
