"""A study's sampler and pruner, by the names objectives and `atelier bench` use."""

from __future__ import annotations

import warnings

import optuna

from search.config import PRUNERS, SAMPLERS
from search.errors import SetupError

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def make_sampler(name: str, seed: int, target: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler; TPE starts with a third of the target (3 to 10) random trials."""
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(3, min(10, target // 3)), multivariate=True, group=True, constant_liar=True
        )
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
    raise SetupError(f"unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """A pruner that judges trials by the metric reported each epoch."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SetupError(f"unknown pruner '{name}'; use one of {', '.join(PRUNERS)}")
