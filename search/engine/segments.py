"""One part of a trial under the `asha` pruner, in a worker: a new trial trained to its first rung, or a paused
trial resumed from its checkpoint to its next rung; checkpointed and paused at a rung below the last, ended at
the last. One MLflow run per trial: it stays open while the trial is paused and its epochs continue.

Crash safety, in the order things are written: the checkpoint, then `paused_at`, then the claim released. A
worker killed in between leaves a RUNNING trial with a checkpoint, which recovery pauses again at its epoch
(`recovery.recover_orphans`); a kill before the first checkpoint leaves an orphan, failed and queued again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from search.backend import keras
from search.config.schema import Scalar
from search.engine.asha import PAUSED_AT, PROMOTED, Promotion, paused_at, promotions
from search.engine.candidate import Rejected, build_checked, judge
from search.engine.checkpoints import Checkpoints
from search.engine.plan import SearchContext, TrialReport
from search.engine.recovery import worker_id
from search.engine.train import FitOutcome, Progress, fit
from search.engine.trial import close_trial, forget_models, peak_rss_mb, stop_reason, trial_builder, trial_seed
from search.engine.warm_start import SOURCE_ATTR
from search.errors import SetupError
from search.models.hypermodel import fit_data
from search.models.sampling import sample

CUMULATIVE = ("fit_seconds", "trial_seconds")  # summed over a trial's parts


@dataclass(frozen=True)
class Part:
    """A trial's part to train: from epoch `start` to `stop`, after what it kept from its earlier parts."""

    trial: optuna.Trial
    run_id: str
    model: keras.Model
    params: dict[str, Scalar]
    start: int
    stop: int
    since: Progress | None
    started: float  # `time.perf_counter()` when the part began


def next_part(
    study: optuna.Study,
    ctx: SearchContext,
    ladder: tuple[int, ...],
    checkpoints: Checkpoints,
    deadline: float | None,
    may_start: bool,
) -> TrialReport | None:
    """Resume the best promotion this worker can claim, else start a new trial if `may_start`; None: no work."""
    from search.engine.study import time_for

    trials = study.get_trials(deepcopy=False)
    for promotion in promotions(trials, ladder, ctx.plan.objective.direction):
        if not time_for(study, deadline, promotion.stop - promotion.start):
            continue
        part = _claimed(study, ctx, promotion, checkpoints)
        if part is not None:
            return _train(part, ctx, ladder, checkpoints, deadline)
    if not may_start:
        return None
    part = _started(study, ctx, ladder)
    return part if isinstance(part, TrialReport) else _train(part, ctx, ladder, checkpoints, deadline)


def _claimed(study: optuna.Study, ctx: SearchContext, promotion: Promotion, checkpoints: Checkpoints) -> Part | None:
    """The promoted trial's part, once this worker holds its claim and it is still paused where it was seen."""
    if not checkpoints.claim(promotion.number, worker_id()):
        return None
    storage = study._storage  # noqa: SLF001  (Optuna's own handle: `Trial` needs the study and the trial's id)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), promotion.number
    )
    frozen = storage.get_trial(trial_id)
    if paused_at(frozen) != promotion.start or checkpoints.epoch(promotion.number) != promotion.start:
        checkpoints.release(promotion.number)  # another worker resumed it meanwhile
        return None
    started = time.perf_counter()
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr(PAUSED_AT, None)
    trial.set_user_attr(PROMOTED.format(promotion.start), [promotion.rank, promotion.ranked])
    model, since, epoch = checkpoints.load(promotion.number)
    space = ctx.plan.space
    fixed = optuna.trial.FixedTrial(frozen.params)
    params = dict(frozen.user_attrs["fit_params"] if space.hypermodel is not None else sample(fixed, space))
    run_id = frozen.user_attrs["mlflow_run_id"]
    ctx.tracker.resume_trial(run_id)
    return Part(trial, run_id, model, params, epoch, promotion.stop, since, started)


def _started(study: optuna.Study, ctx: SearchContext, ladder: tuple[int, ...]) -> Part | TrialReport:
    """A new trial, built and checked, ready to train to the first rung (or its report, refused before training)."""
    started = time.perf_counter()
    plan = ctx.plan
    trial = study.ask()
    trial.set_user_attr("worker", worker_id())
    keras.utils.set_random_seed(trial_seed(plan.objective.seed, trial.number))
    params = sample(trial, plan.space) if plan.space.hypermodel is None else {}
    run_id = ctx.tracker.start_trial(
        ctx.experiment_id, plan.study_name, trial.number, params, plan.inputs, ctx.study_run_id
    )
    trial.set_user_attr("mlflow_run_id", run_id)
    try:
        model, fit_params = build_checked(trial_builder(trial, ctx, params, run_id), plan.objective.max_params)
    except Rejected as rejected:
        outcome = rejected.outcome
        return _end(trial, ctx, run_id, outcome.state, None, outcome.reason, dict(outcome.summary), started)
    except (SetupError, KeyboardInterrupt) as error:
        close_trial(trial, ctx, run_id, TrialState.FAIL, stop_reason(error), {})
        study.tell(trial, state=TrialState.FAIL)
        raise
    if plan.space.hypermodel is not None:
        trial.set_user_attr("fit_params", dict(fit_params))
    return Part(trial, run_id, model, dict(fit_params), 0, first_stop(trial, ladder), None, started)


