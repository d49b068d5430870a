"""One trial end to end: sample, build, fit, record; the glue between Optuna, Keras and MLflow."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field

from search.backend import keras
import optuna
from mlflow.entities import DatasetInput
from optuna.trial import TrialState

from search.config import Objective, Space
from search.data import SearchData
from search.errors import SetupError
from search.hypermodel import Hypermodel, TrialHyperParameters, fit_data, training_params
from search.schema import Scalar
from search.store import Store
from search.model import UnbuildableModel, build_model
from search.space import sample
from search.tracking import Tracker
from search.train import FitOutcome, FitResult, fit


@dataclass(frozen=True)
class SearchPlan:
    """Everything fixed before the first trial; it travels to each worker process."""

    study_name: str
    objective: Objective
    space: Space
    data: SearchData
    store: Store
    inputs: list[DatasetInput]


@dataclass(frozen=True)
class SearchContext:
    """A plan joined to an MLflow connection of the process that runs the trials."""

    plan: SearchPlan
    tracker: Tracker
    experiment_id: str

    @classmethod
    def connect(cls, plan: SearchPlan) -> SearchContext:
        """Open MLflow in this process and find (or make) the study's experiment."""
        tracker = Tracker(plan.store.tracking)
        experiment_id = tracker.experiment(plan.study_name, {
            "atelier.study": plan.study_name, "atelier.space": plan.space.name,
            "atelier.objective": plan.objective.name})
        return cls(plan, tracker, experiment_id)


@dataclass(frozen=True)
class TrialReport:
    """How a trial ended, for Optuna's `tell` and the terminal."""

    number: int
    state: TrialState
    value: float | None
    reason: str = ""
    summary: dict[str, float] = field(default_factory=dict)


def run_trial(trial: optuna.Trial, ctx: SearchContext) -> TrialReport:
    """Run one trial and record it; a broken trial is reported as failed, never raised.

    A `SetupError` or Ctrl-C closes the trial's run as failed and propagates: the search must stop.
    """
    started = time.perf_counter()
    plan = ctx.plan
    params = sample(trial, plan.space) if plan.space.hypermodel is None else {}  # a hypermodel draws as it builds
    run_id = ctx.tracker.start_trial(ctx.experiment_id, plan.study_name, trial.number, params, plan.inputs)
    trial.set_user_attr("mlflow_run_id", run_id)
    try:
        state, value, reason, model, summary = _build_and_fit(trial, ctx, params, run_id)
        if model is not None:
            ctx.tracker.log_model_file(run_id, model)
    except (SetupError, KeyboardInterrupt) as error:
        reason = "interrupted (Ctrl-C, or the search stopped)" if isinstance(error, KeyboardInterrupt) else str(error)
        _forget_models()
        _close(trial, ctx, run_id, TrialState.FAIL, reason, {"trial_seconds": time.perf_counter() - started})
        raise
    del model
    _forget_models()
    summary["trial_seconds"] = time.perf_counter() - started
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _close(trial, ctx, run_id, state, reason, summary)
    return TrialReport(trial.number, state, value, reason, summary)


def _build_and_fit(trial: optuna.Trial, ctx: SearchContext, params: dict, run_id: str
                   ) -> tuple[TrialState, float | None, str, keras.Model | None, dict[str, float]]:
    objective, data = ctx.plan.objective, ctx.plan.data
    try:
        model, params = _build(trial, ctx, params, run_id)
    except UnbuildableModel as error:
        return TrialState.PRUNED, None, f"unbuildable: {error}", None, {"epochs": 0}
    except SetupError:
        raise
    except Exception as error:
        return TrialState.FAIL, None, f"cannot build: {type(error).__name__}: {error}", None, {"epochs": 0}
    n_params = model.count_params()
    if n_params > objective.max_params:
        reason = f"too large: {n_params:,} parameters exceed max_params {objective.max_params:,}"
        return TrialState.PRUNED, None, reason, None, {"epochs": 0, "n_params": n_params}
    try:
        result = fit(model, fit_data(model, data), params, max_epochs=objective.max_epochs,
                     monitor=objective.metric, direction=objective.direction, trial=trial,
                     on_epoch=lambda step, metrics: ctx.tracker.log_epoch(run_id, step, metrics))
    except SetupError:
        raise
    except Exception as error:
        return TrialState.FAIL, None, f"{type(error).__name__}: {error}", None, {"n_params": n_params}
    summary = _summary(result) | {"n_params": n_params}
    if result.outcome is FitOutcome.COMPLETED:
        return TrialState.COMPLETE, result.best[objective.metric], "", model, summary
    if result.outcome is FitOutcome.PRUNED:
        return TrialState.PRUNED, None, result.reason, None, summary
    return TrialState.FAIL, None, f"diverged: {result.reason}", None, summary


def _build(trial: optuna.Trial, ctx: SearchContext, params: dict[str, Scalar], run_id: str
           ) -> tuple[keras.Model, dict[str, Scalar]]:
    """The trial's model and the parameters its fit reads. A hypermodel's values are logged as far as it
    drew them, even when its build fails."""
    space, data = ctx.plan.space, ctx.plan.data
    if space.hypermodel is None:
        return build_model(params, data.input_shape, data.n_classes), params
    hp = TrialHyperParameters(trial)
    try:
        model = Hypermodel(space.hypermodel).model(hp, data.input_shape)
    finally:
        ctx.tracker.log_params(run_id, hp.values)
    return model, training_params(hp)


def _forget_models() -> None:
    """Free what Keras holds between trials, so a long search does not grow (clear_session collects garbage)."""
    keras.backend.clear_session()


def _summary(result: FitResult) -> dict[str, float]:
    summary = {f"best_{name}": value for name, value in result.best.items() if name != "learning_rate"}
    return summary | {"best_epoch": result.best_epoch, "epochs": result.epochs, "fit_seconds": result.fit_seconds}


def _close(trial: optuna.Trial, ctx: SearchContext, run_id: str, state: TrialState, reason: str,
           summary: dict[str, float]) -> None:
    ctx.tracker.finish_trial(run_id, state, summary, reason)
    for key, value in summary.items():
        trial.set_user_attr(key, value)
    if reason:
        trial.set_user_attr("reason", reason)
