"""Turn an Optuna trial into a flat dict of model parameters: the only caller of `suggest_*`."""

from __future__ import annotations

from typing import Any

import optuna

from search.config.schema import PARAMETERS, Scalar
from search.config.spaces import Choice, Distribution, Fixed, Range, Space


def sample(trial: optuna.trial.BaseTrial, space: Space) -> dict[str, Scalar]:
    """Draw every parameter of `space` (defaults for the ones it leaves out).

    Fixed values are not suggested to Optuna but appear in the result, so a
    `FixedTrial` holding a trial's sampled params rebuilds exactly the same dict.
    """
    params: dict[str, Scalar] = {}
    for name, spec in PARAMETERS.items():
        if spec.requires is not None and not params[spec.requires]:
            continue
        if spec.per is None:
            params[name] = _draw(trial, name, space.distribution(name))
        else:
            for index in range(int(params[spec.per])):
                params[f"{name}_{index}"] = _draw(trial, f"{name}_{index}", space.distribution(f"{name}_{index}"))
    return params


def _draw(trial: optuna.trial.BaseTrial, name: str, distribution: Distribution) -> Any:
    if isinstance(distribution, Fixed):
        return distribution.value
    if isinstance(distribution, Choice):
        return trial.suggest_categorical(name, list(distribution.choices))
    assert isinstance(distribution, Range)
    if isinstance(distribution.low, float):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    return trial.suggest_int(
        name, distribution.low, distribution.high, log=distribution.log, step=distribution.step or 1
    )
