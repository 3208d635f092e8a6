"""Detection quality of the drift detectors: delay per change type beside the information bound, and false alarms.

Usage::

    .venv/bin/python bench/quality.py [--quick] [--full] [--seeds N] [--detectors page_hinkley,ks,...]
                                      [--scenarios mean+1sd,category,...] [--false-alarm-values N]

The model is the 22-signal model of ``bench/_scenarios.py`` (20 numeric
features of several shapes, one 5-category feature, a prediction). For each
change type and seed the detectors of each changed signal's kind run over
the signal's values in batches of 1,000, built as the service builds them:
``default_specs`` (or the ``--detectors`` named; a kind none of them watches
keeps its default set), the rule's reference parameters, and ``family_tests``
= signals x detectors of that kind, as ``Monitor._signal_specs`` computes it.
The error-rate change is seen only through labels, so it runs through the
pipeline (label join and monitor) with labels arriving 500 events after their
predictions; its delay counts labelled predictions.

A delay is the number of values from the change to the first detection,
the detecting value included (1: detected on the first changed value), on
any signal the change affects (the changed feature and the prediction that
depends on it). Per detector, and for the set (the first of its detectors).
Each cell is the median [min-max] over seeds; a seed with no detection within
the horizon is counted as missed (a miss sorts after every delay, so a
median that is a miss prints as ``>horizon``); ``.`` where the detector
watches none of the changed signals. Detections before the change are false
alarms and are counted apart.

The bound is h / KL: ``h = log(DEFAULT_ARL * family_tests)`` nats (a CUSUM
that knows both distributions needs a threshold about that high to raise one
false alarm per ``DEFAULT_ARL * family_tests`` values) and KL the divergence
per value of the changed signal after the change; for the ramp, whose KL
grows, the number of values whose summed KL reaches h (about
``(6 h 20000^2)^(1/3)``, 3,652 at h = 20.3 nats, as the KL after t values is
about ``t^3 / (6 * 20000^2)``). Under the table the ramp's bound is checked
by simulation: an oracle that knows the onset and the slope adds its
log-likelihood ratio from the onset and stops when it reaches h (a test
whose false-alarm probability is at most ``exp(-h)``); the median and 10-90%
range of its delay over 200 seeds (3,550, 3,192-4,114 at h = 20.3: no
detector at this budget can be expected to see the ramp much before 3,600
values). ``-`` where there is no simple KL (the prediction's).

False alarms: the set runs over stationary streams of the model (every
signal, the error stream included) and the alarms are counted per 10^8
signal-values (features and prediction): 10^8 by default (about a minute),
10^9 with ``--full``, 10^6 with ``--quick`` (the figure printed says how
many). The default run takes one to two minutes.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _scenarios as scenarios  # noqa: E402
from _scenarios import CHANGE, LABEL_DELAY, SCENARIOS, Scenario, Streams  # noqa: E402

from stream_monitor import detectors  # noqa: E402
from stream_monitor.detectors import DEFAULT_ARL, REGISTRY, SIGNAL_KINDS, DetectorSpec  # noqa: E402
from stream_monitor.detectors.reference import reference_params  # noqa: E402

BATCH = 1000
#: signals of the model that share the false-alarm budget: the numeric features, the categorical one
#: and the prediction (derived signals such as the error rate do not count, as in the monitor)
N_SIGNALS = len(scenarios.FEATURES) + 2
MISSED = math.inf


@dataclass(frozen=True)
class DetectorSet:
    """The detectors run per signal kind, built as the monitor builds them."""

    specs: dict[str, tuple[DetectorSpec, ...]]
    n_signals: int = N_SIGNALS

    def family_tests(self, kind: str) -> int:
        """Detector instances sharing the model's budget, as ``Monitor._signal_specs`` counts them."""
        return max(1, self.n_signals * max(1, len(self.specs[kind])))

    def threshold_nats(self, kind: str) -> float:
        """h: the log of the false-alarm run length each detector of ``kind`` targets."""
        return math.log(DEFAULT_ARL * self.family_tests(kind))

    def names(self) -> list[str]:
        """Every detector name, numeric first, in set order."""
        return [spec.name for kind in SIGNAL_KINDS for spec in self.specs[kind]]

    def build(self, kind: str, spec: DetectorSpec) -> detectors.Detector:
        """A fresh detector of ``spec`` for a signal of ``kind``, with the monitor's parameters and family."""
        params = {**reference_params(REGISTRY.get(spec.name), kind), **spec.params}
        return detectors.build(DetectorSpec(spec.name, params), family_tests=self.family_tests(kind))


