"""The rules of one trial, written once: build, check the size, fit, judge.

`atelier run` (which adds the records, in `trial.py`), every `atelier bench` strategy and the
KerasTuner hypermodel made from a space all train through this module, so the bench measures what
`atelier run` does by construction:
- an architecture the input cannot carry ends as pruned, with its reason, before training;
- a model above the objective's `max_params` is skipped (pruned) before training;
- a build that raises fails the trial; a fit that raises or diverges fails it;
- a completed fit holds its best epoch's weights, and its value is the metric at that epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.backend import keras
from search.config.objectives import Objective
from search.config.schema import Scalar
from search.config.spaces import Space
from search.data import SearchData
from search.engine.train import EpochHook, FitOutcome, FitResult, fit
from search.errors import SetupError
from search.models.build import UnbuildableModel, build_model
from search.models.hypermodel import fit_data, rebuild
from search.models.sampling import sample

Built = tuple[keras.Model, Mapping[str, Scalar]]  # a model and the parameters its fit reads


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial's model ended: Optuna's state, its value, why, and figures for the record."""

    state: TrialState
    value: float | None = None
    reason: str = ""
    model: keras.Model | None = None  # a completed trial's model, holding its best epoch's weights
    best: Mapping[str, float] = field(default_factory=dict)  # the metrics at the best epoch
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        """Refused before training: unbuildable or too large."""
        return self.state is TrialState.PRUNED and not self.summary.get("epochs")


class Rejected(Exception):
    """A model refused before training; `outcome` says how the trial ends."""

    def __init__(self, outcome: TrialOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def space_build(params: Mapping[str, Scalar], data: SearchData) -> Callable[[], Built]:
    """How a trial of a `[params]` space builds its model."""
    return lambda: (build_model(params, data.input_shape, data.n_classes), params)


def rebuild_trial(space: Space, trial: FrozenTrial, data: SearchData) -> Built:
    """A finished trial's model rebuilt from its parameters alone (a `FixedTrial`), and the parameters it fits with."""
    if space.hypermodel is not None:
        return rebuild(space.hypermodel, trial, data.input_shape)
    params = sample(optuna.trial.FixedTrial(trial.params), space)
    return build_model(params, data.input_shape, data.n_classes), params


def build_checked(build: Callable[[], Built], max_params: int) -> Built:
    """The model `build` makes, or `Rejected` when it cannot be built or exceeds `max_params`."""
    try:
        model, params = build()
    except UnbuildableModel as error:
        raise Rejected(TrialOutcome(TrialState.PRUNED, reason=f"unbuildable: {error}", summary={"epochs": 0})) from None
    except SetupError:
        raise
    except Exception as error:
        raise Rejected(
            TrialOutcome(
                TrialState.FAIL, reason=f"cannot build: {type(error).__name__}: {error}", summary={"epochs": 0}
            )
        ) from None
    n_params = model.count_params()
    if n_params > max_params:
        reason = f"too large: {n_params:,} parameters exceed max_params {max_params:,}"
        raise Rejected(TrialOutcome(TrialState.PRUNED, reason=reason, summary={"epochs": 0, "n_params": n_params}))
    return model, params


def train_built(
    model: keras.Model,
    params: Mapping[str, Scalar],
    objective: Objective,
    data: SearchData,
    *,
    trial: optuna.trial.BaseTrial | None = None,
    on_epoch: EpochHook | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    initial_epoch: int = 0,
    deadline: float | None = None,
    seed: int = 0,
) -> TrialOutcome:
    """Fit a checked model on `data` as the objective says (its batches' order and random draws from `seed`), and
    judge how it ended."""
    n_params = model.count_params()
    try:
        result = fit(
            model,
            fit_data(model, data),
            params,
            max_epochs=objective.max_epochs,
            monitor=objective.metric,
            direction=objective.direction,
            trial=trial,
            on_epoch=on_epoch,
            callbacks=callbacks,
            epochs=epochs,
            initial_epoch=initial_epoch,
            deadline=deadline,
            seed=seed,
        )
    except SetupError:
        raise
    except Exception as error:
        return TrialOutcome(TrialState.FAIL, reason=f"{type(error).__name__}: {error}", summary={"n_params": n_params})
    return judge(result, objective.metric, model, n_params)


def run_candidate(
    build: Callable[[], Built],
    objective: Objective,
    data: SearchData,
    *,
    trial: optuna.trial.BaseTrial | None = None,
    on_epoch: EpochHook | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    deadline: float | None = None,
    seed: int = 0,
) -> TrialOutcome:
    """Build, check and train one trial's model; a broken trial is an outcome, never an exception.

    A `SetupError` (the search itself is misconfigured) and Ctrl-C propagate.
    """
    try:
        model, params = build_checked(build, objective.max_params)
    except Rejected as rejected:
        return rejected.outcome
    return train_built(
        model,
        params,
        objective,
        data,
        trial=trial,
        on_epoch=on_epoch,
        callbacks=callbacks,
        deadline=deadline,
        seed=seed,
    )


def judge(result: FitResult, metric: str, model: keras.Model, n_params: int) -> TrialOutcome:
    """How a fit ended, as a trial's outcome: its state, value, reason and summary figures."""
    summary = {f"best_{name}": value for name, value in result.best.items() if name != "learning_rate"}
    summary |= {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "fit_seconds": result.fit_seconds,
        "n_params": n_params,
    }
    if result.outcome is FitOutcome.COMPLETED:
        return TrialOutcome(TrialState.COMPLETE, result.best[metric], model=model, best=result.best, summary=summary)
    if result.outcome is FitOutcome.PRUNED:
        return TrialOutcome(TrialState.PRUNED, reason=result.reason, best=result.best, summary=summary)
    return TrialOutcome(TrialState.FAIL, reason=f"diverged: {result.reason}", best=result.best, summary=summary)
