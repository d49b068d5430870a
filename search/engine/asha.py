"""Promotion-type asynchronous successive halving (ASHA): which paused trial earns its next rung.

Every trial trains to its next rung, is checkpointed and paused (its Optuna trial stays RUNNING, with the
user attribute `paused_at`). A worker asking for work resumes the best paused trial that ranks in the top
1/ETA of all the trials that reached its rung, looking from the highest rung down; only when none qualifies
does it start a new trial. A rung is judged only once ETA trials reached it, so no trial climbs
uncontested, and a trial that was judged too early is not lost: it waits, paused, and climbs once the
rung's ranking says so (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020; Syne
Tune's promotion-type ASHA). Optuna records in, decisions out: no TensorFlow, the search's own process uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

ETA = 3  # a rung promotes its best third
PAUSED_AT = "paused_at"  # the user attribute of a paused trial: the epoch (a rung) it stopped at


def rungs(first: int, max_epochs: int, eta: int = ETA) -> tuple[int, ...]:
    """The epochs a trial pauses at: `first`, `first` x eta, `first` x eta^2 ... below `max_epochs`, then
    `max_epochs`, where every trial ends."""
    found, rung = [], max(1, min(first, max_epochs))
    while rung < max_epochs:
        found.append(rung)
        rung *= eta
    return (*found, max_epochs)


def next_rung(ladder: Sequence[int], epoch: int) -> int:
    """The first rung after `epoch`."""
    return next(rung for rung in ladder if rung > epoch)


def paused_at(trial: FrozenTrial) -> int | None:
    """The rung a trial is paused at, or None when it is not paused."""
    if trial.state is not TrialState.RUNNING:
        return None
    epoch = trial.user_attrs.get(PAUSED_AT)
    return int(epoch) if epoch else None


PROMOTED = "promoted_at_{}"  # the user attribute recording a promotion from a rung: [rank, trials ranked]


@dataclass(frozen=True)
class Promotion:
    """A paused trial to resume from epoch `start` (its rung) to epoch `stop` (the next rung), ranked `rank` of the
    `ranked` trials that reached its rung."""

    number: int
    start: int
    stop: int
    rank: int
    ranked: int


def promotions(trials: Sequence[FrozenTrial], ladder: Sequence[int], direction: str, eta: int = ETA) -> list[Promotion]:
    """The paused trials that earned their next rung, highest rung first, best first within a rung."""
    found = []
    for rung in reversed(ladder[:-1]):
        ranked = ranking(trials, rung, direction)
        for rank, trial in enumerate(ranked[: len(ranked) // eta], start=1):
            if paused_at(trial) == rung:
                found.append(Promotion(trial.number, rung, next_rung(ladder, rung), rank, len(ranked)))
    return found


def ranking(trials: Sequence[FrozenTrial], rung: int, direction: str) -> list[FrozenTrial]:
    """The trials that reported at epoch `rung`, best first by what they reported there."""
    reached = [t for t in trials if rung in t.intermediate_values and t.state is not TrialState.FAIL]
    return sorted(reached, key=lambda t: t.intermediate_values[rung], reverse=direction == "maximize")


def never_promoted(trial: FrozenTrial, trials: Sequence[FrozenTrial], direction: str) -> str:
    """Why a trial still paused when the search ends stops there: its place at its rung."""
    rung = paused_at(trial)
    ranked = [t.number for t in ranking(trials, rung or 0, direction)]
    place = ranked.index(trial.number) + 1 if trial.number in ranked else len(ranked)
    return f"paused at epoch {rung}, never promoted: ranked {place} of {len(ranked)} there (top 1/{ETA} climb)"