def first_stop(trial: optuna.Trial, ladder: tuple[int, ...]) -> int:
    """Where a new trial's first part ends: its first rung; the last for a queued configuration (a space's
    `[reference]`, a warm start), measured rather than screened: it reports at every rung, and trains on."""
    return ladder[-1] if SOURCE_ATTR in trial.user_attrs else ladder[0]


def _train(
    part: Part, ctx: SearchContext, ladder: tuple[int, ...], checkpoints: Checkpoints, deadline: float | None
) -> TrialReport:
    """Train the part; pause the trial at a rung below the last, end it at the last (or when it fails)."""
    plan, trial, number = ctx.plan, part.trial, part.trial.number
    pausing = part.stop < ladder[-1]
    try:
        result = fit(
            part.model,
            fit_data(part.model, plan.data),
            part.params,
            max_epochs=plan.objective.max_epochs,
            monitor=plan.objective.metric,
            direction=plan.objective.direction,
            trial=trial,
            on_epoch=lambda step, metrics: ctx.tracker.log_epoch(part.run_id, step, metrics),
            epochs=part.stop,
            initial_epoch=part.start,
            deadline=deadline,
            seed=trial_seed(plan.objective.seed, number),
            since=part.since,
            pausing=pausing,
        )
    except (SetupError, KeyboardInterrupt) as error:
        _interrupted(part, ctx, checkpoints, stop_reason(error))
        raise
    except Exception as error:
        checkpoints.remove(number)
        reason = f"{type(error).__name__}: {error}"
        return _end(trial, ctx, part.run_id, TrialState.FAIL, None, reason, {}, part.started)
    outcome = judge(result, plan.objective.metric, part.model, part.model.count_params())
    summary = dict(outcome.summary) | {"epochs": part.start + result.epochs}
    if result.outcome is FitOutcome.COMPLETED and pausing:
        progress = Progress(result.best_epoch, result.best, result.best_weights or part.model.get_weights())
        checkpoints.save(number, part.model, progress, part.stop)
        summary = _totals(trial, summary, part.started)
        for key, value in summary.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr(PAUSED_AT, part.stop)
        ctx.tracker.pause_trial(part.run_id, part.stop)
        checkpoints.release(number)
        forget_models()
        reason = f"paused at epoch {part.stop}"
        return TrialReport(number, TrialState.RUNNING, None, reason, summary, paused_at=part.stop)
    if outcome.model is not None:
        ctx.tracker.log_model_file(part.run_id, outcome.model)
    checkpoints.remove(number)
    return _end(trial, ctx, part.run_id, outcome.state, outcome.value, outcome.reason, summary, part.started)


def _interrupted(part: Part, ctx: SearchContext, checkpoints: Checkpoints, reason: str) -> None:
    """Ctrl-C, or the search stopped: a resumed trial waits, paused at its checkpoint, for the next search; a
    trial in its first part fails, as `run_trial` fails it."""
    if part.since is not None:
        part.trial.set_user_attr(PAUSED_AT, part.start)
        checkpoints.release(part.trial.number)
        return
    close_trial(part.trial, ctx, part.run_id, TrialState.FAIL, reason, {})
    part.trial.study.tell(part.trial, state=TrialState.FAIL)


def _end(
    trial: optuna.Trial,
    ctx: SearchContext,
    run_id: str,
    state: TrialState,
    value: float | None,
    reason: str,
    summary: dict[str, float],
    started: float,
) -> TrialReport:
    """Close the trial's run and its Optuna trial in `state`; its report."""
    forget_models()
    summary = _totals(trial, summary, started) | {"peak_rss_mb": peak_rss_mb()}
    close_trial(trial, ctx, run_id, state, reason, summary)
    trial.study.tell(trial, value if state is TrialState.COMPLETE else None, state=state)
    return TrialReport(trial.number, state, value, reason, summary)


def _totals(trial: optuna.Trial, summary: dict[str, float], started: float) -> dict[str, float]:
    """`summary` with the seconds of the trial's earlier parts added to this part's."""
    earlier = trial.user_attrs
    summary = summary | {"trial_seconds": time.perf_counter() - started}
    return summary | {key: summary.get(key, 0.0) + float(earlier.get(key, 0.0)) for key in CUMULATIVE}