def detector_set(names: Sequence[str] | None = None) -> DetectorSet:
    """The default set; with ``names``, those detectors for each kind they watch (others keep defaults)."""
    specs = {kind: tuple(detectors.default_specs(kind)) for kind in SIGNAL_KINDS}
    if names:
        unknown = [name for name in names if name not in REGISTRY]
        if unknown:
            raise SystemExit(f"unknown detector(s) {', '.join(unknown)}; "
                             f"registered: {', '.join(sorted(REGISTRY))}")
        for kind in SIGNAL_KINDS:
            chosen = tuple(DetectorSpec(name) for name in names if REGISTRY[name].kind == kind)
            if chosen:
                specs[kind] = chosen
    return DetectorSet(specs)


# -- the bound ------------------------------------------------------------------


def bound(scenario: Scenario, h: float) -> float | None:
    """Values after the change until the summed KL reaches ``h`` (h / KL for a constant KL)."""
    profile = scenario.kl_profile(scenario.horizon)
    if profile is None:
        return None
    total = np.cumsum(profile)
    reached = int(np.searchsorted(total, h))
    if reached >= total.size:
        return None
    before = total[reached - 1] if reached else 0.0
    return reached + (h - before) / profile[reached]


def mean_path_oracle(scenario: Scenario, h: float, seeds: int = 200) -> tuple[float, float, float]:
    """Delay of an oracle that knows a mean change's path: median, 10th and 90th percentiles over seeds.

    The change is a mean shift of a unit-variance Gaussian by ``m_t`` after
    ``t`` values (``m_t = sqrt(2 KL_t)``); the oracle sums its log-likelihood
    ratio ``m_t x_t - m_t^2 / 2`` from the onset and stops when it exceeds ``h``.
    A seed that never does counts as the horizon.
    """
    mean = np.sqrt(2.0 * scenario.kl_profile(scenario.horizon))
    delays = []
    for seed in range(seeds):
        noise = np.random.default_rng([seed, 7]).standard_normal(mean.size)
        crossed = np.cumsum(mean * (noise + mean) - mean * mean / 2.0) > h
        delays.append(int(np.argmax(crossed)) + 1 if crossed.any() else scenario.horizon)
    return float(np.median(delays)), float(np.percentile(delays, 10)), float(np.percentile(delays, 90))


# -- delays ---------------------------------------------------------------------


def batches(values: np.ndarray, stop: int | None = None) -> Iterable[tuple[int, np.ndarray | list]]:
    """(start, batch) in batches of :data:`BATCH` up to ``stop``; categories as a list (as the monitor gives)."""
    end = len(values) if stop is None else min(stop, len(values))
    for start in range(0, end, BATCH):
        batch = values[start : min(start + BATCH, end)]
        yield start, (batch.tolist() if batch.dtype == object else batch)


def first_detection(detector: detectors.Detector, values: np.ndarray, change: int,
                    stop: int) -> tuple[int | None, int]:
    """(position of the first detection at or after ``change`` and before ``stop``, detections before it)."""
    early = 0
    for start, batch in batches(values, stop):
        for detection in detector.update(batch):
            position = start + detection.index
            if position < change:
                early += 1
            else:
                return position, early
    return None, early


@dataclass
class Run:
    """One scenario and seed: the delay per detector (``MISSED`` when not detected) and early alarms."""

    delays: dict[str, float]
    early: int

    @property
    def set_delay(self) -> float:
        return min(self.delays.values(), default=MISSED)


