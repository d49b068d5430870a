"""`atelier promote` as one function: a study's trial rebuilt, refitted or reloaded, tested once, gated, registered.

The stage (`stage.py`) reads the records and the images, the contender (`contender.py`) is the trial's model,
and `judge.py` evaluates it once, gates it and records it; `atelier best` judges its ensemble the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from search.errors import SetupError
from search.paths import check_name
from search.record.store import Store
from search.release.contender import trial_contender
from search.release.judge import Promotion, judge
from search.release.source import Source, find_source
from search.release.stage import open_stage

Say = Callable[[str], None]


def promote(
    store: Store,
    study_name: str | None = None,
    trial_number: int | None = None,
    refit: bool | None = None,
    model_name: str | None = None,
    data_dir: Path | None = None,
    refit_seconds: float | None = None,
    say: Say = lambda line: None,
) -> Promotion:
    """Rebuild, train or reload, evaluate once on the test split, gate, and register the trial's model.

    `refit` defaults to whether the study searched on a subsample; `refit_seconds` replaces the objective's
    `[promotion] refit_seconds`. Every check that can fail on bad input runs before anything is written to
    the store or registry.
    """
    if refit_seconds is not None and not 0 < refit_seconds < math.inf:
        raise SetupError(f"--refit-seconds {refit_seconds} must be a positive number of seconds, e.g. 240")
    source = _checked_source(store, study_name, trial_number, model_name)
    objective = source.objective
    refit = objective.data.subsample != 1.0 if refit is None else refit
    refit_seconds = objective.refit_seconds if refit_seconds is None else refit_seconds
    stage = open_stage(store, source, model_name, data_dir, every_image=refit, with_validation=refit)
    started = time.perf_counter()
    contender = trial_contender(stage, refit, refit_seconds, say)
    return judge(stage, contender, started, say)


def _checked_source(store: Store, study_name: str | None, trial_number: int | None, model_name: str | None) -> Source:
    """The trial to promote, after the names given are checked and the store is found."""
    for name, flag in ((study_name, "--study"), (model_name, "--model-name")):
        if name is not None:
            check_name(name, flag)
    store.check_tracking_exists()
    return find_source(store.existing_storage(), study_name, trial_number)
