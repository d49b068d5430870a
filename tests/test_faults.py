"""Faults in real searches: SIGKILL of the whole command or of one worker, Ctrl-C, then resume.

A command that is killed or interrupted runs as its own process (the console script); the command run
again to resume runs in-process (`atelier` fixture), as does the search whose worker a thread kills:
the same code, without a second interpreter importing TensorFlow and MLflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from servers import mlflow_server
from stores import journal_study, local_client

from search.record import store
from search.record.store import Store

pytestmark = pytest.mark.e2e  # real searches as subprocesses, killed; an `mlflow server`

# Small slow trials: batch 8, 7 epochs and no pruning, so a trial stays mid-fit for seconds after its
# first epoch is seen (about 0.7 s an epoch here, 4 s for the other six) and a signal sent then lands
# inside model.fit.
SLOW_SPACE = """
[params]
dense_layers = 1
dense_units = {choices = [32, 64]}
batch_size = 8
learning_rate = {low = 1e-3, high = 3e-3, log = true}
"""
EPOCHS = 7
# Ctrl-C must land before the trial ends, however late a loaded machine lets this test see its first
# epoch (a CI run saw the trial only after it had finished, and it completed).
LONG_EPOCHS = 20


def _args(*args: str, epochs: int = EPOCHS) -> list[str]:
    return [
        "run",
        "--objective",
        "digits",
        "--space",
        "slow.toml",
        "--study",
        "faults",
        "--pruner",
        "none",
        "--workers",
        "1",
        "--max-epochs",
        str(epochs),
        "--quiet",
        *args,
    ]


def _command(*args: str, epochs: int) -> list[str]:
    return [str(Path(sys.executable).parent / "atelier"), *_args(*args, epochs=epochs)]


def _study(workdir: Path) -> optuna.Study:
    return journal_study(workdir, "faults")


def _start(workdir: Path, *args: str, epochs: int = EPOCHS, env: dict[str, str] | None = None) -> subprocess.Popen:
    (workdir / "slow.toml").write_text(SLOW_SPACE)
    return subprocess.Popen(
        _command(*args, epochs=epochs),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )


def _wait_mid_fit(workdir: Path, process: subprocess.Popen | None, number: int, seconds: float = 180) -> FrozenTrial:
    """Trial `number` once it is RUNNING and has reported an epoch (so it is inside model.fit).

    `process`: the command's, which must not end first; None when the command runs in this process.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process is None or process.poll() is None, process.communicate()
        trials = {}
        if (workdir / "mlruns" / "optuna.journal").is_file():
            try:
                trials = {t.number: t for t in _study(workdir).get_trials()}
            except KeyError:  # the journal file is made a moment before the study is written into it
                pass
        trial = trials.get(number)
        if trial is not None and trial.state is TrialState.RUNNING and trial.intermediate_values:
            return trial
        time.sleep(0.1)
    pytest.fail(f"trial {number} never ran an epoch within {seconds} s")


def _check_recovered(workdir: Path, killed: FrozenTrial, target: int) -> None:
    """The killed trial failed with its run KILLED, was retried with its parameters, and the study finished."""
    study, client = _study(workdir), local_client(workdir)
    trials = study.get_trials()
    assert trials[killed.number].state is TrialState.FAIL
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state is TrialState.COMPLETE
    assert len([t for t in trials if t.state is TrialState.COMPLETE]) == target
    assert not [t for t in trials if t.state is TrialState.RUNNING]
    run = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["atelier.state"] == "FAIL"
    assert "worker process died" in run.data.tags["atelier.reason"]
    experiment = client.get_experiment_by_name("faults")
    runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'")
    assert sorted(r.data.tags["atelier.trial_number"] for r in runs) == sorted(str(t.number) for t in trials)
    for trial in trials:
        if trial.state is TrialState.COMPLETE:
            artifacts = {a.path for a in client.list_artifacts(trial.user_attrs["mlflow_run_id"])}
            assert "model.keras" in artifacts


def test_sigkill_of_the_whole_command_then_the_same_command_finishes(workdir: Path, atelier) -> None:
    args = ("--trials", "2")
    process = _start(workdir, *args)
    killed = _wait_mid_fit(workdir, process, 1)
    assert "libtensorflow" not in Path(f"/proc/{process.pid}/maps").read_text()  # only its workers load it
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    first = _study(workdir).get_trials()
    assert first[0].state is TrialState.COMPLETE and first[1].state is TrialState.RUNNING
    assert local_client(workdir).get_run(killed.user_attrs["mlflow_run_id"]).info.status == "RUNNING"

    status, out, err = atelier(*_args(*args))
    assert status == 0, err
    assert f"found orphaned trial {killed.number}" in out
    _check_recovered(workdir, killed, target=2)


