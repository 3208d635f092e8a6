"""Join late labels to logged predictions and derive performance signals.

Predictions wait for their label, per model, up to ``retention_events``
predictions and ``retention_seconds`` of event time; then they expire. Labels
that arrive before their prediction wait too, up to ``early_label_events``
labels, and until the model's prediction stream has moved
``early_label_seconds`` of event time past the label's own time (a prediction
is always older than its label, so by then it is not coming).

Joined pairs come out **in label order** per model, whatever order Kafka
interleaved the two topics in: each model keeps its labels in a queue and
releases the head only once it is resolved (joined, or given up). This is
what makes ``replay`` (which merges the two files by event time) and ``run``
give the same performance alerts.

Each pair becomes one value of a performance signal:

- ``performance:error_rate`` (0 or 1) for classification: the prediction is
  a class (string), or a score turned into a class with the model's
  ``classification_threshold`` (default 0.5 when the label is 0/1 and the
  score lies in [0, 1]);
- ``performance:abs_error`` (|prediction - label|) for regression.

Every label ends in exactly one outcome, counted in :attr:`LabelJoin.totals` and
handed out per model by :meth:`LabelJoin.take_outcomes`:
``joined``, ``duplicate`` (its prediction was already joined), ``late`` (its
prediction already expired), ``unmatched`` (no prediction came) or
``invalid`` (the pair cannot be scored, e.g. a string label for a score).

>>> from stream_monitor.events import LabelEvent, PredictionEvent
>>> join = LabelJoin(JoinLimits())
>>> join.add_prediction(PredictionEvent("e1", "fraud", "3", 100.0, {}, 0.9))
>>> join.add_label(LabelEvent("e1", "fraud", 0, 160.0))
>>> [(p.signal, p.value, p.event_id) for p in join.drain()]
[('performance:error_rate', 1.0, 'e1')]
"""

from __future__ import annotations

import math
import struct
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_monitor.events import LabelEvent, PredictionEvent

__all__ = ["JoinLimits", "LabelJoin", "Pair", "score_pair"]

ERROR_RATE = "performance:error_rate"
ABS_ERROR = "performance:abs_error"
OUTCOMES = ("joined", "duplicate", "late", "unmatched", "invalid")


@dataclass(frozen=True, slots=True)
class JoinLimits:
    retention_events: int = 100_000
    retention_seconds: float = 7 * 24 * 3600
    early_label_events: int = 10_000
    early_label_seconds: float = 3600
    #: an event time more than this ahead of the join's clock is not taken as the clock
    max_event_time_skew_s: float = 86_400.0
    #: labels that may queue behind an unresolved head label before it is given up as
    #: unmatched; None: ``early_label_events``
    head_wait_labels: int | None = None
    #: predictions waiting for labels over all models; beyond it the oldest is expired
    max_waiting_predictions: int = 1_000_000

    def head_wait(self) -> int:
        """Labels that may wait behind an unresolved head (see ``head_wait_labels``)."""
        if self.head_wait_labels is not None:
            return self.head_wait_labels
        return self.early_label_events


#: consecutive agreeing events far ahead of (or behind) the clock that move it there
CLOCK_CONFIRMATIONS = 3


