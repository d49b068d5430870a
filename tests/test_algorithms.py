"""Samplers and pruners by name: every worker draws its own stream, one worker's run is reproducible."""

from __future__ import annotations

import optuna
import pytest

from search.config.spaces import load_space
from search.engine.algorithms import first_rung, make_pruner, make_sampler
from search.errors import SetupError


def _objective(trial: optuna.Trial) -> float:
    x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", -5, 5)
    layers = trial.suggest_int("layers", 1, 4)
    return (x - 1) ** 2 + (y + 2) ** 2 + layers


def _machines(samplers: list[optuna.samplers.BaseSampler], trials: int) -> list[dict]:
    """`trials` trials asked in turn by processes with these samplers, sharing one storage as machines do."""
    storage = optuna.storages.InMemoryStorage()
    study_id = optuna.create_study(storage=storage, study_name="shared").study_name
    studies = [optuna.load_study(study_name=study_id, storage=storage, sampler=sampler) for sampler in samplers]
    params = []
    for number in range(trials):
        study = studies[number % len(studies)]
        trial = study.ask()
        study.tell(trial, _objective(trial))
        params.append(trial.params)
    return params


def test_two_workers_seeded_alike_draw_distinct_trials() -> None:
    params = _machines([make_sampler("tpe", 0, 30), make_sampler("tpe", 0, 30)], 20)
    assert len({tuple(sorted(p.items())) for p in params}) == 20


def test_without_per_trial_seeds_two_workers_draw_the_same_trials() -> None:
    """Why TrialSeeded exists: Optuna's TPE samplers seeded alike propose identical start-up trials."""
    tpe = [optuna.samplers.TPESampler(seed=0, constant_liar=True) for _ in range(2)]
    params = _machines(tpe, 4)
    assert params[0] == params[1] and params[2] == params[3]


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes"])
def test_one_workers_run_is_reproducible_from_its_seed(name: str) -> None:
    first, second = (_machines([make_sampler(name, 7, 30)], 15) for _ in range(2))
    assert first == second
    assert first != _machines([make_sampler(name, 8, 30)], 15)


def test_unknown_names_are_setup_errors() -> None:
    with pytest.raises(SetupError, match="unknown sampler 'bayes'; use one of tpe, random, cmaes, gp"):
        make_sampler("bayes", 0, 10)
    with pytest.raises(SetupError, match="unknown pruner 'pbt'; use one of halving, asha, hyperband, median, none"):
        make_pruner("pbt", 5)


def test_no_trial_is_judged_during_its_warm_up() -> None:
    """cnn-best warms up for an epoch: its first rung is epoch 2, where a trial worse than every other at
    epoch 1 is not pruned at epoch 1; a space without warm-up is judged from epoch 1."""
    assert first_rung(load_space("cnn-best")) == 2 and first_rung(load_space("cnn-quick")) == 1
    for first, pruned_at_1 in ((1, True), (2, False)):
        study = optuna.create_study(pruner=make_pruner("halving", 6, first))
        for value in (0.1, 0.2, 0.3):
            trial = study.ask()
            for epoch in (1, 2):
                trial.report(value, epoch)
                trial.should_prune()  # records the trial at the rung
            study.tell(trial, value)
        late = study.ask()
        late.report(9.0, 1)
        assert late.should_prune() is pruned_at_1
        late.report(9.0, 2)
        assert late.should_prune() is not pruned_at_1  # epoch 2 is a rung only when the first is 2
