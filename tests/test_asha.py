"""The `asha` pruner's decisions on real Optuna trials: its rungs, who earns a promotion, and why the rest stop."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.engine.asha import PAUSED_AT, Promotion, never_promoted, promotions, rungs

X = FloatDistribution(0.0, 1.0)


def _trial(number: int, values: dict[int, float], paused: int | None = None, state=TrialState.RUNNING) -> FrozenTrial:
    trial = optuna.trial.create_trial(
        state=state,
        params={"x": 0.5},
        distributions={"x": X},
        intermediate_values=values,
        user_attrs={PAUSED_AT: paused} if paused else {},
        value=list(values.values())[-1] if state is TrialState.COMPLETE else None,
    )
    trial.number = number
    return trial


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [(1, 5, (1, 3, 5)), (1, 9, (1, 3, 9)), (1, 10, (1, 3, 9, 10)), (2, 20, (2, 6, 18, 20)), (4, 3, (3,)), (1, 1, (1,))],
)
def test_rungs_grow_by_eta_and_end_at_max_epochs(first: int, last: int, expected: tuple[int, ...]) -> None:
    assert rungs(first, last) == expected


def test_nothing_climbs_until_eta_trials_reached_the_rung() -> None:
    ladder = rungs(1, 9)
    two = [_trial(0, {1: 0.1}, paused=1), _trial(1, {1: 0.9}, paused=1)]
    assert promotions(two, ladder, "minimize") == []  # the first trial at a rung goes on only once contested
    three = [*two, _trial(2, {1: 0.5}, paused=1)]
    assert promotions(three, ladder, "minimize") == [Promotion(0, 1, 3, 1, 3)]


def test_the_top_third_climbs_best_first_and_the_highest_rung_first() -> None:
    ladder = rungs(1, 9)
    at_one = [_trial(n, {1: value}, paused=1) for n, value in enumerate([0.6, 0.2, 0.9, 0.4, 0.8, 0.1])]
    assert promotions(at_one, ladder, "minimize") == [Promotion(5, 1, 3, 1, 6), Promotion(1, 1, 3, 2, 6)]
    assert promotions(at_one, ladder, "maximize") == [Promotion(2, 1, 3, 1, 6), Promotion(4, 1, 3, 2, 6)]
    # Three trials reached epoch 3: the best of them, paused there, comes before any promotion from epoch 1.
    higher = [_trial(10 + n, {1: 0.0, 3: value}, paused=3) for n, value in enumerate([0.3, 0.05, 0.7])]
    assert promotions(at_one + higher, ladder, "minimize")[0] == Promotion(11, 3, 9, 1, 3)


def test_a_trial_already_promoted_or_ended_is_counted_but_not_promoted_again() -> None:
    ladder = rungs(1, 9)
    trials = [
        _trial(0, {1: 0.1, 2: 0.1}),  # promoted and training on: counted at epoch 1, not paused there
        _trial(1, {1: 0.2, 2: 0.1, 3: 0.1}, paused=3),
        _trial(2, {1: 0.3}, state=TrialState.PRUNED),
        _trial(3, {1: 0.4}, paused=1),
        _trial(4, {1: 0.5}, paused=1),
        _trial(5, {1: 0.6}, paused=1),
        _trial(6, {1: 9.0}, state=TrialState.FAIL),  # a failed trial ranks nowhere
    ]
    assert promotions(trials, ladder, "minimize") == []  # the top two at epoch 1 are no longer paused there


def test_a_trial_never_promoted_says_where_it_ranked() -> None:
    trials = [_trial(n, {1: value}, paused=1) for n, value in enumerate([0.6, 0.2, 0.9])]
    assert never_promoted(trials[0], trials, "minimize") == (
        "paused at epoch 1, never promoted: ranked 2 of 3 there (top 1/3 climb)"
    )