class EventClock:
    """A stream's event time that one implausible event never moves.

    A time more than ``skew`` seconds ahead of the clock is *clamped*: the
    event gets the clock's time and the clock stays. Only
    :data:`CLOCK_CONFIRMATIONS` consecutive events that agree with each other
    (within ``skew``) move the clock that far, ahead or back: the stream
    really jumped (or the clock was started by a bad first event).

    >>> clock = EventClock(100.0)
    >>> [clock.observe(t) for t in (1.0, 2.0, 9e9, 3.0)]
    [(1.0, False), (2.0, False), (2.0, True), (3.0, False)]
    """

    __slots__ = ("skew", "now", "_outlier", "_agreeing")

    def __init__(self, skew: float) -> None:
        self.skew = skew
        self.now: float | None = None
        self._outlier: float | None = None
        self._agreeing = 0

    def observe(self, ts: float) -> tuple[float, bool]:
        """The time to use for an event at ``ts``, and whether it was clamped."""
        now = self.now
        if now is None:
            self.now = ts
            return ts, False
        if ts - now <= self.skew:
            if now - ts <= self.skew:
                self._agreeing = 0
                self.now = max(now, ts)
                return ts, False
            # far behind: kept (a lagging partition), but it may prove the clock wrong
            if self._confirms(ts):
                self.now = ts
            return ts, False
        if self._confirms(ts):
            self.now = ts
            return ts, False
        return now, True

    def observe_all(self, times: Sequence[float | None]) -> bool:
        """Observe ``times`` (None: no time) at once, when none is more than ``skew`` from the clock.

        That is the usual stream, for which :meth:`observe` would clamp nothing
        and only move the clock to the latest time: True, and the clock is where
        observing them one by one leaves it. False: nothing observed (do it one by one).

        >>> clock = EventClock(100.0)
        >>> clock.observe_all([1.0, None, 3.0, 2.0]), clock.now
        (True, 3.0)
        >>> clock.observe_all([4.0, 9e9]), clock.now
        (False, 3.0)
        """
        present = times if None not in times else [ts for ts in times if ts is not None]
        if not present:
            return True
        values = np.array(present, dtype=np.float64)
        now = self.now
        if now is None:
            first, values = values[:1], values[1:]
            if not len(values):
                self.now = float(first[0])
                return True
            before = np.maximum.accumulate(np.concatenate([first, values[:-1]]))
        else:
            before = np.maximum.accumulate(np.concatenate([[now], values[:-1]]))
        skew = self.skew
        if not (np.all(values - before <= skew) and np.all(before - values <= skew)):
            return False
        self.now = float(max(before[-1], values[-1]))
        self._agreeing = 0
        return True

    def observe_prefix(self, times: Sequence[float | None]) -> int:
        """Observe the longest prefix of ``times`` that :meth:`observe_all` takes at once; its length.

        The time after that prefix (if any) is more than ``skew`` from the clock:
        it is for :meth:`observe`, one event at a time.

        >>> clock = EventClock(100.0)
        >>> clock.observe_prefix([1.0, None, 3.0, 9e9, 4.0]), clock.now
        (3, 3.0)
        """
        if self.observe_all(times):
            return len(times)
        positions = [index for index, ts in enumerate(times) if ts is not None]
        values = np.array([times[index] for index in positions], dtype=np.float64)
        now = self.now
        start = 0
        if now is None:  # the first time starts the clock
            now, start = float(values[0]), 1
        rest = values[start:]
        before = np.maximum.accumulate(np.concatenate([[now], rest[:-1]]))
        far = (rest - before > self.skew) | (before - rest > self.skew)
        prefix = positions[start + int(np.argmax(far))]
        taken = self.observe_all(times[:prefix])
        assert taken, "a prefix before the first far time is observed at once"
        return prefix

    def _confirms(self, ts: float) -> bool:
        if self._agreeing and self._outlier is not None and abs(ts - self._outlier) <= self.skew:
            self._agreeing += 1
        else:
            self._agreeing = 1
        self._outlier = ts
        if self._agreeing >= CLOCK_CONFIRMATIONS:
            self._agreeing = 0
            return True
        return False

    def state(self) -> list[Any]:
        return [self.now, self._outlier, self._agreeing]

    def load(self, state: list[Any]) -> None:
        self.now, self._outlier, self._agreeing = state


@dataclass(slots=True)
class Pair:
    """One joined prediction and label, as a value of a performance signal."""

    model: str
    model_version: str
    event_id: str
    signal: str
    value: float
    prediction_ts: float | None
    label_ts: float | None
    partition: int
    #: its alerts went out before a restore (see :class:`LabelJoin` on re-read inputs): no output
    silent: bool = False


def score_pair(prediction: float | str, label: float | str,
               threshold: float | None) -> tuple[str, float] | None:
    """The performance signal and value of one pair, or None when it cannot be scored.

    >>> score_pair("spam", "ham", None), score_pair(0.7, 1.0, None), score_pair(12.0, 10.5, None)
    (('performance:error_rate', 1.0), ('performance:error_rate', 0.0), ('performance:abs_error', 1.5))

    Booleans are the classes 1/0: a class prediction ``"true"`` matches the label 1
    (a JSON ``true`` label decodes to 1.0), and a label ``"true"`` scores against a score.

    >>> score_pair("true", 1.0, None), score_pair(0.9, "true", None)
    (('performance:error_rate', 0.0), ('performance:error_rate', 0.0))
    """
    if isinstance(label, str) and not isinstance(prediction, str):
        binary = _BOOLEAN_CLASSES.get(label.strip().lower())
        if binary is None:
            return ERROR_RATE, float(_label_text(prediction) != label)
        label = float(binary)
    if isinstance(prediction, str) or isinstance(label, str):
        return ERROR_RATE, float(_class_text(prediction) != _class_text(_label_text(label)))
    if threshold is None and label in (0.0, 1.0) and 0.0 <= prediction <= 1.0:
        threshold = 0.5
    if threshold is not None:
        return ERROR_RATE, float((prediction >= threshold) != (label >= 0.5))
    return ABS_ERROR, abs(prediction - label)


