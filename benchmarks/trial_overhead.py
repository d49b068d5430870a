"""Benchmark: a trial's time outside `model.fit`, data load time, and memory over many trials.

Runs the real search loop in this process on a fixed architecture (every trial the same model),
so the figures isolate atelier's own cost. Prints one line per trial and a summary.

    .venv/bin/python benchmarks/trial_overhead.py --objective fashion-mnist --trials 5 --epochs 1
    .venv/bin/python benchmarks/trial_overhead.py --objective digits --trials 100 --epochs 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXED_CNN = """
[params]
conv_blocks = 2
conv_filters = {choices = [32, 64]}
dense_layers = 1
dense_units = 128
"""


def rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="fashion-mnist")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--trials-per-process", type=int, default=5)
    args = parser.parse_args()

    from search.config.objectives import load_objective
    from search.config.spaces import load_space
    from search.data import load_search_data
    from search.engine.study import open_study, optimize
    from search.engine.trial import SearchContext, SearchPlan
    from search.record.store import Store
    from search.record.tracking import dataset_inputs

    folder = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    space_file = folder / "fixed-cnn.toml"
    space_file.write_text(FIXED_CNN)
    objective = replace(
        load_objective(args.objective),
        trials=args.trials,
        max_epochs=args.epochs,
        pruner="none",
        sampler="random",
        timeout=None,
    )
    space = load_space(str(space_file))
    started = time.perf_counter()
    data = load_search_data(objective)
    print(f"data load: {time.perf_counter() - started:.2f} s for {len(data.train)} + {len(data.val)} images")

    store = Store(folder / "mlruns")
    storage = store.storage()
    study = open_study("bench", storage, objective, space)
    context = SearchContext.connect(SearchPlan("bench", objective, space, data, store, dataset_inputs(data)))
    peaks: list[float] = []

    def record(report) -> None:
        s = report.summary
        peaks.append(s["peak_rss_mb"])
        outside = s["trial_seconds"] - s["fit_seconds"]
        print(
            f"trial {report.number:3d}: fit {s['fit_seconds']:6.2f} s  trial {s['trial_seconds']:6.2f} s  "
            f"outside fit {outside:5.2f} s ({100 * outside / s['trial_seconds']:.1f}%)  "
            f"worker peak rss {s['peak_rss_mb']:.0f} MB",
            flush=True,
        )

    search_started = time.perf_counter()
    optimize(context, study, storage, record, trials_per_process=args.trials_per_process)
    wall = time.perf_counter() - search_started
    trials = study.get_trials()
    fit_total = sum(t.user_attrs["fit_seconds"] for t in trials)
    outside = [t.user_attrs["trial_seconds"] - t.user_attrs["fit_seconds"] for t in trials]
    shares = [o / t.user_attrs["trial_seconds"] for o, t in zip(outside, trials, strict=True)]
    print(
        f"outside fit, within trials: median {statistics.median(outside):.3f} s, "
        f"median share {100 * statistics.median(shares):.2f}%, max share {100 * max(shares):.2f}%"
    )
    print(
        f"whole search: {wall:.1f} s wall, {fit_total:.1f} s in model.fit: "
        f"{100 * (wall - fit_total) / wall:.2f}% outside fit (process recycling included)"
    )
    for n in (5, 30, 100):
        if n <= len(peaks):
            print(f"worker peak rss after {n} trials: {peaks[n - 1]:.0f} MB")
    if len(peaks) >= 5:
        print(
            f"largest worker peak after trial 5: {max(peaks[4:]):.0f} MB "
            f"({max(peaks[4:]) - peaks[4]:+.0f} MB against trial 5)"
        )
    print(f"this (parent) process: {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
