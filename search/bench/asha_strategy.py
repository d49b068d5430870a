"""The bench's `atelier-asha`: `atelier run --pruner asha` at an equal budget of epochs, in one process.

Its decisions are `atelier run`'s by construction: the same rungs and promotions (`search.engine.asha`), the
same sampler (`make_sampler` with the rungs: TPE on the highest rung's results), the `[reference]` queued
first, each part trained by `train.fit` with the epoch-seeded batches and draws, paused trials checkpointed
by `Checkpoints` (in the job's folder) and resumed from there. Only the records differ: no MLflow, one
worker, so the strategy table's time outside training is the scheduler's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from search.backend import keras
from search.bench.strategies import Job, Ledger, LedgerCallback, Search, holdout_accuracy, label, leads
from search.config.schema import Scalar
from search.engine.algorithms import first_rung, make_sampler
from search.engine.asha import PAUSED_AT, PROMOTED, promotions, rungs
from search.engine.candidate import Rejected, TrialOutcome, build_checked, judge, space_build
from search.engine.checkpoints import Checkpoints
from search.engine.segments import first_stop
from search.engine.train import FitOutcome, Progress, fit
from search.engine.trial import trial_seed
from search.engine.warm_start import first_configurations, queue_configurations
from search.models.sampling import sample
from search.reports.rungs import rung_correlations


@dataclass
class _Part:
    trial: optuna.Trial
    model: keras.Model
    params: dict[str, Scalar]
    start: int
    since: Progress | None


def asha_search(job: Job, ledger: Ledger, folder: Path) -> Search:
    """Resume the best promotion, else start a trial, until the budget is spent; hand over the best completed."""
    objective, space, data = job.objective, job.space, job.data
    ladder = rungs(first_rung(space), objective.max_epochs)
    study = optuna.create_study(
        direction=objective.direction, sampler=make_sampler("tpe", job.seed, objective.trials, ladder)
    )
    queue_configurations(study, first_configurations(space))
    checkpoints, paused = Checkpoints(folder / "checkpoints"), {}
    search = Search()
    while not ledger.spent:
        promotion = next(iter(promotions(study.get_trials(deepcopy=False), ladder, objective.direction)), None)
        if promotion is not None:
            trial, params = paused.pop(promotion.number)
            trial.set_user_attr(PAUSED_AT, None)
            trial.set_user_attr(PROMOTED.format(promotion.start), [promotion.rank, promotion.ranked])
            model, since, start = checkpoints.load(promotion.number)
            part, stop = _Part(trial, model, params, start, since), promotion.stop
        else:
            trial = study.ask()
            keras.utils.set_random_seed(trial_seed(objective.seed, trial.number))
            try:
                model, params = build_checked(space_build(sample(trial, space), data), objective.max_params)
            except Rejected as rejected:
                _told(study, trial, rejected.outcome, ledger, search)
                continue
            part, stop = _Part(trial, model, dict(params), 0, None), first_stop(trial, ladder)
        result = fit(
            part.model,
            data,
            part.params,
            max_epochs=objective.max_epochs,
            monitor=objective.metric,
            direction=objective.direction,
            trial=part.trial,
            callbacks=[LedgerCallback(ledger)],
            epochs=stop,
            initial_epoch=part.start,
            seed=trial_seed(objective.seed, part.trial.number),
            since=part.since,
            pausing=stop < ladder[-1],
        )
        search.fit_seconds += result.fit_seconds
        if result.outcome is FitOutcome.COMPLETED and stop < ladder[-1] and not ledger.cut:
            progress = Progress(result.best_epoch, result.best, result.best_weights or part.model.get_weights())
            checkpoints.save(part.trial.number, part.model, progress, stop)
            part.trial.set_user_attr(PAUSED_AT, stop)
            paused[part.trial.number] = (part.trial, part.params)
        else:
            if stop < ladder[-1] and result.best_weights is not None:  # cut by the budget inside a pausing part
                part.model.set_weights(result.best_weights)
            outcome = judge(result, objective.metric, part.model, part.model.count_params())
            if outcome.model is not None and leads(study, outcome.value, objective.direction):
                search.handed_over.append((ledger.epochs, holdout_accuracy(outcome.model, job.holdout)))
            _told(study, part.trial, outcome, ledger, search)
        keras.backend.clear_session()
    search.outcomes["pruned"] += len(paused)  # still paused when the budget ran out: never promoted
    search.rungs = rung_correlations(study.get_trials(deepcopy=False), study.direction)
    return search


def _told(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome, ledger: Ledger, search: Search) -> None:
    """End the trial in the study as its outcome says, and count it."""
    search.outcomes[label(outcome, ledger)] += 1
    study.tell(trial, outcome.value, state=outcome.state)