def run_detectors(scenario: Scenario, seed: int, dset: DetectorSet, change: int = CHANGE) -> Run:
    """The scenario's changed signals through the set's detectors, directly on numpy arrays."""
    streams = scenario.generate(seed, change + scenario.horizon, change)
    signals = streams.signals()
    delays: dict[str, float] = {}
    early = 0
    for signal in scenario.signals:
        kind, values = signals[signal]
        for spec in dset.specs[kind]:
            position, before = first_detection(dset.build(kind, spec), values, change, change + scenario.horizon)
            early += before
            delay = MISSED if position is None else position - change + 1
            delays[spec.name] = min(delays.get(spec.name, MISSED), delay)
    return Run(delays, early)


def run_labelled(scenario: Scenario, seed: int, dset: DetectorSet, change: int = CHANGE,
                 label_delay: int = LABEL_DELAY) -> Run:
    """The error-rate change through the pipeline: predictions, labels ``label_delay`` events late, the join.

    Only ``performance:*`` signals are monitored (the features are in every event,
    so the model's family is the full 22 signals, as the service would count it).
    A delay counts labelled predictions after the change (the pair's ``n_seen``).
    """
    from stream_monitor.config import DetectorSpecModel, ModelRule, Settings
    from stream_monitor.events import LabelEvent, PredictionEvent
    from stream_monitor.monitor import Record
    from stream_monitor.pipeline import LabelRecord, Pipeline

    kind = scenario.kind
    rule = ModelRule(signals=["performance:*"], detectors={
        kind: [DetectorSpecModel(name=spec.name, params=dict(spec.params)) for spec in dset.specs[kind]]})
    pipeline = Pipeline(Settings(models=[rule]), join_labels=True)
    size = change + scenario.horizon
    streams = scenario.generate(seed, size, change)
    names = [spec.name for spec in dset.specs[kind]]
    found: dict[str, float] = {}
    early = 0
    items: list[Record | LabelRecord] = []
    for event, label in _joined_input(streams, size + label_delay, label_delay):
        if event is not None:
            items.append(Record(PredictionEvent(*event)))
        if label is not None:
            items.append(LabelRecord(LabelEvent(*label)))
        if len(items) < BATCH:
            continue
        early += _collect(pipeline.process(items), scenario.signals[0], change, size, found)
        items.clear()
        if len(found) == len(names):
            break
    else:
        early += _collect(pipeline.process(items), scenario.signals[0], change, size, found)
    return Run({name: found.get(name, MISSED) for name in names}, early)


def _joined_input(streams: Streams, steps: int,
                  label_delay: int) -> Iterable[tuple[tuple | None, tuple | None]]:
    """Per step t: the prediction of event t (while there are events), then the label of event t - label_delay.

    One event per second; a label's time is its event's plus ``label_delay``
    seconds, so it ties with prediction t and the merge order is the one replay uses.
    """
    t0 = 1_764_000_000.0
    size = streams.errors.size
    columns = {name.removeprefix("feature:"): values for name, values in
               {**streams.numeric, **streams.categorical}.items() if name != "prediction"}
    rows = [dict(zip(columns, values)) for values in zip(*(column.tolist() for column in columns.values()))]
    predictions = streams.numeric["prediction"].tolist()
    labels = streams.labels.tolist()
    for t in range(steps):
        event = (f"e{t}", "model", "1", t0 + t, rows[t], predictions[t]) if t < size else None
        late = t - label_delay
        label = (f"e{late}", "model", labels[late], t0 + t) if 0 <= late < size else None
        yield event, label


def _collect(alerts: Iterable, signal: str, change: int, stop: int, found: dict[str, float]) -> int:
    """Record each detector's first alert on ``signal`` at or after ``change``; return the alerts before it."""
    early = 0
    for alert in alerts:
        if alert.signal != signal or alert.detector in found or alert.n_seen >= stop:
            continue
        if alert.n_seen < change:
            early += 1
        else:
            found[alert.detector] = alert.n_seen - change + 1
    return early


def run(scenario: Scenario, seed: int, dset: DetectorSet, change: int = CHANGE) -> Run:
    """One scenario and seed, by the path its change needs."""
    return (run_labelled if scenario.labelled else run_detectors)(scenario, seed, dset, change)


# -- false alarms ---------------------------------------------------------------


@dataclass
class FalseAlarms:
    """Alarms on stationary streams, and the values seen, per (detector, signal)."""

    alarms: dict[tuple[str, str], int]
    values: dict[tuple[str, str], int]
    events: int
    runs: int

    @property
    def signal_values(self) -> int:
        """Values of the model's signals (features and prediction; the error stream is extra)."""
        return self.events * N_SIGNALS


