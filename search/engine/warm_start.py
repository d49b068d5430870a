"""Warm starts: a new study runs the best configurations of an earlier study over the same space first.

The sampler then learns from good regions from its first trials instead of from random ones. The
earlier study must hold the same space file (its parameters and ranges) and live in the same store;
its data and metric may differ, as when a long search starts from a quick one.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from search.config.spaces import Space
from search.errors import SetupError
from search.paths import check_name

WARM_START_TRIALS = 3  # the earlier study's best completed trials, at most, queued in the new one
SOURCE_ATTR = "warm_start_from"  # trial user attribute: STUDY#NUMBER the configuration came from


def best_configurations(storage: BaseStorage, source: str, study_name: str, space: Space) -> list[dict[str, Any]]:
    """The parameters (and their origin) of up to `WARM_START_TRIALS` best completed trials of `source`.

    A SetupError names what is wrong: the study itself, an unknown study, another space, no completed trial.
    """
    check_name(source, "--warm-start")
    if source == study_name:
        raise SetupError(f"study '{study_name}' cannot warm-start from itself; name an earlier study")
    try:
        earlier = optuna.load_study(study_name=source, storage=storage)
    except KeyError:
        raise SetupError(
            f"unknown study '{source}' to warm-start from; see the studies with `atelier show` or drop --warm-start"
        ) from None
    if earlier.user_attrs.get("space_file") != space.text:
        raise SetupError(
            f"study '{source}' searched space '{earlier.user_attrs.get('space', '?')}', not this space file "
            f"({space.name}); warm-start from a study of the same space"
        )
    completed = [t for t in earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not completed:
        raise SetupError(f"study '{source}' has no completed trial to warm-start from; drop --warm-start")
    completed.sort(key=lambda t: t.value, reverse=earlier.direction == optuna.study.StudyDirection.MAXIMIZE)
    chosen: list[dict[str, Any]] = []
    for trial in completed:
        if all(trial.params != c["params"] for c in chosen):
            chosen.append({"params": trial.params, "origin": f"{source}#{trial.number}"})
        if len(chosen) == WARM_START_TRIALS:
            break
    return chosen


def first_configurations(space: Space) -> list[dict[str, Any]]:
    """What a new study of `space` runs before sampling: its `[reference]`, if it has one."""
    return [{"params": dict(space.reference), "origin": f"reference of space {space.name}"}] if space.reference else []


def queue_configurations(study: optuna.Study, configurations: list[dict[str, Any]]) -> int:
    """Queue the configurations in a study that has no trial yet; return how many were queued (0 on resume)."""
    if study.get_trials(deepcopy=False):
        return 0
    for configuration in configurations:
        study.enqueue_trial(
            configuration["params"], user_attrs={SOURCE_ATTR: configuration["origin"]}, skip_if_exists=True
        )
    return len(configurations)