#: class names that mean 1 and 0 (a JSON boolean becomes "true"/"false" as a category)
_BOOLEAN_CLASSES = {"true": "1", "false": "0", "1": "1", "0": "0", "1.0": "1", "0.0": "0"}


def _class_text(value: str) -> str:
    """A class name, with the spellings of true/false and 1/0 made one."""
    return _BOOLEAN_CLASSES.get(value.strip().lower(), value)


def _label_text(label: float | str) -> str:
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)


#: a waiting prediction: prediction (NaN for a class), ts (NaN for none), arrival
#: number (for the global bound), partition, index of its version in the model's table
_PACKED = struct.Struct("<ddqIH")
#: distinct versions a model's table holds before it is rebuilt from what still waits
_MAX_VERSIONS = 1 << 16

#: a waiting prediction: the packed numbers, with the class for a class prediction
_Pending = bytes | tuple[bytes, str]


class _Versions:
    """A model's version names, so that a waiting prediction holds a 2-byte index."""

    __slots__ = ("names", "index")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def of(self, version: str) -> int:
        number = self.index.get(version)
        if number is None:
            number = self.index[version] = len(self.names)
            self.names.append(version)
        return number


def _pack(versions: _Versions, version: str, prediction: float | str, ts: float | None,
          partition: int, seq: int) -> _Pending:
    """A compact waiting prediction: one bytes object (and the class, for a class prediction)."""
    number = math.nan if isinstance(prediction, str) else prediction
    packed = _PACKED.pack(number, math.nan if ts is None else ts, seq, partition, versions.of(version))
    return (packed, prediction) if isinstance(prediction, str) else packed


def _unpack(versions: _Versions, value: _Pending) -> tuple[str, float | str, float | None, int, int]:
    """(version, prediction, ts, partition, arrival number) of a waiting prediction."""
    packed = value[0] if isinstance(value, tuple) else value
    number, ts, seq, partition, version = _PACKED.unpack(packed)
    prediction: float | str = value[1] if isinstance(value, tuple) else number
    return versions.names[version], prediction, None if math.isnan(ts) else ts, partition, seq


class _Now:
    """The type of :data:`_NOW`."""


#: :meth:`LabelJoin._expire` at the clock's time
_NOW = _Now()


def _clock_after_each(now: float | None, stamps: Sequence[float | None]) -> list[float | None]:
    """The clock after each of ``stamps`` (None: no time) as :meth:`EventClock.observe` moves it when
    none is beyond the skew: the running maximum from ``now``."""
    out: list[float | None] = []
    for ts in stamps:
        if ts is not None:
            now = ts if now is None else max(now, ts)
        out.append(now)
    return out


def _pending_ts(value: _Pending) -> float | None:
    ts = _PACKED.unpack(value[0] if isinstance(value, tuple) else value)[1]
    return None if math.isnan(ts) else ts


def _pending_seq(value: _Pending) -> int:
    return _PACKED.unpack(value[0] if isinstance(value, tuple) else value)[2]


class _Waiting:
    """A label in its model's queue, until it is resolved."""

    __slots__ = ("label", "partition", "pair", "outcome", "silent")

    def __init__(self, label: LabelEvent, partition: int, silent: bool = True) -> None:
        self.label = label
        self.partition = partition
        self.pair: Pair | None = None
        self.outcome: str | None = None
        #: whether every input that resolved it was re-read (restored entries were too)
        self.silent = silent


class _ModelJoin:
    __slots__ = ("pending", "queue", "waiting_by_id", "unresolved", "joined_ids", "expired_ids",
                 "clock", "last_active", "versions", "released_silent")

    def __init__(self, skew: float = JoinLimits.max_event_time_skew_s) -> None:
        #: event_id -> packed (prediction, ts, arrival, partition) and version, oldest first
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        #: the versions the waiting predictions refer to
        self.versions = _Versions()
        #: labels in arrival order, resolved or not
        self.queue: deque[_Waiting] = deque()
        #: event_id -> unresolved labels waiting for that prediction
        self.waiting_by_id: dict[str, list[_Waiting]] = {}
        self.unresolved = 0
        #: recently joined and recently expired ids, to tell duplicates and late labels apart
        self.joined_ids: OrderedDict[str, None] = OrderedDict()
        self.expired_ids: OrderedDict[str, None] = OrderedDict()
        #: the model's prediction event time (robust to one implausible ``ts``)
        self.clock = EventClock(skew)
        #: the join's input count at this model's last input (for eviction)
        self.last_active = 0
        #: whether the last label released from the head went out before a restore (see LabelJoin)
        self.released_silent = True

    @property
    def stream_ts(self) -> float | None:
        """The model's prediction stream time (None before its first timed prediction)."""
        return self.clock.now


