"""`atelier best`: search, train the finalists longer, ensemble them and promote the result, in one time budget.

The budget is planned before anything runs and re-planned after each phase: the search gets its
share as a deadline (trials still training then stop, pruned), the finalists share what is
left once the search is done, and the ensemble and promotion keep a reserve. Each phase is
recorded in the study's MLflow experiment: the trials, a run per finalist, the ensemble's run with
its validation figures, and the promotion run.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
from mlflow.entities import Metric, Param
from optuna.trial import FrozenTrial

from search.backend import keras
from search.errors import SetupError
from search.pipelines.ensemble import Selection, candidate_predictions, ensemble_model, select
from search.pipelines.finalists import Finalist, best_trials, finalist_figures, record_finalist, train_finalists
from search.pipelines.run import SearchRequest, resolve, run_search
from search.record.store import Store
from search.record.tracking import PARENT_TAG, Tracker
from search.release.contender import Contender
from search.release.judge import Promotion, judge
from search.release.source import find_source
from search.release.stage import Stage, open_stage

Say = Callable[[str], None]
SEARCH_SHARE = 0.4  # of the budget left after the closing reserve; the finalists get the rest
CLOSING_SECONDS, CLOSING_SHARE = 40.0, 0.05  # the ensemble and the promotion: a fixed part and a share
SEARCH_REPORT_SECONDS, SEARCH_REPORT_SHARE = 10.0, 0.05  # the study report after the deadline: at most
# 10 s or 5% of the budget
FINALIST_START_SECONDS = 15.0  # a finalist's process, data, predictions and save, outside its training time
MIN_BUDGET_SECONDS = 60.0
MIN_STRETCH = 2  # a finalist trains at least twice its trial's epochs (on every image), or fewer finalists train
UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class BudgetPlan:
    """How a budget splits into phases, in seconds."""

    total: float
    search: float
    finalists: float
    closing: float
    count: int  # finalists
    lanes: int

    @property
    def rounds(self) -> int:
        return math.ceil(self.count / self.lanes)

    def each(self, finalists_seconds: float) -> float:
        """The training time of each finalist when the finalists' phase has `finalists_seconds`."""
        return max(1.0, finalists_seconds / self.rounds - FINALIST_START_SECONDS)

    def describe(self) -> str:
        return (
            f"budget {_clock(self.total)}: search {_clock(self.search)}, {self.count} finalists "
            f"{_clock(self.finalists)} ({self.lanes} at a time, {_clock(self.each(self.finalists))} of training each), "
            f"ensemble and promotion {_clock(self.closing)}"
        )


def parse_budget(text: str) -> float:
    """Seconds of a budget written as `2h`, `90m`, `450s` or `450`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise SetupError(f"--budget {text!r} is not a time; write it as 2h, 90m, 450s or 450 (seconds)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def plan_budget(total: float, count: int | None = None, lanes: int | None = None) -> BudgetPlan:
    """The phases of a `total`-second budget; `count` finalists (default 2 under half an hour, else 4), trained
    `lanes` at a time (default: one per core)."""
    if total < MIN_BUDGET_SECONDS:
        raise SetupError(f"--budget of {total:.0f} s leaves no time to search and train; give at least 1m")
    count = count or (2 if total < 1800 else 4)
    if count < 1:
        raise SetupError(f"--finalists {count} must be at least 1")
    closing = CLOSING_SECONDS + CLOSING_SHARE * total
    search = SEARCH_SHARE * (total - closing)
    lanes = lanes or len(os.sched_getaffinity(0))
    return BudgetPlan(total, search, total - closing - search, closing, count, min(lanes, count))


def affordable(trials: list[FrozenTrial], plan: BudgetPlan, seconds: float, scale: float) -> list[FrozenTrial]:
    """The most of `trials` (best first, never fewer than one round of lanes) that each train at least
    MIN_STRETCH times their search epochs in `seconds` of finalists' time: an epoch on every image is
    estimated from the trial's own pace times `scale`, the ratio of images. Four finalists of a few
    epochs each make a weaker ensemble than two trained long enough to pass their trials."""
    for count in range(len(trials), min(plan.lanes, len(trials)), -1):
        each = replace(plan, count=count, lanes=min(plan.lanes, count)).each(seconds)
        if all(each / (_pace(t) * scale) >= MIN_STRETCH * t.user_attrs.get("epochs", 1) for t in trials[:count]):
            return trials[:count]
    return trials[: min(plan.lanes, len(trials))]


def _pace(trial: FrozenTrial) -> float:
    """A trial's seconds per epoch in the search (its fit, validation included)."""
    return trial.user_attrs.get("fit_seconds", 0.0) / max(1, trial.user_attrs.get("epochs", 1))


def _scale(subsample: float | int, every_image: int) -> float:
    """How many times more images a finalist trains on than a trial did."""
    searched = min(subsample, every_image) if subsample > 1 else subsample * every_image
    return every_image / max(1.0, searched)


@dataclass(frozen=True)
class BestResult:
    """What `atelier best` did, phase by phase."""

    plan: BudgetPlan
    seconds: dict[str, float]  # wall time of each phase
    ladder: dict[str, float]  # validation accuracy of each step
    promotion: Promotion


