"""Memory of the default numeric detectors: per signal, at 10k signals, and in checkpoints.

Usage::

    .venv/bin/python bench/memory.py [--against REV] [--signals 200] [--values 20000]
                                     [--rss-signals 10000] [--rss-values 5000] [--no-rss]

Three figures (issue 13's memory targets):

1. **Bytes per numeric signal at steady state** (tracemalloc): ``--signals``
   signals, each with the default numeric set (``default_specs("numeric")``,
   ``family_tests=44``), fed ``--values`` values (at least 20,000) in
   batches of 1,000. The signals rotate through Gaussian, lognormal,
   Poisson(3) counts and scores in (0, 1), and one in four shifts its mean by
   one standard deviation half way, so detections, re-arms and fresh
   references are part of the steady state. What the detectors hold is what
   deleting them frees, divided by the number of signals; what stays after
   that is shared by every signal (caches of parameter-only arrays and of
   calibrations, bounded whatever the number of signals). Each detector of
   the set is also measured alone.
2. **RSS of a process monitoring ``--rss-signals`` numeric signals**: a fresh
   interpreter builds a :class:`~stream_monitor.monitor.Monitor` (with
   metrics, as the service runs it) for one model whose events carry that
   many numeric features, and feeds it batches of events until every signal
   has ``--rss-values`` values (past every warm-up); ``VmRSS`` and ``VmHWM``
   from ``/proc/self/status`` beside the 500 MiB target, and ``VmRSS`` once
   glibc's ``malloc_trim(0)`` has returned the heap's free pages (memory
   freed, mostly the warm-up buffers every signal holds at once at the
   start, that the heap keeps because live allocations sit between the holes).
   The run fixes glibc's mmap threshold first, as ``stream-monitor run``
   does (stream_monitor/runtime/allocator.py); a second run of this tree
   with glibc's defaults (the column "glibc defaults") shows what that saves.
3. **Checkpoint bytes per numeric signal**: ``json.dumps`` of every
   detector's ``state_dict()`` at the end of (1), median and largest per
   signal, and the median after 1,500 values, while the references fill (a
   checkpoint then holds the values collected); with (2), the JSON of the
   Monitor's ``version_state()`` per signal (what the changelog stores).

``--against REV`` measures (1) and (3), and (2) when it runs, on the code of
git revision ``REV`` too (extracted to a temporary directory, in another
process), and prints both side by side: the figures before a change and
after it in one run. The exit status is 0 unless a measurement crashes; a
missed target is printed as FAIL.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: issue 13: bytes per numeric signal at steady state
PER_SIGNAL_TARGET = 30 * 1024
#: issue 13: RSS of a process monitoring 10k numeric signals
RSS_TARGET = 500 * 1024 * 1024
BATCH = 1000
FAMILY_TESTS = 44
#: values after which the checkpoint of a signal still collecting its references is measured
WARMING = 1_500
SHAPES = ("gaussian", "lognormal", "poisson", "score")


def signal_values(signal: int, size: int) -> np.ndarray:
    """The values of signal number ``signal``: a shape by rotation; one in four shifts half way."""
    rng = np.random.default_rng(1000 + signal)
    shape = SHAPES[signal % len(SHAPES)]
    if shape == "gaussian":
        values = rng.normal(10.0, 2.0, size)
    elif shape == "lognormal":
        values = rng.lognormal(0.0, 0.8, size)
    elif shape == "poisson":
        values = rng.poisson(3.0, size).astype(np.float64)
    else:
        values = rng.beta(2.0, 5.0, size)
    if signal % 4 == 3:  # a shift of one standard deviation half way: detections and re-arms
        values[size // 2 :] += float(np.std(values[: size // 2]))
    return values


def _detector_sets(names: list[str] | None, signals: int) -> list[list[Any]]:
    from stream_monitor.detectors import DetectorSpec, build, default_specs

    specs = default_specs("numeric") if names is None else [DetectorSpec(name) for name in names]
    return [[build(spec, family_tests=FAMILY_TESTS) for spec in specs] for _ in range(signals)]


def held_memory(names: list[str] | None, signals: int, values: int) -> dict[str, Any]:
    """Bytes the detectors of ``signals`` signals hold after ``values`` values each, and shared bytes.

    ``names`` None: the default numeric set. Also the checkpoint bytes per
    signal (JSON of every detector's ``state_dict()``).
    """
    streams = [signal_values(signal, values) for signal in range(signals)]
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    sets = _detector_sets(names, signals)
    for detectors, stream in zip(sets, streams):
        for position in range(0, values, BATCH):
            batch = stream[position : position + BATCH]
            for detector in detectors:
                detector.update(batch)
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - start
    state_bytes = [sum(len(json.dumps(d.state_dict())) for d in detectors) for detectors in sets]
    names_out = [d.name for d in sets[0]]
    del sets
    gc.collect()
    shared = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    # a checkpoint while the references are collected holds their values
    warming = _detector_sets(names, min(signals, 20))
    for detectors, stream in zip(warming, streams):
        for detector in detectors:
            detector.update(stream[:WARMING])
    warming_bytes = [sum(len(json.dumps(d.state_dict())) for d in detectors) for detectors in warming]
    return {
        "detectors": names_out,
        "per_signal": (total - shared) / signals,
        "shared": shared,
        "state_median": statistics.median(state_bytes),
        "state_max": max(state_bytes),
        "state_warming": statistics.median(warming_bytes),
    }


def _vm(field: str) -> int:
    """A ``/proc/self/status`` size in bytes (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trimmed_rss() -> int | None:
    """VmRSS after glibc's ``malloc_trim(0)`` returns the heap's free pages (None without glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return _vm("VmRSS")


def monitor_rss(signals: int, values: int, batch_events: int, allocator: bool = True) -> dict[str, Any]:
    """RSS of a Monitor of one model with ``signals`` numeric features after ``values`` events.

    With ``allocator``, glibc's mmap threshold is fixed first, as ``stream-monitor
    run`` does at start (a revision without that setting measures as without).
    """
    from prometheus_client import CollectorRegistry

    from stream_monitor.config import Settings
    from stream_monitor.events import PredictionEvent
    from stream_monitor.metrics import Metrics
    from stream_monitor.monitor import Monitor, Record

    tuned = "glibc defaults"
    if allocator:
        try:
            from stream_monitor.runtime.allocator import tune_allocator
        except ImportError:
            tuned = "none in this revision"
        else:
            tuned = tune_allocator()
    settings = Settings(limits={"max_signals_per_model": signals, "max_features": signals})
    rss_imported = _vm("VmRSS")
    monitor = Monitor(settings, Metrics(CollectorRegistry()))
    names = [f"f{signal:05d}" for signal in range(signals)]
    rng = np.random.default_rng(7)
    centres = rng.normal(0.0, 5.0, signals)
    spreads = rng.uniform(0.5, 3.0, signals)
    counted = 0
    alerts = 0
    cpu = time.process_time()
    while counted < values:
        size = min(batch_events, values - counted)
        block = rng.standard_normal((size, signals)) * spreads + centres
        # a quarter of the features are counts (ties), as real features often are
        block[:, ::4] = np.floor(np.abs(block[:, ::4]))
        records = [
            Record(PredictionEvent(f"e{counted + row}", "wide", "1", 1.7e9 + counted + row,
                                   dict(zip(names, line)), None))
            for row, line in enumerate(block.tolist())
        ]
        alerts += len(monitor.process(records))
        counted += size
        del records, block
    cpu = time.process_time() - cpu
    gc.collect()
    checkpoint = len(json.dumps(monitor.version_state(("wide", "1"))))
    rss = _vm("VmRSS")
    return {
        "signals": signals,
        "values": values,
        "allocator": tuned,
        "rss_imported": rss_imported,
        "rss": rss,
        "hwm": _vm("VmHWM"),
        "rss_trimmed": _trimmed_rss(),
        "alerts": alerts,
        "cpu_s": cpu,
        "checkpoint": checkpoint,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure on the code this interpreter imports."""
    from stream_monitor.detectors import default_specs

    out: dict[str, Any] = {"set": held_memory(None, args.signals, args.values), "alone": {}}
    for spec in default_specs("numeric"):
        out["alone"][spec.name] = held_memory([spec.name], args.signals, args.values)
    return out


def _child(mode: str, pythonpath: Path, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter importing the code under ``pythonpath``."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
               "--signals", str(args.signals), "--values", str(args.values),
               "--rss-signals", str(args.rss_signals), "--rss-values", str(args.rss_values),
               "--batch-events", str(args.batch_events), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"measurement {mode} under {pythonpath} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _extract(rev: str, into: Path) -> Path:
    """The ``stream_monitor`` package of git revision ``rev`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "stream_monitor"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _kib(size: float) -> str:
    return f"{size / 1024:9.1f} KiB"


def _mib(size: float) -> str:
    return f"{size / 2**20:8.1f} MiB"


def _report(label: str, runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    columns = list(runs)
    head = "".join(f"{name:>16}" for name in columns)
    print(f"\n{label}\n{'':44}{head}")

    def row(text: str, values: list[str]) -> None:
        print(f"{text:44}" + "".join(f"{value:>16}" for value in values))

    sets = {name: run["memory"]["set"] for name, run in runs.items() if "memory" in run}
    if sets:
        first = next(iter(sets.values()))
        print(f"default numeric set {first['detectors']}, {args.signals} signals x {args.values} values, "
              f"batches of {BATCH}, family_tests={FAMILY_TESTS}")
        row("held per signal (tracemalloc)", [_kib(s["per_signal"]) for s in sets.values()])
        row("shared by all signals (caches)", [_kib(s["shared"]) for s in sets.values()])
        row("per signal at 10k signals (held + shared/10k)",
            [_kib(s["per_signal"] + s["shared"] / 10_000) for s in sets.values()])
        for name in first["detectors"]:
            alone = [run["memory"]["alone"][name] for run in runs.values() if "memory" in run]
            row(f"  {name} alone: held per signal", [_kib(a["per_signal"]) for a in alone])
            row(f"  {name} alone: shared", [_kib(a["shared"]) for a in alone])
        row("state_dict() JSON per signal, median", [f"{s['state_median']:,.0f} B" for s in sets.values()])
        row("state_dict() JSON per signal, largest", [f"{s['state_max']:,.0f} B" for s in sets.values()])
        row(f"  ... after {WARMING:,} values (references filling)",
            [f"{s['state_warming']:,.0f} B" for s in sets.values()])
        last = sets["this tree"]
        verdict = last["per_signal"] + last["shared"] / 10_000 <= PER_SIGNAL_TARGET
        print(f"  -> {'PASS' if verdict else 'FAIL'}: at most {PER_SIGNAL_TARGET // 1024} KiB per numeric "
              f"signal at steady state (this tree)")
    rss = {name: run["rss"] for name, run in runs.items() if "rss" in run}
    if rss:
        first = next(iter(rss.values()))
        print(f"Monitor with metrics, one model of {first['signals']:,} numeric features, "
              f"{first['values']:,} events (values per signal), batches of {args.batch_events} events")
        row("glibc mmap threshold (runtime/allocator.py)", [str(r.get("allocator", "n/a"))[:15]
                                                            for r in rss.values()])
        row("RSS after imports", [_mib(r["rss_imported"]) for r in rss.values()])
        row("RSS at steady state (VmRSS)", [_mib(r["rss"]) for r in rss.values()])
        row("peak RSS (VmHWM)", [_mib(r["hwm"]) for r in rss.values()])
        row("RSS after malloc_trim(0) (heap's free pages)",
            [_mib(r["rss_trimmed"]) if r.get("rss_trimmed") else "n/a" for r in rss.values()])
        row("(RSS - after imports) per signal", [_kib((r["rss"] - r["rss_imported"]) / r["signals"])
                                                 for r in rss.values()])
        row("alerts", [str(r["alerts"]) for r in rss.values()])
        row("Monitor.version_state() JSON per signal", [f"{r['checkpoint'] / r['signals']:,.0f} B"
                                                       for r in rss.values()])
        row("CPU seconds feeding", [f"{r['cpu_s']:.1f} s" for r in rss.values()])
        last = rss["this tree"]
        print(f"  -> {'PASS' if last['rss'] <= RSS_TARGET else 'FAIL'}: at most "
              f"{RSS_TARGET // 2**20} MiB RSS at {last['signals']:,} signals (this tree, as run sets glibc)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Memory of the default numeric detectors (issue 13).")
    parser.add_argument("--signals", type=int, default=200, help="signals measured with tracemalloc")
    parser.add_argument("--values", type=int, default=20_000, help="values per signal (at least 20,000)")
    parser.add_argument("--rss-signals", type=int, default=10_000, help="numeric signals of the RSS run")
    parser.add_argument("--rss-values", type=int, default=5_000, help="values per signal of the RSS run")
    parser.add_argument("--batch-events", type=int, default=250, help="events per batch of the RSS run")
    parser.add_argument("--no-rss", action="store_true", help="skip the RSS run")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="RSS run only: leave glibc's mmap threshold dynamic (what run sets is not set)")
    parser.add_argument("--against", metavar="REV", help="also measure git revision REV (before/after)")
    parser.add_argument("--child", choices=("memory", "rss"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "memory":
        print(json.dumps(measure(args)))
        return 0
    if args.child == "rss":
        print(json.dumps(monitor_rss(args.rss_signals, args.rss_values, args.batch_events,
                                     allocator=not args.glibc_defaults)))
        return 0
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this tree": ROOT}
        if args.against:
            trees = {args.against[:12]: _extract(args.against, Path(scratch)), "this tree": ROOT}
        runs: dict[str, dict[str, Any]] = {name: {} for name in trees}
        for name, tree in trees.items():
            runs[name]["memory"] = _child("memory", tree, args)
            if not args.no_rss:
                runs[name]["rss"] = _child("rss", tree, args)
        if not args.no_rss:  # the same code with glibc's dynamic mmap threshold: the allocator setting's effect
            runs["glibc defaults"] = {"rss": _child("rss", ROOT, args, "--glibc-defaults")}
    _report("Memory (issue 13 targets)", runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
