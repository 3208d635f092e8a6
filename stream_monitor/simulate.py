"""Synthetic prediction (and label) events with scheduled drifts, seeded.

Each model has numeric features ``f00, f01, ...`` (each normal with its own
mean and scale), categorical features ``c00, ...`` (five categories with fixed
shares) and a score prediction in (0, 1). Labels, when asked for, are the
predicted class flipped with the model's error rate.

A drift is written ``[MODEL:]SIGNAL@EVENT:KIND=VALUE[:over=N]`` where SIGNAL is
``feature:<name>``, ``prediction`` or ``performance:error_rate`` and KIND is

- ``shift``: add VALUE standard deviations to the mean (``over=N`` ramps it in
  linearly over N events);
- ``scale``: multiply the standard deviation by VALUE;
- ``share``: the first category's share becomes VALUE (the rest keep their
  proportions);
- ``error``: the error rate becomes VALUE (labels only).

EVENT counts the events of that model from 0. Everything is a pure function
of the arguments and the seed.

A canary: with ``candidate_version`` set, each event from ``candidate_from`` on
is served by that version with probability ``candidate_share`` (a draw of its
own random stream, so the inputs are those of the stream without a candidate);
the candidate may have its own error rate (``candidate_error_rate``) and shift
its scores on the same inputs (``candidate_score_shift``, in sd of the
prediction logit). Without a candidate, streams are as before.

>>> canary = Scenario(n_events=10, n_numeric=1, candidate_version="2", candidate_share=0.5)
>>> [event["model_version"] for event, _ in generate(canary)]
['2', '2', '1', '2', '1', '1', '1', '2', '1', '1']

>>> spec = parse_drift("fraud:feature:f03@5000:shift=1.0")
>>> spec.model, spec.signal, spec.at, spec.kind, spec.value
('fraud', 'feature:f03', 5000, 'shift', 1.0)
>>> events = list(generate(Scenario(models=("fraud",), n_events=3, n_numeric=2, n_categorical=1)))
>>> sorted(events[0][0])
['event_id', 'features', 'model', 'model_version', 'prediction', 'ts']
>>> events[0][0]["event_id"], sorted(events[0][0]["features"])
('fraud-000000000', ['c00', 'f00', 'f01'])
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DriftSpec", "Scenario", "check_drift", "generate", "parse_drift", "stream"]

_DRIFT = re.compile(
    r"^(?:(?P<model>[^:@]+):(?=feature:|prediction|performance:))?"
    r"(?P<signal>feature:[^@]+|prediction|performance:error_rate)"
    r"@(?P<at>\d+):(?P<kind>shift|scale|share|error)=(?P<value>-?[0-9.eE+-]+)"
    r"(?::over=(?P<over>\d+))?$")

CATEGORIES = ("a", "b", "c", "d", "e")
BASE_SHARES = np.array([0.2, 0.3, 0.25, 0.15, 0.1])


@dataclass(frozen=True)
class DriftSpec:
    model: str | None
    signal: str
    at: int
    kind: str
    value: float
    over: int = 0


def parse_drift(text: str) -> DriftSpec:
    match = _DRIFT.match(text.strip())
    if not match:
        raise ValueError(f"bad drift {text!r}: expected [MODEL:]SIGNAL@EVENT:KIND=VALUE[:over=N], "
                         f"e.g. fraud:feature:f03@5000:shift=1.0")
    return DriftSpec(match["model"], match["signal"], int(match["at"]), match["kind"],
                     float(match["value"]), int(match["over"] or 0))


@dataclass(frozen=True)
class Scenario:
    models: tuple[str, ...] = ("fraud",)
    model_version: str = "1"
    n_events: int = 10_000
    n_numeric: int = 20
    n_categorical: int = 1
    drifts: tuple[DriftSpec, ...] = ()
    seed: int = 7
    error_rate: float = 0.05
    start_ts: float = 1_764_000_000.0
    #: event time between consecutive events of one model, in seconds
    interval_s: float = 0.01
    #: a label arrives this many events (of its model) after its prediction
    label_delay_events: int = 500
    chunk: int = 4096
    models_interleaved: bool = field(default=True)
    #: a second version serving a random share of the traffic (None: no candidate)
    candidate_version: str | None = None
    candidate_share: float = 0.2
    #: the model's event number from which the candidate gets traffic
    candidate_from: int = 0
    #: the candidate's error rate (None: the model's)
    candidate_error_rate: float | None = None
    #: added to the candidate's prediction logit, in sd of the logit (the same inputs scored otherwise)
    candidate_score_shift: float = 0.0


def _names(prefix: str, count: int) -> str:
    if count == 0:
        return ""
    return f"{prefix}00" if count == 1 else f"{prefix}00-{prefix}{count - 1:02d}"


def check_drift(scenario: Scenario, drift: DriftSpec) -> str | None:
    """Why ``drift`` would not change the simulated stream (None: it applies).

    >>> check_drift(Scenario(n_numeric=2, n_categorical=1), parse_drift("feature:f05@10:shift=1"))
    'feature:f05: no such feature (the simulated ones are f00-f01, c00)'
    """
    if drift.model is not None and drift.model not in scenario.models:
        return f"model {drift.model!r} is not simulated (--model: {', '.join(scenario.models)})"
    if drift.at >= scenario.n_events:
        return f"event {drift.at} is beyond the {scenario.n_events} simulated events"
    numeric = {f"feature:f{j:02d}" for j in range(scenario.n_numeric)}
    categorical = {f"feature:c{j:02d}" for j in range(scenario.n_categorical)}
    if drift.signal in numeric:
        kinds, what = ("shift", "scale"), "numeric: use shift= or scale="
    elif drift.signal in categorical:
        kinds, what = ("share",), "categorical: use share="
    elif drift.signal == "prediction":
        kinds, what = ("shift",), "a score: use shift= (in units of its logit's spread)"
    elif drift.signal == "performance:error_rate":
        kinds, what = ("error",), "the error rate: use error="
    else:
        names = ", ".join(part for part in (_names("f", scenario.n_numeric), _names("c", scenario.n_categorical))
                          if part)
        return f"{drift.signal}: no such feature (the simulated ones are {names or 'none'})"
    if drift.kind not in kinds:
        return f"{drift.signal} is {what}"
    if drift.kind in ("share", "error") and not 0.0 <= drift.value <= 1.0:
        return f"{drift.kind}={drift.value:g} must be between 0 and 1"
    if drift.kind == "scale" and drift.value <= 0:
        return f"scale={drift.value:g} must be above 0"
    return None


def _model_params(seed: int, model_index: int, n_numeric: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, model_index, 0])
    means = np.round(rng.uniform(-5, 50, n_numeric), 2)
    scales = np.round(rng.uniform(0.5, 10, n_numeric), 2)
    return means, scales


def _drift_factor(drift: DriftSpec, index: np.ndarray) -> np.ndarray:
    """0 before the drift, 1 after it, a linear ramp in between when ``over`` is set."""
    if drift.over > 0:
        return np.clip((index - drift.at + 1) / drift.over, 0.0, 1.0)
    return (index >= drift.at).astype(np.float64)


def generate(scenario: Scenario) -> Iterator[tuple[dict, dict]]:
    """Yield ``(prediction_event, label_event)`` pairs in stream order."""
    streams = [_model_stream(scenario, position, model) for position, model in enumerate(scenario.models)]
    while streams:
        for stream in list(streams):
            try:
                yield next(stream)
            except StopIteration:
                streams.remove(stream)


def stream(scenario: Scenario) -> Iterator[tuple[str, dict]]:
    """Yield ``("prediction", event)`` and ``("label", label)`` in arrival order.

    Each label comes ``label_delay_events`` events of its model after its
    prediction; the labels still due at the end come last.

    >>> kinds = [kind for kind, _ in stream(Scenario(n_events=3, n_numeric=1, label_delay_events=1))]
    >>> kinds
    ['prediction', 'prediction', 'label', 'prediction', 'label', 'label']
    """
    from collections import deque

    due: dict[str, deque] = {}
    for event, label in generate(scenario):
        queue = due.setdefault(event["model"], deque())
        yield "prediction", event
        queue.append(label)
        if len(queue) > scenario.label_delay_events:
            yield "label", queue.popleft()
    for queue in due.values():
        while queue:
            yield "label", queue.popleft()


def _model_stream(scenario: Scenario, model_index: int, model: str) -> Iterator[tuple[dict, dict]]:
    means, scales = _model_params(scenario.seed, model_index, scenario.n_numeric)
    drifts = [d for d in scenario.drifts if d.model in (None, model)]
    rng = np.random.default_rng([scenario.seed, model_index, 1])
    # the traffic split has a stream of its own: the inputs do not depend on it
    split_rng = np.random.default_rng([scenario.seed, model_index, 2])
    numeric_names = [f"f{j:02d}" for j in range(scenario.n_numeric)]
    categorical_names = [f"c{j:02d}" for j in range(scenario.n_categorical)]
    for start in range(0, scenario.n_events, scenario.chunk):
        size = min(scenario.chunk, scenario.n_events - start)
        index = np.arange(start, start + size)
        noise = rng.standard_normal((size, scenario.n_numeric))
        shift = np.zeros((size, scenario.n_numeric))
        scale = np.ones((size, scenario.n_numeric))
        prediction_logit = rng.standard_normal(size) * 1.5 - 1.0
        uniforms = rng.random((size, scenario.n_categorical))
        error_draws = rng.random(size)
        first_share = np.full((size, scenario.n_categorical), BASE_SHARES[0])
        error_rate = np.full(size, scenario.error_rate)
        for drift in drifts:
            factor = _drift_factor(drift, index)
            if drift.signal.startswith("feature:f") and drift.signal[8:] in numeric_names:
                j = numeric_names.index(drift.signal[8:])
                if drift.kind == "shift":
                    shift[:, j] += drift.value * factor
                elif drift.kind == "scale":
                    scale[:, j] *= 1 + (drift.value - 1) * factor
            elif drift.signal.startswith("feature:c") and drift.signal[8:] in categorical_names:
                j = categorical_names.index(drift.signal[8:])
                first_share[:, j] = BASE_SHARES[0] + (drift.value - BASE_SHARES[0]) * factor
            elif drift.signal == "prediction" and drift.kind == "shift":
                prediction_logit += drift.value * 1.5 * factor
            elif drift.signal == "performance:error_rate":
                error_rate = scenario.error_rate + (drift.value - scenario.error_rate) * factor
        candidate = np.zeros(size, dtype=bool)
        if scenario.candidate_version is not None:
            candidate = (split_rng.random(size) < scenario.candidate_share) & (index >= scenario.candidate_from)
            prediction_logit = prediction_logit + candidate * scenario.candidate_score_shift * 1.5
            if scenario.candidate_error_rate is not None:
                error_rate = np.where(candidate, scenario.candidate_error_rate, error_rate)
        values = means + (noise * scale + shift) * scales
        scores = 1.0 / (1.0 + np.exp(-prediction_logit))
        categories = _categories(uniforms, first_share)
        errors = error_draws < error_rate
        for row in range(size):
            number = start + row
            event_id = f"{model}-{number:09d}"
            ts = round(scenario.start_ts + number * scenario.interval_s, 3)
            features: dict[str, float | str] = {
                name: float(values[row, j]) for j, name in enumerate(numeric_names)}
            for j, name in enumerate(categorical_names):
                features[name] = categories[row][j]
            score = float(scores[row])
            predicted = int(score >= 0.5)
            label = predicted ^ int(errors[row])
            version = scenario.candidate_version if candidate[row] else scenario.model_version
            yield ({"event_id": event_id, "model": model, "model_version": version,
                    "ts": ts, "features": features, "prediction": score},
                   {"event_id": event_id, "model": model, "label": label,
                    "ts": round(ts + scenario.label_delay_events * scenario.interval_s, 3)})


def _categories(uniforms: np.ndarray, first_share: np.ndarray) -> list[list[str]]:
    rest = BASE_SHARES[1:] / BASE_SHARES[1:].sum()
    columns = []
    for j in range(uniforms.shape[1]):
        share = first_share[:, j:j + 1]
        cumulative = np.cumsum(np.concatenate([share, rest * (1 - share)], axis=1), axis=1)
        position = np.minimum((uniforms[:, j:j + 1] >= cumulative).sum(axis=1), len(CATEGORIES) - 1)
        columns.append([CATEGORIES[p] for p in position])
    return [list(row) for row in zip(*columns)] if columns else [[] for _ in range(len(uniforms))]
