"""One trial end to end: sample, build, fit, record; the glue between Optuna, Keras and MLflow."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from search.backend import keras
from search.config.schema import Scalar
from search.engine.candidate import Built, run_candidate, space_build
from search.engine.plan import SearchContext, TrialReport
from search.errors import SetupError
from search.models.hypermodel import Hypermodel, TrialHyperParameters, training_params
from search.models.sampling import sample


def run_trial(trial: optuna.Trial, ctx: SearchContext, deadline: float | None = None) -> TrialReport:
    """Run one trial through the trial core and record it; a broken trial is reported as failed, never raised.

    A trial still training at `deadline` (a `time.monotonic()` reading: the search's timeout) stops
    at the end of that epoch, pruned.

    A `SetupError` or Ctrl-C closes the trial's run as failed and propagates: the search must stop.
    """
    started = time.perf_counter()
    plan = ctx.plan
    seed = trial_seed(plan.objective.seed, trial.number)
    keras.utils.set_random_seed(seed)
    params = sample(trial, plan.space) if plan.space.hypermodel is None else {}  # a hypermodel draws as it builds
    run_id = ctx.tracker.start_trial(
        ctx.experiment_id, plan.study_name, trial.number, params, plan.inputs, ctx.study_run_id
    )
    trial.set_user_attr("mlflow_run_id", run_id)
    try:
        outcome = run_candidate(
            trial_builder(trial, ctx, params, run_id),
            plan.objective,
            plan.data,
            trial=trial,
            on_epoch=lambda step, metrics: ctx.tracker.log_epoch(run_id, step, metrics),
            deadline=deadline,
            seed=seed,
        )
        if outcome.model is not None:
            ctx.tracker.log_model_file(run_id, outcome.model)
    except (SetupError, KeyboardInterrupt) as error:
        reason = stop_reason(error)
        forget_models()
        close_trial(trial, ctx, run_id, TrialState.FAIL, reason, {"trial_seconds": time.perf_counter() - started})
        raise
    summary = dict(outcome.summary)
    state, value, reason = outcome.state, outcome.value, outcome.reason
    del outcome
    forget_models()
    summary["trial_seconds"] = time.perf_counter() - started
    summary["peak_rss_mb"] = peak_rss_mb()
    close_trial(trial, ctx, run_id, state, reason, summary)
    return TrialReport(trial.number, state, value, reason, summary)


def stop_reason(error: BaseException) -> str:
    """Why a trial stopped with the search: Ctrl-C (or the search stopped), or a setup error's own words."""
    return "interrupted (Ctrl-C, or the search stopped)" if isinstance(error, KeyboardInterrupt) else str(error)


def trial_seed(seed: int, number: int) -> int:
    """Trial `number`'s seed: its initial weights, batches and random draws follow from it, on every machine."""
    return seed * 100_003 + number


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trial_builder(
    trial: optuna.Trial, ctx: SearchContext, params: dict[str, Scalar], run_id: str
) -> Callable[[], Built]:
    """How the trial builds its model: from the space's parameters, or through the hypermodel, whose values are
    logged as far as it drew them, even when its build fails."""
    space, data = ctx.plan.space, ctx.plan.data
    if space.hypermodel is None:
        return space_build(params, data)

    def build() -> Built:
        hp = TrialHyperParameters(trial)
        try:
            model = Hypermodel(space.hypermodel).model(hp, data.input_shape)
        finally:
            ctx.tracker.log_params(run_id, hp.values)
        return model, training_params(hp)

    return build


def forget_models() -> None:
    """Free what Keras holds between trials, so a long search does not grow (clear_session collects garbage)."""
    keras.backend.clear_session()


def close_trial(
    trial: optuna.Trial, ctx: SearchContext, run_id: str, state: TrialState, reason: str, summary: dict[str, float]
) -> None:
    """Close the trial's MLflow run with its state, reason and summary, which the Optuna trial keeps too."""
    ctx.tracker.finish_trial(run_id, state, summary, reason)
    for key, value in summary.items():
        trial.set_user_attr(key, value)
    if reason:
        trial.set_user_attr("reason", reason)
