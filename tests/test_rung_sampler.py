"""RungSampler: the inner sampler sees the trials' results at the highest rung enough trials reached."""

from __future__ import annotations

import random
import statistics

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search.engine.algorithms import TrialSeeded, _sampler, make_sampler
from search.engine.rung_sampler import RungSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

X = {"x": FloatDistribution(0, 1)}
RUNGS = [1, 3, 5]


def _trial(state: TrialState, x: float, reports: dict[int, float], value: float | None = None) -> FrozenTrial:
    return create_trial(state=state, value=value, params={"x": x}, distributions=X, intermediate_values=reports)


def _halved_study() -> tuple[optuna.Study, FrozenTrial]:
    """8 trials pruned at epoch 3, 4 at epoch 1, 2 complete with reports at 1, 3 and 5 (a final value of their
    best epoch), 2 complete without a report at 5 (out of time, one after epoch 1), 1 paused (running) after
    epoch 3, and the trial being sampled."""
    study = optuna.create_study()
    for i in range(8):
        study.add_trial(_trial(TrialState.PRUNED, i / 20, {1: 10 + i, 3: 20 + i}))
    for i in range(4):
        study.add_trial(_trial(TrialState.PRUNED, 0.5 + i / 20, {1: 30 + i}))
    for i in range(2):
        study.add_trial(_trial(TrialState.COMPLETE, 0.75 + i / 8, {1: 1 + i, 3: 2 + i, 5: 3 + i}, value=2.5 + i))
    study.add_trial(_trial(TrialState.COMPLETE, 0.95, {1: 5, 3: 6}, value=7))
    study.add_trial(_trial(TrialState.COMPLETE, 0.625, {1: 4}, value=4.5))
    study.add_trial(_trial(TrialState.RUNNING, 0.99, {1: 8, 3: 9}))
    study.ask()
    return study, study.trials[-1]


def _content(view: optuna.Study) -> list[tuple[str, float | None, float | None]]:
    return [(t.state.name, t.params.get("x"), t.value) for t in view.trials]


def _as(states_and_values: str) -> list[tuple[str, float | None]]:
    """States and values written as in "C3 P R": complete with 3, pruned, running."""
    names = {"C": "COMPLETE", "P": "PRUNED", "R": "RUNNING"}
    return [(names[word[0]], float(word[1:]) if word[1:] else None) for word in states_and_values.split()]


XS = [i / 20 for i in range(8)] + [0.5 + i / 20 for i in range(4)] + [0.75, 0.875, 0.95, 0.625, 0.99]


@pytest.mark.parametrize(
    ("min_trials", "expected"),
    [
        # rung 5 has 4 values: the reports at 5, or the final value of a completed trial without one
        (4, "P " * 12 + "C3 C4 C7 C4.5 R"),
        # rung 3 has 12 (the paused trial's among them); those that did not reach it rank below, pruned
        (5, " ".join(f"C{20 + i}" for i in range(8)) + " P P P P C2 C3 C6 P C9"),
        (13, " ".join(f"C{10 + i}" for i in range(8)) + " C30 C31 C32 C33 C1 C2 C5 C4 C8"),
    ],
)
def test_the_view_holds_the_trials_at_the_highest_rung_with_enough_values(min_trials: int, expected: str) -> None:
    study, current = _halved_study()
    view, mine = RungSampler(optuna.samplers.RandomSampler(), RUNGS, min_trials).view(study, current)
    states_and_values = _as(expected) + [("RUNNING", None)]
    assert _content(view) == [
        (state, x, value) for x, (state, value) in zip([*XS, None], states_and_values, strict=True)
    ]
    assert [t.intermediate_values for t in view.trials if t.state == TrialState.PRUNED] == [
        t.intermediate_values
        for t, (state, _) in zip(study.trials, states_and_values, strict=True)
        if state == "PRUNED"
    ]
    assert view.trials[mine.number].state == TrialState.RUNNING and mine.number == current.number
    assert view.trials[mine.number]._trial_id == mine._trial_id and mine.params == current.params


def test_without_a_rung_with_enough_values_the_view_is_the_study_as_it_is() -> None:
    study, current = _halved_study()
    view, mine = RungSampler(optuna.samplers.RandomSampler(), RUNGS, 18).view(study, current)
    assert _content(view) == _content(study) and mine.number == current.number
    assert [t.intermediate_values for t in view.trials] == [t.intermediate_values for t in study.trials]


def test_the_view_is_built_once_per_trial() -> None:
    study, current = _halved_study()
    sampler = RungSampler(optuna.samplers.RandomSampler(), RUNGS, 5)
    view = sampler.view(study, current)[0]
    study.add_trial(_trial(TrialState.PRUNED, 0.1, {1: 0, 3: 0}))
    assert sampler.view(study, current)[0] is view
    study.ask()
    assert sampler.view(study, study.trials[-1])[0] is not view


