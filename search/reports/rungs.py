"""How far a pruner's early judgements can be trusted: at each rung, how the trials ranked there against at their end.

Optuna trials in, a small table out (`rung_correlations`: the study report, or any Optuna study); no MLflow, no Keras.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import pandas as pd
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from search.engine.asha import PROMOTED

PROMOTED_PREFIX = PROMOTED.format("")  # asha's record of a promotion from epoch K
MIN_TRIALS = 3  # fewer trials than this at a rung make no ranking worth a correlation
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # a pruned trial's last epoch is where it stopped


@dataclass(frozen=True)
class RungCorrelation:
    """The trials that reported at `epoch` and trained past it: their ranking there against at their last epoch.

    `spearman` and `kendall` are NaN below `MIN_TRIALS` trials (and where every value ties); `best_rank` is
    where the trial that ended best ranked at `epoch` (1: first), None below `MIN_TRIALS`.
    """

    epoch: int
    trials: int
    spearman: float
    kendall: float
    best_rank: int | None

    @property
    def too_few(self) -> bool:
        """Fewer than `MIN_TRIALS` trials to rank."""
        return self.trials < MIN_TRIALS


def rung_correlations(
    trials: Sequence[FrozenTrial], direction: StudyDirection, epochs: Sequence[int] | None = None
) -> list[RungCorrelation]:
    """Spearman's rho and Kendall's tau, at each of `epochs` (default: `judged_epochs`), between the values the
    completed and pruned trials that trained past it reported there and at their last epoch.

    `direction` (the study's) says which end of the metric is best, for `best_rank`; the correlations do
    not depend on it.
    """
    finished = [t for t in trials if t.state in FINISHED and t.intermediate_values]
    rows = []
    for epoch in judged_epochs(finished) if epochs is None else epochs:
        pairs = [
            (t.intermediate_values[epoch], t.intermediate_values[t.last_step])
            for t in finished
            if epoch in t.intermediate_values and t.last_step > epoch
        ]
        pairs = [(early, last) for early, last in pairs if math.isfinite(early) and math.isfinite(last)]
        rows.append(_correlation(epoch, pairs, direction))
    return rows


def judged_epochs(trials: Sequence[FrozenTrial]) -> list[int]:
    """The epochs at which the pruner judged the trials.

    Optuna's successive halving (atelier's `halving`, and each `hyperband` bracket) records a trial's value at
    every rung it reaches (`completed_rung_K`): its rungs are the epochs that reported those values (the first
    epoch after the rung before with that value); the `asha` pruner records each promotion (`promoted_at_K`),
    and its rungs are those K. Without either record (the median pruner judges every epoch,
    no pruner none), every epoch some trial trained past.
    """
    judged = set()
    for trial in trials:
        judged |= {
            int(key.removeprefix(PROMOTED_PREFIX)) for key in trial.user_attrs if key.startswith(PROMOTED_PREFIX)
        }
        after = 0
        for rung in itertools.count():
            key = f"completed_rung_{rung}"
            if key not in trial.system_attrs:
                break
            value = trial.system_attrs[key]
            after = min((s for s, v in trial.intermediate_values.items() if s > after and v == value), default=None)
            if after is None:
                break
            judged.add(after)
    return sorted(judged or {s for t in trials for s in t.intermediate_values if s < t.last_step})


def _correlation(epoch: int, pairs: list[tuple[float, float]], direction: StudyDirection) -> RungCorrelation:
    """The row of one epoch from the (value there, value at the last epoch) of each trial that trained past it."""
    if len(pairs) < MIN_TRIALS:
        return RungCorrelation(epoch, len(pairs), math.nan, math.nan, None)
    early, last = zip(*pairs, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # every value tied: NaN is the answer
        spearman, kendall = stats.spearmanr(early, last).statistic, stats.kendalltau(early, last).statistic
    sign = 1 if direction is StudyDirection.MINIMIZE else -1
    best_early, _ = min(pairs, key=lambda pair: sign * pair[1])
    best_rank = 1 + sum(sign * value < sign * best_early for value in early)
    return RungCorrelation(epoch, len(pairs), float(spearman), float(kendall), best_rank)


def rung_summary(rows: Sequence[RungCorrelation]) -> str:
    """One line: 'rank correlation (Spearman) of each rung with the last epoch: epoch 1 0.62 (20 trials), epoch 3
    too few (2 trials)'."""
    if not rows:
        return "no trial has trained past an epoch it was judged at"
    shown = (f"epoch {r.epoch} {'too few' if r.too_few else f'{r.spearman:.2f}'} ({r.trials} trials)" for r in rows)
    return "rank correlation (Spearman) of each rung with the last epoch: " + ", ".join(shown)


def rungs_table(rows: Sequence[RungCorrelation]) -> pd.DataFrame:
    """The rows as a table (`rungs.csv`): epoch, trials, spearman, kendall, best_rank; blank where too few."""
    table = pd.DataFrame([asdict(row) for row in rows], columns=[field.name for field in fields(RungCorrelation)])
    return table.astype({"epoch": int, "trials": int, "spearman": float, "kendall": float, "best_rank": "Int64"})
