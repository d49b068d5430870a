"""`atelier run --pruner asha` on the digits: trials paused at rungs in the store and resumed when they earn it.

Real searches (the command in-process, and once as its own process SIGKILLed while trials are paused), a real
journal storage and MLflow store; the checks read what a user would read afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from stores import journal_study, local_client

from search.engine.asha import ETA, PAUSED_AT, PROMOTED, rungs
from search.engine.warm_start import SOURCE_ATTR

pytestmark = pytest.mark.e2e

LADDER = rungs(1, 9)  # the dense space has no warm-up: its first rung is epoch 1


def _args(study: str, trials: int) -> list[str]:
    return [
        "run",
        "--objective",
        "digits",
        "--study",
        study,
        "--pruner",
        "asha",
        "--trials",
        str(trials),
        "--max-epochs",
        str(LADDER[-1]),
        "--workers",
        "2",
        "--quiet",
    ]


def _check_ladder(trials: list[FrozenTrial]) -> None:
    """No trial climbed uncontested: every trial that trained past a rung was promoted from it ranked in the top
    third of at least ETA trials there, and at every rung fewer trials went on than reached it."""
    screened = [t for t in trials if SOURCE_ATTR not in t.user_attrs and t.state is not TrialState.FAIL]
    for trial in screened:  # a queued one is measured, not screened; an orphan failed
        for rung in (r for r in LADDER[:-1] if (trial.last_step or 0) > r):
            rank, ranked = trial.user_attrs[PROMOTED.format(rung)]
            assert ranked >= ETA and rank <= ranked // ETA, (trial.number, rung, rank, ranked)
    for rung, after in zip(LADDER, LADDER[1:], strict=False):
        assert sum(after in t.intermediate_values for t in trials) < sum(rung in t.intermediate_values for t in trials)


def _check_ended(workdir: Path, study: str, orphans: frozenset[int] = frozenset()) -> list[FrozenTrial]:
    """Every trial ended (failed: only `orphans`), each with one MLflow run whose epochs run on without a gap;
    no checkpoint is left."""
    trials = journal_study(workdir, study).get_trials()
    assert not [t.number for t in trials if t.state is TrialState.RUNNING]
    assert {t.number for t in trials if t.state is TrialState.FAIL} == orphans
    assert not list((workdir / "mlruns" / "checkpoints" / study).glob("*/"))
    _check_ladder(trials)
    client = local_client(workdir)
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'")
    assert sorted(int(r.data.tags["atelier.trial_number"]) for r in runs) == sorted(t.number for t in trials)
    for trial in (t for t in trials if t.number not in orphans):
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "val_loss")})
        assert steps == list(range(1, trial.last_step + 1)), (trial.number, steps)
        assert run.data.tags["atelier.state"] == trial.state.name and run.info.status != "RUNNING"
        assert int(trial.user_attrs["epochs"]) == trial.last_step
        if trial.state is TrialState.COMPLETE:
            assert trial.last_step == LADDER[-1]
            assert "model.keras" in {a.path for a in client.list_artifacts(run.info.run_id)}
        else:
            assert trial.last_step in LADDER and "never promoted" in run.data.tags["atelier.reason"]
    return trials


def test_a_search_pauses_at_rungs_resumes_the_best_and_closes_the_rest(workdir: Path, atelier) -> None:
    status, out, err = atelier(*_args("asha", 12))
    assert status == 0, err
    trials = _check_ended(workdir, "asha")
    assert len(trials) == 12
    completed = [t for t in trials if t.state is TrialState.COMPLETE]
    assert completed, "no trial earned every rung"
    assert any(t.last_step == LADDER[1] for t in trials)  # some climbed one rung and stopped there
    assert journal_study(workdir, "asha").best_trial.number in {t.number for t in completed}


def test_paused_trials_survive_a_sigkill_of_the_whole_search_and_the_next_one_resumes_them(
    workdir: Path, atelier
) -> None:
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "atelier"), *_args("killed", 12)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    paused = _wait_for_paused(workdir, process, "killed", count=2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    left = {t.number: t for t in journal_study(workdir, "killed").get_trials()}
    for trial in paused:
        assert left[trial.number].state is TrialState.RUNNING  # still paused: nothing closed it
        assert (workdir / "mlruns" / "checkpoints" / "killed" / str(trial.number) / "model.keras").is_file()

    status, out, err = atelier(*_args("killed", 12))
    assert status == 0, err
    found = re.search(r"found orphaned trials? ([\d, ]+) of a process", out)
    orphans = frozenset(int(n) for n in found.group(1).split(", ")) if found else frozenset()
    assert not orphans & {t.number for t in paused}  # a paused trial is no orphan: only trials in a first part
    trials = _check_ended(workdir, "killed", orphans)
    assert {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs} == orphans
    for trial in paused:  # each paused trial ended as ASHA ends a trial: completed, or never promoted
        assert trials[trial.number].state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert trials[trial.number].last_step >= trial.last_step


def _wait_for_paused(workdir: Path, process: subprocess.Popen, study: str, count: int) -> list[FrozenTrial]:
    """The study's paused trials once `count` are paused (the command still running)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            trials = journal_study(workdir, study).get_trials()
        except (KeyError, FileNotFoundError, optuna.exceptions.StorageInternalError):
            trials = []  # the journal or the study is not written yet
        paused = [t for t in trials if t.state is TrialState.RUNNING and t.user_attrs.get(PAUSED_AT)]
        if len(paused) >= count:
            return paused
        time.sleep(0.2)
    pytest.fail(f"{count} trials never paused within 240 s")