def signal_group(signal: str) -> str:
    """What a stationary signal is: its feature's shape, ``prediction``, ``categories`` or ``errors``."""
    if signal.startswith("feature:f"):
        return scenarios.feature_shape(int(signal.removeprefix("feature:f")))
    return {"feature:cat": "categories", "performance:error_rate": "errors"}.get(signal, signal)


def false_alarms(dset: DetectorSet, signal_values: int, runs: int, first_seed: int = 1000,
                 chunk: int = 50_000) -> FalseAlarms:
    """Run the set over ``runs`` stationary streams of the model, ``signal_values`` values in all."""
    events = max(1, math.ceil(signal_values / N_SIGNALS / runs))
    alarms: dict[tuple[str, str], int] = {}
    seen: dict[tuple[str, str], int] = {}
    for run_index in range(runs):
        watchers: dict[str, list[tuple[str, detectors.Detector]]] = {}
        for start in range(0, events, chunk):
            size = min(chunk, events - start)
            streams = scenarios.stationary((first_seed + run_index, start), size)
            signals = {**streams.signals(), "performance:error_rate": ("error", streams.errors)}
            for signal, (kind, values) in signals.items():
                if signal not in watchers:
                    watchers[signal] = [(spec.name, dset.build(kind, spec)) for spec in dset.specs[kind]]
                for name, detector in watchers[signal]:
                    key = (name, signal)
                    for _, batch in batches(values):
                        count = len(detector.update(batch))
                        if count:
                            alarms[key] = alarms.get(key, 0) + count
                    seen[key] = seen.get(key, 0) + size
    return FalseAlarms(alarms, seen, events * runs, runs)


# -- the report -----------------------------------------------------------------


def summarise(delays: Sequence[float], horizon: int) -> str:
    """``median [min-max] (k missed)`` of one detector's delays over seeds."""
    if not delays:
        return "."
    detected = [d for d in delays if d != MISSED]
    missed = len(delays) - len(detected)
    median = statistics.median(sorted(delays, key=lambda d: (d == MISSED, d)))
    if median == MISSED or math.isnan(median):
        text = f">{horizon}"
    else:
        text = f"{median:g}"
    if detected:
        text += f" [{int(min(detected))}-{int(max(detected))}]"
    if missed:
        text += f" ({missed} missed)"
    return text


def delay_table(results: dict[str, list[Run]], dset: DetectorSet, chosen: Sequence[Scenario]) -> str:
    names = dset.names()
    header = ["change", "bound", *names, "set"]
    rows = [header]
    for scenario in chosen:
        runs = results[scenario.name]
        limit = bound(scenario, dset.threshold_nats(scenario.kind))
        cells = [scenario.description, "-" if limit is None else f"{limit:.0f}"]
        for name in names:
            cells.append(summarise([r.delays[name] for r in runs if name in r.delays], scenario.horizon))
        cells.append(summarise([r.set_delay for r in runs], scenario.horizon))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-|-".join("-" * width for width in widths))
    return "\n".join(lines)


