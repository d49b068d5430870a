"""The end of an `asha` search: trials still paused never earned their next rung, and are closed as pruned there."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.engine.asha import never_promoted, paused_at
from search.engine.checkpoints import Checkpoints
from search.engine.recovery import process_gone
from search.record.tracking import Tracker

SUMMARY = ("best_epoch", "epochs", "fit_seconds", "n_params", "trial_seconds", "peak_rss_mb")


def close_paused(study: optuna.Study, tracker: Tracker, checkpoints: Checkpoints) -> list[int]:
    """Close the study's paused trials (none held by a live worker) as pruned at their rung, their runs with
    them, and remove their checkpoints; their numbers."""
    trials = study.get_trials(deepcopy=False)
    closed = []
    for trial in trials:
        if paused_at(trial) is None:
            continue
        claimant = checkpoints.claimant(trial.number)
        if claimant is not None and not process_gone(claimant):
            continue
        reason = never_promoted(trial, trials, study.direction.name.lower())
        summary = {k: float(v) for k, v in trial.user_attrs.items() if k in SUMMARY or k.startswith("best_")}
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is not None:
            tracker.finish_trial(run_id, TrialState.PRUNED, summary, reason)
        study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)  # noqa: SLF001
        study.tell(trial.number, state=TrialState.PRUNED)
        checkpoints.remove(trial.number)
        closed.append(trial.number)
    return closed