def _spread(sampler: optuna.samplers.BaseSampler, seed: int, direction: str) -> float:
    """The median distance to 0.8 of 20 trials proposed after 30 random ones, where the score at epoch 3 and 5
    is (x - 0.8)**2 (maximized: its negative). The first 4 completed (asynchronous halving promotes the first
    trials whatever their scores), all the others were pruned at epoch 3, as the proposals are."""
    sign = 1 if direction == "minimize" else -1
    study = optuna.create_study(sampler=sampler, direction=direction)
    rng = random.Random(seed)
    for n in range(30):
        x = rng.random()
        if n < 4:
            study.add_trial(_trial(TrialState.COMPLETE, x, {1: 0, 3: sign * (x - 0.8) ** 2}, sign * (x - 0.8) ** 2))
        else:
            study.add_trial(_trial(TrialState.PRUNED, x, {1: 0, 3: sign * (x - 0.8) ** 2}))
    distances = []
    for _ in range(20):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        trial.report(0, 1)
        trial.report(sign * (x - 0.8) ** 2, 3)
        study.tell(trial, state=TrialState.PRUNED)
        distances.append(abs(x - 0.8))
    study.ask()
    assert (
        RungSampler(optuna.samplers.RandomSampler(), RUNGS, 5).view(study, study.trials[-1])[0].direction
        == study.direction
    )
    return statistics.median(distances)


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_tpe_learns_from_the_pruned_trials_scores_at_their_rung(direction: str) -> None:
    """Plain TPE's good group is the 4 completed trials (random ones) until it has 40 trials; through the view
    it is the best tenth of them all at epoch 3. (With no completed trial at all, plain TPE ranks the pruned
    ones by their last report and learns alike: the view changes nothing there.)"""
    seeds = range(5)
    plain = [_spread(make_sampler("tpe", seed, 30), seed, direction) for seed in seeds]
    rung = [
        _spread(TrialSeeded(lambda s: RungSampler(_sampler("tpe", s, 30), RUNGS, 5), seed), seed, direction)
        for seed in seeds
    ]
    assert max(rung) < 0.15  # measured: at most 0.09 over 12 seeds, median 0.04
    assert statistics.median(plain) > max(0.12, 3 * statistics.median(rung))  # measured: 0.20 (0.12 at least)


def _stopped_early_left(sampler: optuna.samplers.BaseSampler, seed: int) -> float:
    """The median distance to 0.8 of 20 trials proposed after 20 pruned at epoch 1 below x = 0.3 and 10 pruned
    at epoch 3 above 0.5, whose score there is (x - 0.8)**2; the proposals stop alike."""
    study = optuna.create_study(sampler=sampler)
    rng = random.Random(seed)
    for n in range(30):
        x = rng.random() * 0.3 if n < 20 else 0.5 + rng.random() / 2
        study.add_trial(_trial(TrialState.PRUNED, x, {1: 2} if x < 0.3 else {1: 1, 3: (x - 0.8) ** 2}))
    distances = []
    for _ in range(20):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        for step, value in ({1: 2} if x < 0.3 else {1: 1, 3: (x - 0.8) ** 2}).items():
            trial.report(value, step)
        study.tell(trial, state=TrialState.PRUNED)
        distances.append(abs(x - 0.8))
    return statistics.median(distances)


def test_trials_stopped_below_the_rung_keep_tpe_away_from_where_they_were() -> None:
    """Left out of the view, the 20 trials stopped at epoch 1 would leave [0, 0.3] empty, and TPE's prior would
    propose there (measured: a median distance of 0.6 to 0.77 over 8 seeds); ranked below, pruned, they keep
    it away."""
    rung = [
        _stopped_early_left(TrialSeeded(lambda s: RungSampler(_sampler("tpe", s, 30), RUNGS, 5), seed), seed)
        for seed in range(5)
    ]
    assert max(rung) < 0.15  # measured: at most 0.08 over 8 seeds


def test_what_tpe_writes_for_the_constant_liar_reaches_the_trial_and_new_parameters_are_sampled() -> None:
    """TPE writes the parameters it sampled on the trial, for other processes' constant liar: through the view
    they reach the study's trial."""
    written = []
    for sampler in (
        make_sampler("tpe", 0, 30),
        TrialSeeded(lambda s: RungSampler(_sampler("tpe", s, 30), RUNGS, 5), 0),
    ):
        study, _ = _halved_study()
        study.sampler = sampler
        trial = study.ask()
        assert 0 <= trial.suggest_float("x", 0, 1) <= 1
        assert 0 <= trial.suggest_float("y", 0, 1) <= 1  # a parameter no trial has: sampled independently
        written.append(study.trials[-1].system_attrs)
    assert written[0] and written[1].keys() == written[0].keys()


def test_it_needs_rungs_and_a_positive_min_trials() -> None:
    with pytest.raises(ValueError, match="min_trials"):
        RungSampler(optuna.samplers.RandomSampler(), [], 5)
    with pytest.raises(ValueError, match="min_trials"):
        RungSampler(optuna.samplers.RandomSampler(), RUNGS, 0)
