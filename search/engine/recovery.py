"""Trials whose process died: fail them, close their MLflow runs as KILLED, and queue their parameters again.

A trial records the process running it (`worker` = host:pid). A RUNNING trial whose process on
this host is gone is an orphan; so is one whose heartbeat stopped, on a storage that keeps
heartbeats (PostgreSQL, where Optuna calls `OrphanHandler` itself). Journal files keep none.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import optuna
from mlflow import MlflowClient
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.engine.asha import PAUSED_AT
from search.engine.checkpoints import Checkpoints
from search.record.tracking import Tracker

MAX_RETRIES = 2
REASON = "its worker process died (killed, or out of memory) before the trial ended"


def worker_id() -> str:
    """This process, as a trial records it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class OrphanHandler:
    """Close an orphaned trial's MLflow run and queue its parameters for another try.

    It is also Optuna's `heartbeat_stale_trial_callback`, called for trials whose heartbeat stopped.
    """

    tracking_uri: str

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is not None:
            client = MlflowClient(self.tracking_uri)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "atelier.state", TrialState.FAIL.name)
                client.set_tag(run_id, "atelier.reason", REASON)
                client.set_terminated(run_id, "KILLED")
        retries = int(trial.user_attrs.get("retries", 0))
        if trial.params and retries < MAX_RETRIES:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries + 1})


def recover_orphans(
    study: optuna.Study, storage: BaseStorage, tracking_uri: str, checkpoints: Checkpoints | None = None
) -> list[int]:
    """Fail the study's orphaned trials, close their runs and queue them again; their numbers.

    A trial of the `asha` pruner with a checkpoint in `checkpoints` is no orphan: paused, it waits; killed
    while it trained on from its checkpoint, it is paused there again. Runs left open by trials that ended
    while the tracking server was away are closed as KILLED too.
    """
    optuna.storages.fail_stale_trials(study)  # where the storage keeps heartbeats; it calls OrphanHandler
    handler = OrphanHandler(tracking_uri)
    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not process_gone(trial.user_attrs.get("worker")):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if checkpoints is not None and _paused_again(trial, trial_id, storage, checkpoints, tracking_uri):
            continue
        try:
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another process recovered it first
        handler(study, trial)
        recovered.append(trial.number)
    _close_stale_runs(study, MlflowClient(tracking_uri))
    return recovered


def _paused_again(
    trial: FrozenTrial, trial_id: int, storage: BaseStorage, checkpoints: Checkpoints, tracking_uri: str
) -> bool:
    """Whether the trial waits, paused at its checkpoint: already paused, or paused again now (its claim, held by
    a process that died, released)."""
    epoch = checkpoints.epoch(trial.number)
    if epoch is None:
        return False
    claimant = checkpoints.claimant(trial.number)
    if claimant is not None and not process_gone(claimant):
        return True  # a live worker is resuming it
    checkpoints.release(trial.number)
    if trial.user_attrs.get(PAUSED_AT) != epoch:
        storage.set_trial_user_attr(trial_id, PAUSED_AT, epoch)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id is not None:
            Tracker(tracking_uri).pause_trial(run_id, epoch)
    return True


def _close_stale_runs(study: optuna.Study, client: MlflowClient) -> None:
    """Close as KILLED the trial runs still open whose Optuna trial is no longer running."""
    experiment = client.get_experiment_by_name(study.study_name)
    if experiment is None:
        return
    running = {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for run in client.search_runs(
        [experiment.experiment_id],
        "tags.`atelier.kind` = 'trial' and attributes.status = 'RUNNING'",
        max_results=10_000,
    ):
        if run.data.tags.get("atelier.trial_number") not in running:
            client.set_tag(run.info.run_id, "atelier.reason", "its trial ended while its run could not be closed")
            client.set_terminated(run.info.run_id, "KILLED")


def process_gone(worker: str | None) -> bool:
    """Whether `worker` (host:pid) names a process of this host that no longer runs."""
    if worker is None:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """A process that has exited but whose parent has not reaped it yet."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