def run_best(
    request: SearchRequest,
    store: Store,
    budget: float,
    count: int | None = None,
    model_name: str | None = None,
    say: Say = print,
) -> BestResult:
    """Search, train the finalists, ensemble them and promote the ensemble, within `budget` seconds."""
    started = time.monotonic()
    plan = plan_budget(budget, count)
    objective, _ = resolve(request)
    say(plan.describe())
    report = min(SEARCH_REPORT_SECONDS, SEARCH_REPORT_SHARE * budget)
    searched = run_search(replace(request, ends_by=started + plan.search - report), store, say)
    seconds = {"search": time.monotonic() - started}
    say(f"search done in {_clock(seconds['search'])}; study report: {searched.study_report}")

    phase = time.monotonic()
    storage = store.existing_storage()
    trials = best_trials(optuna.load_study(study_name=searched.study_name, storage=storage), plan.count)
    if not trials:
        raise SetupError(f"the search completed no trial in {_clock(seconds['search'])}; give a longer --budget")
    stage = open_stage(
        store,
        find_source(storage, searched.study_name, None),
        model_name,
        request.data_dir,
        every_image=True,
        with_validation=False,
    )
    left = budget - (time.monotonic() - started) - plan.closing
    if count is None:
        trials = affordable(trials, plan, left, _scale(objective.data.subsample, len(stage.data.train)))
    fewer = f" (fewer than {plan.count}: more would train under {MIN_STRETCH}x their search epochs)"
    plan, planned = replace(plan, count=len(trials), lanes=min(plan.lanes, len(trials))), plan.count
    each = plan.each(left)
    say(
        f"finalists: trials {', '.join(str(t.number) for t in trials)} on {len(stage.data.train)} images, "
        f"{_clock(each)} of training each, {plan.lanes} at a time{fewer if len(trials) < planned else ''}"
    )
    study_run = Tracker(store.tracking).study_run(stage.experiment_id, searched.study_name)
    with tempfile.TemporaryDirectory() as folder:
        finalists = train_finalists(
            trials, stage.source.space, stage.data, Path(folder), each, objective.seed, plan.lanes, say
        )
        if not finalists:
            raise SetupError("no finalist finished training; see the lines above, and give a longer --budget")
        runs = [record_finalist(stage, study_run, finalist) for finalist in finalists]
        seconds["finalists"] = time.monotonic() - phase
        phase = time.monotonic()
        contender, ladder = _ensemble(stage, study_run, trials[0], finalists, runs, say)
    seconds["ensemble"] = time.monotonic() - phase
    phase = time.monotonic()
    promotion = judge(stage, contender, phase, say)
    seconds["promotion"] = time.monotonic() - phase
    seconds["total"] = time.monotonic() - started
    return BestResult(plan, seconds, ladder, promotion)


def _ensemble(
    stage: Stage, study_run: str, best: FrozenTrial, finalists: list[Finalist], runs: list[str], say: Say
) -> tuple[Contender, dict[str, float]]:
    """The finalists' ensemble as the contender to promote, recorded with its ladder of validation figures."""
    y, names = stage.data.val.y, [f.name for f in finalists]
    model, selection = ensemble_finalists(finalists, y, stage.data.input_shape, say)
    described = selection.describe(names)
    longer = next((f for f in finalists if f.trial.number == best.number), finalists[0])
    ladder = {"val_accuracy_best_trial": float(best.user_attrs.get("best_val_accuracy", float("nan")))}
    figures = finalist_figures(longer, y)
    ladder |= {
        "val_accuracy_best_trial_longer": figures["val_accuracy"],
        "val_accuracy_best_trial_longer_mirror": figures["val_accuracy_mirror"],
        "val_accuracy_ensemble": selection.val_accuracy,
    }
    run_id = _record_ensemble(stage, study_run, selection, names, runs, ladder)
    heaviest = finalists[max(selection.weights, key=lambda c: selection.weights[c]).member]
    epochs = max(f.epochs for f in finalists)
    numbers = [str(f.trial.number) for f in finalists]
    contender = Contender(
        model,
        heaviest.trial.number,
        run_id,
        {"ensemble": described, "members": "+".join(numbers), "epochs": epochs},
        epochs,
        refit=False,
        tags={"atelier.ensemble": described, "atelier.ensemble_run_id": run_id},
        label=f"ensemble of trials {', '.join(numbers)}",
    )
    return contender, ladder


def ensemble_finalists(
    finalists: list[Finalist], y: np.ndarray, input_shape: tuple[int, ...], say: Say
) -> tuple[keras.Model, Selection]:
    """The finalists' ensemble as one Keras model, chosen on their validation predictions (labels `y`)."""
    names = [f.name for f in finalists]
    candidates = candidate_predictions(
        np.stack([f.val_plain for f in finalists]), np.stack([f.val_mirrored for f in finalists])
    )
    selection = select(candidates, y)
    members = [keras.models.load_model(f.path, compile=False) for f in finalists]
    model = ensemble_model(members, names, selection, input_shape)
    described = selection.describe(names)
    say(f"ensemble: {described}; val_accuracy {selection.val_accuracy:.4f}, val_log_loss {selection.val_log_loss:.4f}")
    return model, selection


def _record_ensemble(
    stage: Stage,
    study_run: str,
    selection: Selection,
    names: list[str],
    finalist_runs: list[str],
    ladder: dict[str, float],
) -> str:
    """The ensemble's MLflow run under the study's run: its members and weights, and the ladder of figures."""
    client = stage.client
    run = client.create_run(
        stage.experiment_id,
        run_name="ensemble",
        tags={
            "atelier.kind": "ensemble",
            "atelier.study": stage.source.study_name,
            "atelier.finalist_runs": ",".join(finalist_runs),
            PARENT_TAG: study_run,
        },
    )
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in ladder.items()]
    metrics.append(Metric("val_log_loss_ensemble", selection.val_log_loss, now, 0))
    params = [Param("weights", selection.describe(names)), Param("members", ",".join(names))]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _clock(seconds: float) -> str:
    """`1:02:03` or `2:03`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