def test_a_journal_lock_left_by_a_killed_command_is_broken(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command killed mid-append leaves the journal's lock behind; the next command (relative store path, as
    the CLI passes it) takes the lock once the journal has not changed for the grace period, and goes on."""
    monkeypatch.setattr(store, "JOURNAL_LOCK_GRACE_SECONDS", 3)
    killed = Store(Path("mlruns")).storage()
    optuna.create_study(study_name="locked", storage=killed)
    assert killed._backend._lock.acquire()  # held, never released: what a SIGKILL mid-append leaves
    created: list[optuna.Study] = []
    started = time.monotonic()
    thread = threading.Thread(
        target=lambda: created.append(optuna.create_study(study_name="next", storage=Store(Path("mlruns")).storage())),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=30)
    assert created, "the next command still waits on the lock after 30 s"
    assert 3 <= time.monotonic() - started < 30
    assert optuna.get_all_study_names(Store(Path("mlruns")).storage()) == ["locked", "next"]


def test_a_killed_worker_is_replaced_and_the_search_goes_on(workdir: Path, atelier) -> None:
    """The command runs in this process; a thread SIGKILLs its worker process once trial 0 is mid-fit."""
    (workdir / "slow.toml").write_text(SLOW_SPACE)
    killed: list[FrozenTrial] = []

    def kill_the_worker() -> None:
        trial = _wait_mid_fit(workdir, None, 0)
        os.kill(int(trial.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
        killed.append(trial)

    killer = threading.Thread(target=kill_the_worker, daemon=True, name="worker-killer")
    killer.start()
    status, out, err = atelier(*_args("--trials", "1"))
    killer.join(timeout=10)
    assert killed, "trial 0 was never seen mid-fit, so no worker was killed"
    assert status == 0, err
    assert "a worker process died (signal 9); trial 0 failed and queued again" in out
    _check_recovered(workdir, killed[0], target=1)  # the retry, in a new worker, is the trial that counts


def test_ctrl_c_fails_the_trial_with_its_reason_exits_130_and_resumes(workdir: Path, atelier) -> None:
    args = ("--trials", "1")
    process = _start(workdir, *args, epochs=LONG_EPOCHS)
    interrupted = _wait_mid_fit(workdir, process, 0)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "atelier: interrupted; run the same command again to resume"
    trial = _study(workdir).get_trials()[0]
    assert trial.state is TrialState.FAIL and trial.user_attrs["reason"].startswith("interrupted")
    run = local_client(workdir).get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["atelier.reason"].startswith("interrupted")

    status, _, err = atelier(*_args(*args, epochs=LONG_EPOCHS))
    assert status == 0, err
    states = [t.state for t in _study(workdir).get_trials()]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_tracking_server_that_goes_away_stops_the_search_clearly_and_it_resumes(
    workdir: Path, tmp_path_factory: pytest.TempPathFactory, atelier
) -> None:
    folder = tmp_path_factory.mktemp("tracking")
    backend, artifacts = f"sqlite:///{folder / 'tracking.db'}", folder / "artifacts"
    args = ("--trials", "2")
    quick_retries = os.environ | {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}  # MLflow's own backoff, shortened
    with mlflow_server(backend, artifacts) as tracking:
        process = _start(workdir, *args, "--tracking-uri", tracking, env=quick_retries)
        _wait_mid_fit(workdir, process, 1)
    out, err = process.communicate(timeout=300)  # the server is gone
    assert process.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in out + err
    assert f"the MLflow tracking server {tracking} stopped answering" in err and "run the same command" in err
    assert _study(workdir).get_trials()[0].state is TrialState.COMPLETE

    with mlflow_server(backend, artifacts) as tracking:  # back, on another port
        status, _, err = atelier(*_args(*args, "--tracking-uri", tracking))
        assert status == 0, err
        client = MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
        trials = _study(workdir).get_trials()
        assert [t.state for t in trials].count(TrialState.COMPLETE) == 2
        assert not [r for r in runs if r.info.status == "RUNNING"]
        first = client.get_run(trials[0].user_attrs["mlflow_run_id"])
        assert first.info.status == "FINISHED"
        assert "model.keras" in {a.path for a in client.list_artifacts(first.info.run_id)}