class LabelJoin:
    """The bounded join of labels to predictions, for every model."""

    def __init__(self, limits: JoinLimits,
                 threshold_for: Callable[[str], float | None] = lambda _model: None,
                 max_models: int = 100) -> None:
        self.limits = limits
        self.max_models = max_models
        self._threshold_for = threshold_for
        self._models: dict[str, _ModelJoin] = {}
        #: labels by outcome over the join's life
        self.totals: Counter[str] = Counter()
        #: per (model, outcome) and per model, since the last take_outcomes()
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._expired: Counter[str] = Counter()
        #: event times clamped by the join's clock, per topic kind, since the last take_clamped()
        self._clamped: Counter[str] = Counter()
        self._ready: list[Pair] = []
        self._inputs = 0
        #: whether the input being added is re-read after a restore (see Pair.silent)
        self._silent = False
        #: the arrival number of the first prediction not re-read (None: all so far were)
        self._loud_from: int | None = None
        #: models changed and models evicted since the last take_changes() (for snapshots)
        self._dirty: set[str] = set()
        self._evicted: set[str] = set()
        #: waiting predictions over all models (kept equal to pending_predictions())
        self._waiting_total = 0
        #: predictions given up by the global bound, per reason, since the last take_dropped()
        self._dropped: Counter[str] = Counter()
        #: labels a prediction read after them resolved, over the join's life in this process
        #: (the service's evidence that reading predictions helps waiting labels)
        self.resolved_by_predictions = 0

    def size(self) -> int:
        """Entries held in memory (for the bound): pending, queued and remembered ids."""
        return sum(len(m.pending) + len(m.queue) + len(m.joined_ids) + len(m.expired_ids)
                   for m in self._models.values())

    def bound(self) -> int:
        """The most entries :meth:`size` can reach."""
        limits = self.limits
        return self.max_models * (3 * limits.retention_events + limits.early_label_events + 2)

    def _model(self, model: str) -> _ModelJoin:
        self._inputs += 1
        state = self._models.get(model)
        if state is None:
            if len(self._models) >= self.max_models:
                # the model idle for longest makes room, models without predictions
                # (labels of unknown models) first; what it held is given up
                idle = min(self._models, key=lambda name: (self._models[name].stream_ts is not None,
                                                           self._models[name].last_active))
                self._evict(idle)
            state = self._models[model] = _ModelJoin(self.limits.max_event_time_skew_s)
        state.last_active = self._inputs
        self._dirty.add(model)
        return state

    def _evict(self, model: str) -> None:
        state = self._models.pop(model)
        self._dirty.discard(model)
        self._evicted.add(model)
        for entry in state.queue:
            outcome = entry.outcome or "unmatched"
            self._count(model, outcome)
            entry.silent = entry.silent and self._silent  # released by the input being added
            self._release(state, entry)
        if state.pending:
            self._expired[model] += len(state.pending)
            self._waiting_total -= len(state.pending)

    def _count(self, model: str, outcome: str) -> None:
        self.totals[outcome] += 1
        self._outcomes[(model, outcome)] += 1

    def take_clamped(self) -> Counter[str]:
        """Event times the join's clock clamped, per topic kind, since the last call."""
        clamped, self._clamped = self._clamped, Counter()
        return clamped

    def take_outcomes(self) -> tuple[Counter[tuple[str, str]], Counter[str]]:
        """Label outcomes per (model, outcome) and expired predictions per model since the last call."""
        outcomes, expired = self._outcomes, self._expired
        self._outcomes, self._expired = Counter(), Counter()
        return outcomes, expired

    def add_prediction(self, event: PredictionEvent, partition: int = 0,
                       fallback_ts: float | None = None, silent: bool = False) -> None:
        if event.prediction is not None:
            self.add_prediction_fields(event.event_id, event.model, event.model_version, event.prediction,
                                       event.ts, partition, fallback_ts, silent)

    def add_prediction_fields(self, event_id: str, model: str, model_version: str, prediction: Any,
                              ts: float | None, partition: int = 0, fallback_ts: float | None = None,
                              silent: bool = False) -> None:
        """:meth:`add_prediction` of an event given by its fields (a row of a decoded block);
        ``prediction`` is not None."""
        self._silent = silent
        state = self._model(model)
        if not silent and self._loud_from is None:
            self._loud_from = self._inputs
        if ts is None:
            ts = fallback_ts
        if ts is not None:
            ts, clamped = state.clock.observe(ts)
            if clamped:
                self._clamped["predictions"] += 1
        self._take_prediction(state, model, event_id, model_version, prediction, ts, partition, silent,
                              self._inputs)
        self._expire(model, state)
        if self._waiting_total > self.limits.max_waiting_predictions:
            self._drop_oldest()

    def _take_prediction(self, state: _ModelJoin, model: str, event_id: str, model_version: str, prediction: Any,
                         ts: float | None, partition: int, silent: bool, arrival: int) -> None:
        """A prediction resolves the labels waiting for it, or waits for its label."""
        waiting = state.waiting_by_id.pop(event_id, None)
        if waiting:
            state.unresolved -= len(waiting)
            self.resolved_by_predictions += len(waiting)
            first, *others = waiting
            self._resolve(first, model, model_version, prediction, ts, partition)
            for entry in waiting:
                entry.silent = entry.silent and silent
            for duplicate in others:
                duplicate.outcome = "duplicate"
            self._remember(state.joined_ids, event_id)
        else:
            if event_id in state.pending:
                del state.pending[event_id]  # the newest copy waits, at the end
                self._waiting_total -= 1
            if len(state.versions.names) >= _MAX_VERSIONS and model_version not in state.versions.index:
                self._reindex(state)
            state.pending[event_id] = _pack(state.versions, model_version, prediction, ts, partition, arrival)
            self._waiting_total += 1

    def add_prediction_rows(self, event_ids: Sequence[str], model: str, model_version: str | Sequence[str],
                            predictions: Sequence[Any], times: Sequence[float | None],
                            partition: int = 0, fallbacks: Sequence[float | None] | None = None,
                            quiet: int = 0) -> None:
        """The rows of a block of one model, as :meth:`add_prediction_fields` row by row would add them
        (a row without prediction is not an input; the first ``quiet`` rows are silent);
        ``model_version`` is the block's version, or each row's (a canary's interleaved versions).

        The usual block (its model joined before, every time within the skew of the clock) is
        added with the clock moved once; a row that meets no waiting label is packed straight into
        the waiting predictions, with what row-by-row adding would expire after it checked inline
        (:meth:`_expire` runs only where something is due). Any other block goes row by row.
        """
        rows = [row for row, prediction in enumerate(predictions) if prediction is not None]
        row_versions = None if isinstance(model_version, str) else list(model_version)
        kafka = fallbacks if fallbacks is not None else [None] * len(predictions)
        stamps = [times[row] if times[row] is not None else kafka[row] for row in rows]
        state = self._models.get(model)
        clock_before = None if state is None else state.clock.now
        if (state is None or (state.queue and state.queue[0].outcome is not None)
                or self._waiting_total + len(rows) > self.limits.max_waiting_predictions
                or not state.clock.observe_all(stamps)):
            for row in rows:
                self.add_prediction_fields(event_ids[row], model,
                                           model_version if row_versions is None else row_versions[row],
                                           predictions[row], times[row], partition, kafka[row], row < quiet)
            return
        if not rows:
            return
        self._silent = rows[0] < quiet
        first = self._inputs + 1
        self._model(model)  # counts the first row as an input; the others are counted here
        self._inputs += len(rows) - 1
        state.last_active = self._inputs
        loud = next((index for index, row in enumerate(rows) if row >= quiet), None)
        if loud is not None and self._loud_from is None:
            self._loud_from = first + loud
        pending, queue, waiting_by_id = state.pending, state.queue, state.waiting_by_id
        limits = self.limits
        retention, retention_s, skew = limits.retention_events, limits.retention_seconds, limits.max_event_time_skew_s
        stale_s, bound = limits.early_label_seconds, limits.max_waiting_predictions
        pack, nan = _PACKED.pack, math.nan
        numbers: dict[str, int] = {}  # a version's number in the model's table, once a row of it waits

        def heads() -> tuple[float | None, float | None]:
            """The oldest waiting prediction's time and the head label's (what expiry looks at)."""
            return (_pending_ts(next(iter(pending.values()))) if pending else None,
                    queue[0].label.ts if queue else None)
        head_ts, label_ts = heads()
        # the clock after each row, as observing them one by one moves it (observe_all took them all)
        running = _clock_after_each(clock_before, stamps)
        for index, row in enumerate(rows):
            event_id, prediction, ts, now = event_ids[row], predictions[row], stamps[index], running[index]
            row_version = model_version if row_versions is None else row_versions[row]
            silent = row < quiet
            if waiting_by_id and event_id in waiting_by_id:
                # a row that resolves waiting labels: as one row is added (its expiry always run)
                self._silent = silent
                self._take_prediction(state, model, event_id, row_version, prediction, ts, partition, silent,
                                      first + index)
                self._expire(model, state, now)
                if self._waiting_total > bound:
                    self._drop_oldest()
                numbers = {}  # the table may have been rebuilt
                head_ts, label_ts = heads()
                continue
            if event_id in pending:
                del pending[event_id]  # the newest copy waits, at the end
                self._waiting_total -= 1
                head_ts = heads()[0]
            elif not pending:
                head_ts = ts
            version = numbers.get(row_version, -1)  # type: ignore[arg-type]
            if version < 0:
                if len(state.versions.names) >= _MAX_VERSIONS and row_version not in state.versions.index:
                    self._reindex(state)
                    numbers = {}
                    head_ts = heads()[0]
                version = numbers[row_version] = state.versions.of(row_version)  # type: ignore[arg-type]
            text = isinstance(prediction, str)
            packed = pack(nan if text else prediction, nan if ts is None else ts, first + index, partition, version)
            pending[event_id] = (packed, prediction) if text else packed
            self._waiting_total += 1
            if now is not None and ((head_ts is not None and (now - head_ts > retention_s or head_ts - now > skew))
                                    or (label_ts is not None and now - label_ts > stale_s)) \
                    or len(pending) > retention:
                self._silent = silent
                self._expire(model, state, now)
                head_ts, label_ts = heads()
            if self._waiting_total > bound:
                self._drop_oldest()
                head_ts = heads()[0]
        self._silent = rows[-1] < quiet

    def add_label(self, label: LabelEvent, partition: int = 0, fallback_ts: float | None = None,
                  silent: bool = False) -> None:
        self._silent = silent
        if label.ts is None and fallback_ts is not None:
            label = LabelEvent(label.event_id, label.model, label.label, fallback_ts)
        state = self._model(label.model)
        now = state.stream_ts
        if label.ts is not None and now is not None and label.ts - now > self.limits.max_event_time_skew_s:
            # implausibly far ahead of the predictions: it would never go stale
            label = LabelEvent(label.event_id, label.model, label.label, now)
            self._clamped["labels"] += 1
        entry = _Waiting(label, partition, silent)
        state.queue.append(entry)
        found = state.pending.pop(label.event_id, None)
        if found is not None:
            self._waiting_total -= 1
            version, prediction, ts, prediction_partition, arrival = _unpack(state.versions, found)
            entry.silent = silent and self._re_read(arrival)
            self._resolve(entry, label.model, version, prediction, ts, prediction_partition)
            self._remember(state.joined_ids, label.event_id)
        elif label.event_id in state.joined_ids:
            entry.outcome = "duplicate"
        elif label.event_id in state.expired_ids:
            entry.outcome = "late"
        else:
            state.waiting_by_id.setdefault(label.event_id, []).append(entry)
            state.unresolved += 1
        self._expire(label.model, state)

    def _re_read(self, arrival: int) -> bool:
        """Whether the prediction that arrived as number ``arrival`` was re-read after a restore.

        A partition's predictions are re-read from the snapshot in offset order, so the
        re-read ones come first: before the first one that was not (restored ones too).
        """
        return self._loud_from is None or arrival < self._loud_from

    def _release(self, state: _ModelJoin, entry: _Waiting) -> None:
        """The head label leaves the queue; its pair, if any, goes to the performance signal.

        A pair's alerts went out before the restore only if the pair left the queue
        before the commit: its label, its prediction and the release of every label
        ahead of it (labels leave in label order) were all inputs re-read now. Which
        input completes the pair on a re-read says nothing: the two topics are read
        in another interleaving than before the restore.
        """
        state.released_silent = state.released_silent and entry.silent
        if entry.pair is not None:
            entry.pair.silent = state.released_silent
            self._ready.append(entry.pair)

    def _resolve(self, entry: _Waiting, model: str, version: str, prediction: float | str,
                 prediction_ts: float | None, partition: int) -> None:
        scored = score_pair(prediction, entry.label.label, self._threshold_for(model))
        if scored is None:
            entry.outcome = "invalid"
            return
        signal, value = scored
        entry.outcome = "joined"
        entry.pair = Pair(model, version, entry.label.event_id, signal, value, prediction_ts,
                          entry.label.ts, partition)

    def _remember(self, ids: OrderedDict[str, None], event_id: str) -> None:
        ids[event_id] = None
        if len(ids) > self.limits.retention_events:
            ids.popitem(last=False)

    def _expire(self, model: str, state: _ModelJoin, stream_ts: float | None | _Now = _NOW) -> None:
        """Expire what is due at the model's stream time (or at ``stream_ts``: the clock after a row of
        a block the clock took at once)."""
        limits = self.limits
        pending = state.pending
        if stream_ts is _NOW:
            stream_ts = state.clock.now  # the model's stream time; it does not move in here
        while pending:
            event_id, value = next(iter(pending.items()))
            ts = _pending_ts(value)
            too_many = len(pending) > limits.retention_events
            # an entry far ahead of the clock (the clock moved back under it) is given
            # up too, so that one bad time never blocks the expiry of those behind it
            too_old = (ts is not None and stream_ts is not None
                       and (stream_ts - ts > limits.retention_seconds
                            or ts - stream_ts > limits.max_event_time_skew_s))
            if not (too_many or too_old):
                break
            pending.popitem(last=False)
            self._waiting_total -= 1
            self._remember(state.expired_ids, event_id)
            self._expired[model] += 1
        # release resolved labels from the head, in label order; give up on the head
        # label when too many wait (the queue is capped too: resolved labels behind
        # an unresolved head wait with it) or when the predictions have moved past it
        queue = state.queue
        cap = limits.early_label_events
        head_wait = limits.head_wait()
        while queue:
            head = queue[0]
            if head.outcome is not None:
                queue.popleft()
                self._count(model, head.outcome)
                self._release(state, head)
                continue
            label_ts = head.label.ts
            stale = (label_ts is not None and stream_ts is not None
                     and stream_ts - label_ts > limits.early_label_seconds)
            # the head blocks every pair behind it: bounded in labels as well as in time
            blocking = len(queue) - 1 >= head_wait
            if not (stale or blocking or state.unresolved > cap or len(queue) > cap):
                break
            self._give_up(state, head)

    @staticmethod
    def _reindex(state: _ModelJoin) -> None:
        """Rebuild a full version table from the versions still waiting."""
        old, state.versions = state.versions, _Versions()
        for event_id, value in state.pending.items():
            state.pending[event_id] = _pack(state.versions, *_unpack(old, value))

    def _drop_oldest(self) -> None:
        """Expire the oldest waiting prediction of all models (the global bound)."""
        while self._waiting_total > self.limits.max_waiting_predictions:
            model = min((name for name, m in self._models.items() if m.pending),
                        key=lambda name: _pending_seq(next(iter(self._models[name].pending.values()))))
            state = self._models[model]
            self._dirty.add(model)
            event_id, _ = state.pending.popitem(last=False)
            self._waiting_total -= 1
            self._remember(state.expired_ids, event_id)
            self._expired[model] += 1
            self._dropped["global_bound"] += 1

    def take_dropped(self) -> Counter[str]:
        """Waiting predictions the global bound gave up, per reason, since the last call."""
        dropped, self._dropped = self._dropped, Counter()
        return dropped

    def _give_up(self, state: _ModelJoin, entry: _Waiting) -> None:
        entry.outcome = "unmatched"
        entry.silent = entry.silent and self._silent  # given up on because of the input being added
        waiting = state.waiting_by_id.get(entry.label.event_id)
        if waiting:
            waiting.remove(entry)
            state.unresolved -= 1
            if not waiting:
                del state.waiting_by_id[entry.label.event_id]

    def drain(self) -> list[Pair]:
        """The pairs released since the last call, in label order per model."""
        ready, self._ready = self._ready, []
        return ready

    def pending_predictions(self) -> int:
        """Predictions waiting for their label, over all models."""
        return sum(len(m.pending) for m in self._models.values())

    def fullest_pending(self) -> int:
        """Predictions waiting for labels in the model that has the most.

        The service pauses the predictions topic while this comes close to
        ``retention_events`` (and labels are unread).
        """
        return max((len(m.pending) for m in self._models.values()), default=0)

    def unresolved_labels(self) -> int:
        """Labels still waiting for their prediction, over all models.

        The service pauses the labels topic while this is above half of
        ``early_label_events`` and predictions are unread. Labels of a model
        none of whose predictions has been read count too: after a restore
        from a snapshot taken when only labels had been read, every label of
        the model is such a label until its first prediction arrives. It is
        exact after every input: a label counts from its arrival until it is
        joined, or given up (stale in event time, more than
        ``early_label_events`` unresolved, or :meth:`JoinLimits.head_wait`
        labels queued behind it at the head). Per model it never exceeds
        ``min(early_label_events, head_wait()) + 1``. It changes only on
        input: a caller that pauses the labels on it must keep feeding
        predictions, and resume the labels when the predictions have nothing
        unread (nothing else would ever lower it).
        """
        return sum(m.unresolved for m in self._models.values())

    def waiting_labels(self) -> int:
        """Labels queued, resolved or not (resolved ones wait behind an unresolved head)."""
        return sum(len(m.queue) for m in self._models.values())

    # -- state (checkpoints) --------------------------------------------

    def take_changes(self) -> tuple[set[str], set[str]]:
        """Models changed and models evicted since the last call."""
        dirty, evicted = self._dirty, self._evicted
        self._dirty, self._evicted = set(), set()
        return dirty, evicted - dirty

    def model_names(self) -> list[str]:
        return list(self._models)

    def meta_state(self) -> dict[str, Any]:
        """What the join keeps beside its models: the input count and outcome totals."""
        return {"inputs": self._inputs, "totals": dict(self.totals)}

    def load_meta_state(self, state: dict[str, Any]) -> None:
        self._inputs = int(state["inputs"])
        self.totals = Counter({str(k): int(v) for k, v in state["totals"].items()})

    def model_state(self, model: str) -> dict[str, Any]:
        """One model's waiting predictions and labels as plain data.

        Waiting predictions stay packed: their ids, one bytes run of the packed
        numbers, and the classes of class predictions by position.
        """
        m = self._models[model]
        packed = [v[0] if isinstance(v, tuple) else v for v in m.pending.values()]
        classes = {i: v[1] for i, v in enumerate(m.pending.values()) if isinstance(v, tuple)}
        return {
            "model": model,
            "ids": list(m.pending),
            "packed": b"".join(packed),
            "classes": classes,
            "versions": list(m.versions.names),
            "queue": [[w.label.event_id, w.label.label, w.label.ts, w.partition, w.outcome,
                       None if w.pair is None else [w.pair.model_version, w.pair.signal, w.pair.value,
                                                    w.pair.prediction_ts, w.pair.partition]]
                      for w in m.queue],
            "joined_ids": list(m.joined_ids),
            "expired_ids": list(m.expired_ids),
            "clock": m.clock.state(),
            "last_active": m.last_active,
        }

    def load_model_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`model_state` returned."""
        model = str(state["model"])
        if model in self._models:
            self._waiting_total -= len(self._models[model].pending)
        m = self._models[model] = _ModelJoin(self.limits.max_event_time_skew_s)
        m.versions = _Versions()
        for name in state["versions"]:
            m.versions.of(str(name))
        size = _PACKED.size
        packed = state["packed"]
        classes = {int(k): str(v) for k, v in state["classes"].items()}
        ids = state["ids"]
        if len(packed) != size * len(ids):
            raise ValueError(f"join state of {model!r}: {len(ids)} ids but {len(packed)} packed bytes")
        for index, event_id in enumerate(ids):
            value = bytes(packed[index * size:(index + 1) * size])
            m.pending[str(event_id)] = (value, classes[index]) if index in classes else value
        self._waiting_total += len(m.pending)
        for event_id, label, ts, partition, outcome, pair in state["queue"]:
            entry = _Waiting(LabelEvent(event_id, model, label, ts), partition)
            entry.outcome = outcome
            if pair is not None:
                version, signal, value, prediction_ts, prediction_partition = pair
                entry.pair = Pair(model, version, event_id, signal, value, prediction_ts, ts,
                                  prediction_partition)
            m.queue.append(entry)
            if outcome is None:
                m.waiting_by_id.setdefault(event_id, []).append(entry)
                m.unresolved += 1
        m.joined_ids = OrderedDict.fromkeys(state["joined_ids"])
        m.expired_ids = OrderedDict.fromkeys(state["expired_ids"])
        m.clock.load(state["clock"])
        m.last_active = int(state["last_active"])

    def state_dict(self) -> dict[str, Any]:
        """The whole join as plain data (every model and the counters)."""
        return {"meta": self.meta_state(), "models": [self.model_state(m) for m in self._models]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._models = {}
        self._waiting_total = 0
        self.load_meta_state(state["meta"])
        for model_state in state["models"]:
            self.load_model_state(model_state)
