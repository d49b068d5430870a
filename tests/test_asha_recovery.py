"""Recovery under the `asha` pruner, on a real journal storage and MLflow store: a trial whose process died is
paused at its checkpoint when it has one, and an orphan (failed, queued again) when it has none."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.engine.asha import PAUSED_AT
from search.engine.checkpoints import STATE, Checkpoints
from search.engine.recovery import recover_orphans
from search.record.store import Store


def _dead_worker() -> str:
    """host:pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}"


def _running(study: optuna.Study, worker: str, epochs: int) -> int:
    """A RUNNING trial of `worker` that reported `epochs` epochs; its number."""
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    for step in range(1, epochs + 1):
        trial.report(1.0 / step, step)
    trial.set_user_attr("worker", worker)
    return trial.number


def test_a_dead_workers_trial_with_a_checkpoint_waits_paused_and_one_without_is_an_orphan(tmp_path: Path) -> None:
    store = Store(tmp_path / "mlruns")
    storage = store.storage()
    study = optuna.create_study(study_name="s", storage=storage)
    dead = _dead_worker()
    killed_mid_part = _running(study, dead, 4)  # resumed at 3, killed during epoch 5: its checkpoint is epoch 3's
    paused = _running(study, dead, 3)
    orphan = _running(study, dead, 1)  # killed before its first rung: no checkpoint
    storage.set_trial_user_attr(study.trials[paused]._trial_id, PAUSED_AT, 3)
    checkpoints = Checkpoints(store.checkpoints("s"))
    for number in (killed_mid_part, paused):
        checkpoints.of(number).mkdir(parents=True)
        (checkpoints.of(number) / STATE).write_text(json.dumps({"epoch": 3, "best_epoch": 3, "best": {}}))
    assert checkpoints.claim(killed_mid_part, dead)  # the dead worker's claim

    assert recover_orphans(study, storage, store.tracking, checkpoints) == [orphan]

    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert trials[killed_mid_part].state is TrialState.RUNNING and trials[killed_mid_part].user_attrs[PAUSED_AT] == 3
    assert checkpoints.claimant(killed_mid_part) is None  # released: another worker may resume it
    assert trials[paused].state is TrialState.RUNNING and trials[paused].user_attrs[PAUSED_AT] == 3
    assert trials[orphan].state is TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in trials if t.state is TrialState.WAITING] == [orphan]


def test_a_claim_is_held_by_one_worker_at_a_time(tmp_path: Path) -> None:
    checkpoints = Checkpoints(tmp_path / "checkpoints" / "s")
    assert checkpoints.claim(4, "host:1")
    assert not checkpoints.claim(4, "host:2")
    assert checkpoints.claimant(4) == "host:1"
    checkpoints.release(4)
    assert checkpoints.claim(4, "host:2") and checkpoints.claimant(4) == "host:2"
