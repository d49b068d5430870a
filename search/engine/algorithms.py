"""A study's sampler and pruner, by the names objectives and `atelier bench` use."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from search.config.objectives import PRUNERS, SAMPLERS
from search.config.spaces import Space, largest
from search.engine.rung_sampler import RungSampler
from search.errors import SetupError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class TrialSeeded(optuna.samplers.BaseSampler):
    """A sampler whose draws for trial N come from a fresh sampler seeded with `seed + N`.

    Trial numbers are unique across every process and machine sharing a study, so no two workers
    draw the same stream (two TPE samplers seeded alike on one storage propose identical trials),
    while one worker's run stays reproducible from its seed, and a resumed study does not replay
    its first trials. The samplers keep nothing between trials that the study does not hold.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make, self._seed = make, seed
        self._number: int | None = None
        self._sampler = make(seed)

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number != self._number:
            self._number, self._sampler = trial.number, self._make(self._seed + trial.number)
        return self._sampler

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)


def make_sampler(name: str, seed: int, target: int, rungs: Sequence[int] | None = None) -> optuna.samplers.BaseSampler:
    """A sampler seeded per trial from `seed` (`TrialSeeded`); TPE starts with a third of the target (3 to 10)
    random trials and, given the pruner's `rungs`, learns from the trials' results at the highest rung that as
    many trials reached (`RungSampler`, as BOHB does)."""
    if name not in SAMPLERS:
        raise SetupError(f"unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}")
    return TrialSeeded(lambda trial_seed: _sampler(name, trial_seed, target, rungs), seed)


def _sampler(name: str, seed: int, target: int, rungs: Sequence[int] | None = None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        startup = max(3, min(10, target // 3))
        tpe = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=True
        )
        return tpe if rungs is None else RungSampler(tpe, rungs, min_trials=startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler needs it)
        except ImportError:
            raise SetupError("the gp sampler needs PyTorch; pip install torch, or use --sampler tpe") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise AssertionError(name)  # make_sampler checked the name


def first_rung(space: Space) -> int:
    """The first epoch a trial may be judged at: the one after the longest learning-rate warm-up the space
    draws. During its warm-up a model trains at a fraction of its rate, and a deeper one looks worse than it
    is (measured: `cnn-best`'s reference model pruned at epoch 1, its warm-up, behind one-layer models)."""
    return 1 + (largest(space.distribution("warmup_epochs")) if space.hypermodel is None else 0)


def make_pruner(name: str, max_epochs: int, first: int = 1) -> optuna.pruners.BasePruner:
    """A pruner that judges trials by the metric reported each epoch, from epoch `first` on.

    `halving` (asynchronous successive halving) stops a trial at epoch `first`, 3 x `first`, 9 x `first`...
    unless it is in the best third of the study's trials that reached that epoch. It has no brackets, so the
    sampler learns from every trial; Optuna's Hyperband shows the sampler only the trials of the current
    trial's bracket. `asha` pauses trials at the same rungs and resumes those that earn it (`search.engine.asha`).
    """
    first = max(1, min(first, max_epochs))
    if name == "asha":  # it pauses trials at its rungs and resumes the best (`asha`, `segments`): no pruning
        return optuna.pruners.NopPruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SetupError(f"unknown pruner '{name}'; use one of {', '.join(PRUNERS)}")