def false_alarm_table(result: FalseAlarms, dset: DetectorSet) -> str:
    """Alarms per detector and kind of stationary signal, beside each detector's budget, then the set's."""
    lines = [f"false alarms: {result.runs} stationary runs x {result.events // result.runs:,} events = "
             f"{result.signal_values:,} values of the {N_SIGNALS} signals (the error stream besides)",
             f"{'detector':16} {'signals':18} {'values':>13} {'alarms':>7} {'per 1e8 values':>15} "
             f"{'budget per 1e8':>15}"]
    for kind in SIGNAL_KINDS:
        for spec in dset.specs[kind]:
            # group -> [values, alarms, signals]
            groups: dict[str, list[int]] = {}
            for (name, signal), values in result.values.items():
                if name == spec.name:
                    group = groups.setdefault(signal_group(signal), [0, 0, 0])
                    group[0] += values
                    group[1] += result.alarms.get((name, signal), 0)
                    group[2] += 1
            # each detector targets one false alarm per DEFAULT_ARL * family_tests values
            budget = 1e8 / (DEFAULT_ARL * dset.family_tests(kind))
            for group_name, (values, count, signals) in groups.items():
                lines.append(f"{spec.name:16} {f'{group_name} x{signals}':18} {values:13,} {count:7} "
                             f"{count / values * 1e8:15.2f} {budget:15.2f}")
    total = sum(result.alarms.values())
    budget = result.events / DEFAULT_ARL
    lines.append(f"set: {total} alarm(s) = {total / result.signal_values * 1e8:.2f} per 1e8 signal-values; "
                 f"budget 1 per {DEFAULT_ARL:.0e} events per model = {budget:.3g} alarm(s) over these "
                 f"{result.events:,} events")
    for (name, signal), count in sorted(result.alarms.items()):
        lines.append(f"  {name} on {signal} ({signal_group(signal)}): {count}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Detection delay per change type beside the information "
                                     "bound, and false alarms, on the 22-signal model.")
    parser.add_argument("--quick", action="store_true", help="3 seeds, 10^6 false-alarm signal-values")
    parser.add_argument("--full", action="store_true", help="20 seeds, 10^9 false-alarm signal-values (~10 min)")
    parser.add_argument("--seeds", type=int, help="seeds per change type (default 10)")
    parser.add_argument("--detectors", help="comma-separated detector names replacing the default set of "
                        "each kind they watch")
    parser.add_argument("--scenarios", help=f"comma-separated subset of {','.join(s.name for s in SCENARIOS)}")
    parser.add_argument("--false-alarm-values", type=float, help="stationary signal-values (0: skip)")
    parser.add_argument("--change", type=int, default=CHANGE,
                        help=f"event of the first changed value (default {CHANGE:,}; must be past every "
                        "detector's warm-up)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 20 if args.full else 10)
    fa_values = args.false_alarm_values
    if fa_values is None:
        fa_values = 1e6 if args.quick else 1e9 if args.full else 1e8
    dset = detector_set(args.detectors.split(",") if args.detectors else None)
    chosen = list(SCENARIOS)
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = sorted(set(wanted) - {s.name for s in SCENARIOS})
        if unknown:
            raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}")
        chosen = [s for s in SCENARIOS if s.name in wanted]

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    for kind in SIGNAL_KINDS:
        names = ", ".join(spec.name for spec in dset.specs[kind]) or "none"
        print(f"{kind:12} {names}: family_tests {dset.family_tests(kind)}, "
              f"h = {dset.threshold_nats(kind):.1f} nats")
    print(f"change at event {args.change:,}; {seeds} seeds; delay = values from the change to the first detection "
          f"(error rate: labelled predictions, labels {LABEL_DELAY} events late)\n")

    started = time.perf_counter()
    results: dict[str, list[Run]] = {}
    for scenario in chosen:
        results[scenario.name] = [run(scenario, seed, dset, args.change) for seed in range(1, seeds + 1)]
    print(delay_table(results, dset, chosen))
    print("KL per value after the change: " + ", ".join(
        f"{s.name} {s.kl_profile(1)[0]:.3g}" for s in chosen if s.kl is not None and not callable(s.kl)))
    for scenario in chosen:
        if scenario.name == "ramp":
            h = dset.threshold_nats(scenario.kind)
            median, low, high = mean_path_oracle(scenario, h)
            print(f"ramp: an oracle knowing its onset and slope needs a median {median:.0f} values "
                  f"[10-90%: {low:.0f}-{high:.0f}, 200 seeds] at h = {h:.1f} nats (the bound, "
                  f"{bound(scenario, h):.0f}, by simulation)")
    early = {name: sum(r.early for r in runs) for name, runs in results.items() if any(r.early for r in runs)}
    if early:
        print("detections before the change (false alarms): " + ", ".join(f"{k} {v}" for k, v in early.items()))
    print(f"({time.perf_counter() - started:.0f} s)\n")

    if fa_values > 0:
        started = time.perf_counter()
        # one stationary run per 10^7 signal-values (each with its own warm-up references), 2 to 100
        runs = max(2, min(100, int(fa_values // 1e7)))
        print(false_alarm_table(false_alarms(dset, int(fa_values), runs), dset))
        print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
