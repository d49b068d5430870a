"""A sampler that learns from the trials' results at the highest budget most of them reached (BOHB's rule)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

_JUDGED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class _Shared(FrozenTrial):
    """A trial that the view's storage keeps without copying it deeply (deep copies of the distributions were
    most of the cost of a view); the storage copies a trial's dicts before it changes them, never in place."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return copy.copy(self)


def _shared(trial: FrozenTrial) -> _Shared:
    shared = copy.copy(trial)
    shared.__class__ = _Shared
    return shared


def _copy(trial: FrozenTrial, state: TrialState, **fields: Any) -> FrozenTrial:
    """The trial's parameters in `state` (its system attributes hold its constraints)."""
    return optuna.trial.create_trial(
        state=state, params=trial.params, distributions=trial.distributions, system_attrs=trial.system_attrs, **fields
    )


class RungSampler(optuna.samplers.BaseSampler):
    """`inner` sampling from a view of the study in which the trials' results at one rung count as complete.

    Successive halving stops most trials early, so few complete, and TPE fills its good group from the
    completed ones first (early trials complete whatever their worth, and paused running ones only ever
    count as bad). BOHB fits its model at the highest budget with enough results instead: in the view, for
    the highest rung at which `min_trials` trials have a value, each of them is complete with that value;
    every other trial is as it is (running ones for TPE's constant liar), but a completed one is pruned. So
    the trials stopped below the rung rank below all those that reached it; left out, they would leave the
    region they were stopped in empty, and TPE's prior would draw its proposals there again and again.
    With no such rung the view is the study as it is.
    """

    def __init__(self, inner: optuna.samplers.BaseSampler, rungs: Sequence[int], min_trials: int) -> None:
        if not rungs or min_trials < 1:
            raise ValueError(f"RungSampler needs rungs and a min_trials of 1 or more, not {rungs}, {min_trials}")
        self._inner, self._rungs, self._min_trials = inner, sorted(rungs), min_trials
        self._number: int | None = None
        self._view: optuna.Study
        self._mine: FrozenTrial  # the view's copy of the trial being sampled

    def rung(self, trials: Sequence[FrozenTrial]) -> int | None:
        """The highest rung at which `min_trials` of `trials` have a value, if any."""
        return next(
            (r for r in reversed(self._rungs) if sum(self._at(t, r) is not None for t in trials) >= self._min_trials),
            None,
        )

    def _at(self, trial: FrozenTrial, rung: int) -> float | None:
        """The trial's report at `rung`, or its final value if it completed and `rung` is the full budget."""
        value = trial.intermediate_values.get(rung) if trial.state in _JUDGED else None
        if value is None and rung == self._rungs[-1] and trial.state == TrialState.COMPLETE:
            value = trial.value
        return None if value is None or math.isnan(value) else value

    def view(self, study: optuna.Study, trial: FrozenTrial) -> tuple[optuna.Study, FrozenTrial]:
        """The view for `trial`, built once per trial, and `trial` as the view numbers it.

        The inner sampler must be handed the view's copy of the trial: TPE leaves the trial being sampled out
        of its model by number, and writes what it sampled on it (by id) for other processes' constant liar.
        It gets a view even with no rung to judge at: TPE's group search space refuses a second study id.
        """
        if trial.number != self._number:
            trials = study.get_trials(deepcopy=False)
            rung = self.rung(trials)
            copies = []
            for t in trials:
                value = None if rung is None or t.number == trial.number else self._at(t, rung)
                if value is not None:
                    t = _copy(t, TrialState.COMPLETE, value=value)
                elif rung is not None and t.state == TrialState.COMPLETE:
                    t = _copy(t, TrialState.PRUNED, intermediate_values=t.intermediate_values)
                copies.append(_shared(t))
            self._view = optuna.create_study(direction=study.direction, storage=optuna.storages.InMemoryStorage())
            self._view.add_trials(copies)
            position = [t.number for t in trials].index(trial.number)
            self._number, self._mine = trial.number, self._view.get_trials(deepcopy=False)[position]
        mine = copy.copy(trial)
        mine.number, mine._trial_id = self._mine.number, self._mine._trial_id
        return self._view, mine

    def _forward(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """What the inner sampler wrote on the view's copy of the trial, written on the trial itself."""
        written = self._view._storage.get_trial(self._mine._trial_id)
        for key, value in written.system_attrs.items():
            if self._mine.system_attrs.get(key) != value:
                study._storage.set_trial_system_attr(trial._trial_id, key, value)
        self._mine = written

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(*self.view(study, trial))

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self._inner.sample_relative(*self.view(study, trial), search_space)
        self._forward(study, trial)
        return params

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        value = self._inner.sample_independent(*self.view(study, trial), param_name, param_distribution)
        self._forward(study, trial)
        return value

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._inner.after_trial(study, trial, state, values)
