"""The trial a promotion tests: a study's best completed trial (or one named), with the space and the objective its
study recorded when it was made."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.config.objectives import Objective, objective_from_record
from search.config.spaces import Space, load_space
from search.errors import SetupError
from search.record.store import latest_study_name

RECORDED = ("space", "space_file", "objective_settings")  # the study attributes a promotion needs


@dataclass(frozen=True)
class Source:
    """The trial to promote and the settings its study was made with."""

    study_name: str
    trial: FrozenTrial
    objective: Objective
    space: Space
    data_dir: Path | None

    @property
    def best_epoch(self) -> int:
        return int(self.trial.user_attrs["best_epoch"])


def find_source(storage: BaseStorage, study_name: str | None, trial_number: int | None) -> Source:
    """The study's best completed trial (or trial `trial_number`), with the study's space and objective."""
    name = study_name or latest_study_name(storage)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SetupError(f"unknown study '{name}'; see the studies with `atelier show` or pass --study") from None
    trial = _chosen_trial(study, trial_number)
    attrs = study.user_attrs
    missing = [key for key in RECORDED if key not in attrs]
    if missing:
        raise SetupError(f"study '{name}' does not record its {', '.join(missing)}; it was not made by `atelier run`")
    data_dir = Path(attrs["data_dir"]) if "data_dir" in attrs else None
    return Source(name, trial, objective_from_record(attrs["objective_settings"]), _recorded_space(attrs), data_dir)


def _chosen_trial(study: optuna.Study, trial_number: int | None) -> FrozenTrial:
    """The study's best completed trial, or its completed trial `trial_number`."""
    name = study.study_name
    complete = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if not complete:
        raise SetupError(f"study '{name}' has no completed trial to promote; run more trials with `atelier run`")
    if trial_number is None:
        return study.best_trial
    if trial_number not in complete:
        raise SetupError(
            f"study '{name}' has no completed trial {trial_number}; "
            f"choose one of {', '.join(map(str, sorted(complete)))}"
        )
    return complete[trial_number]


def _recorded_space(attrs: Mapping[str, Any]) -> Space:
    """The space the study was made with, read from the copy of its file the study holds."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{attrs['space']}.toml"
        path.write_text(attrs["space_file"], encoding="utf-8")
        return load_space(str(path))
