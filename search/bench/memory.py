"""The bench's memory figures: a training process's peak RSS after N trials, atelier's loop against KerasTuner's.

Each library runs in a freshly spawned interpreter, with tiny trials (one epoch on a small stratified
subsample) so that 100 trials take minutes:
- atelier: `search.engine.study.optimize`, its real loop with one worker (recycled every
  `TRIALS_PER_PROCESS` trials), recording to a throw-away store; the figure is the peak RSS of the
  worker process that ran trial N, as the worker reports it;
- KerasTuner: one process running `RandomSearch.search` on the same space (through
  `SpaceHyperModel`); the figure is that process's peak RSS when trial N has ended. Random search,
  because `BayesianOptimization` refits its Gaussian process before every trial, which at 100
  trials takes longer than the tiny trials themselves and says nothing about memory.

Both also give the wall time per trial outside `model.fit`: the whole search's wall time, less
the time inside fits, over the trials run (for atelier this includes starting worker processes and
recording each trial in MLflow and Optuna).
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd

from search.config.objectives import Objective
from search.config.spaces import Space

IMAGES = 2000  # the stratified subsample the memory runs train on


def measure_memory(objective: Objective, space: Space, data_dir: Path | None, counts: Sequence[int]) -> pd.DataFrame:
    """One row per library: peak RSS in MB after each count of trials, and the wall time per trial outside fit."""
    tiny = replace(
        objective, data=replace(objective.data, subsample=IMAGES), trials=max(counts), max_epochs=1, timeout=None
    )
    rows = []
    for library, measure in (("atelier", _atelier), ("kerastuner", _kerastuner)):
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            peaks, outside = pool.submit(measure, tiny, space, data_dir).result()
        row: dict[str, object] = {"library": library, "trials": len(peaks)}
        row |= {f"rss_mb_after_{n}": round(peaks[n - 1]) if n <= len(peaks) else None for n in counts}
        row["outside_fit_s_per_trial"] = round(outside, 3)
        rows.append(row)
    return pd.DataFrame(rows)


def _atelier(objective: Objective, space: Space, data_dir: Path | None) -> tuple[list[float], float]:
    from search.data import load_search_data
    from search.engine.plan import SearchContext, SearchPlan, TrialReport
    from search.engine.study import open_study, optimize
    from search.record.store import Store
    from search.record.tracking import dataset_inputs

    data = load_search_data(objective, data_dir)
    reports: list[TrialReport] = []
    with tempfile.TemporaryDirectory(prefix="atelier-memory-") as folder:
        store = Store(Path(folder) / "mlruns")
        storage = store.storage()
        study = open_study("memory", storage, objective, space, data_dir)
        context = SearchContext.connect(SearchPlan("memory", objective, space, data, store, dataset_inputs(data)))
        started = time.perf_counter()
        optimize(context, study, storage, reports.append, workers=1, on_note=lambda note: None)
        wall = time.perf_counter() - started
    fit_seconds = sum(report.summary.get("fit_seconds", 0.0) for report in reports)
    return [report.summary["peak_rss_mb"] for report in reports], (wall - fit_seconds) / len(reports)


def _kerastuner(objective: Objective, space: Space, data_dir: Path | None) -> tuple[list[float], float]:
    import keras_tuner

    from search.bench.space_hypermodel import SpaceHyperModel
    from search.bench.strategies import kerastuner_objective, quiet  # first: it imports TensorFlow quietly
    from search.data import load_search_data
    from search.engine.trial import peak_rss_mb

    quiet()
    data = load_search_data(objective, data_dir)
    peaks: list[float] = []

    class Measured(keras_tuner.RandomSearch):
        def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
            super().on_trial_end(trial)
            peaks.append(peak_rss_mb())

    hypermodel = SpaceHyperModel(space, objective, data)
    with tempfile.TemporaryDirectory(prefix="atelier-memory-") as folder:
        tuner = Measured(
            hypermodel,
            objective=kerastuner_objective(objective),
            max_trials=objective.trials,
            seed=objective.seed,
            directory=folder,
            project_name="memory",
            overwrite=True,
            max_consecutive_failed_trials=sys.maxsize,
        )
        started = time.perf_counter()
        tuner.search(epochs=1, verbose=0)
        wall = time.perf_counter() - started
    return peaks, (wall - hypermodel.fit_seconds) / len(peaks)
