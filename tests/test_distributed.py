"""Two machines, one study: `atelier run` twice at once on a real PostgreSQL and a real `mlflow server`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import psycopg
import pytest
from background import Background, Prepared
from mlflow import MlflowClient
from optuna.trial import TrialState
from servers import PostgresServer, mlflow_server, postgres_server
from sqlalchemy.exc import SQLAlchemyError

from search.record.store import Store

pytestmark = pytest.mark.e2e  # real searches as subprocesses on PostgreSQL and an `mlflow server`
TARGET = 6


def share_one_study(folder: Path) -> dict[str, object]:
    """Two machines search one study at once: console-script processes started alike, in folders of their own,
    sharing nothing but a PostgreSQL cluster and an `mlflow server` (two workers) made for them.

    Run in the background (conftest.BACKGROUND): the exit statuses and outputs, and the study's trials and trial
    runs as the two servers hold them, read before they stop, with the database password.
    """
    with (
        tempfile.TemporaryDirectory(prefix="atelier-pg-") as cluster,  # not under pytest's tmp: see conftest
        postgres_server(Path(cluster)) as postgres,
    ):
        postgres.create_database("optuna_shared_search")
        postgres.create_database("mlflow_shared_search")
        storage = postgres.url("optuna_shared_search")
        with mlflow_server(postgres.url("mlflow_shared_search"), folder / "artifacts", workers=2) as tracking:
            command = [
                str(Path(sys.executable).parent / "atelier"),
                "run",
                "--objective",
                "digits",
                "--study",
                "shared",
                "--trials",
                str(TARGET),
                "--max-epochs",
                "2",
                "--workers",
                "1",
                "--storage",
                storage,
                "--tracking-uri",
                tracking,
            ]
            machines = []
            for name in ("machine-a", "machine-b"):
                (folder / name).mkdir()
                machines.append(
                    subprocess.Popen(
                        command, cwd=folder / name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                )
            outputs = [machine.communicate(timeout=600) for machine in machines]
            client = MlflowClient(tracking)
            experiment = client.get_experiment_by_name("shared")
            runs = (
                []
                if experiment is None
                else client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'")
            )
        trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
        return {
            "statuses": [machine.returncode for machine in machines],
            "outputs": outputs,
            "trials": [
                {"number": t.number, "state": t.state.name, "params": t.params, "user_attrs": t.user_attrs}
                for t in trials
            ],
            "runs": [{"run_id": r.info.run_id, "params": r.data.params, "tags": r.data.tags} for r in runs],
            "password": postgres.password,
        }


@pytest.fixture(scope="module")
def shared_study(background: Background) -> Prepared:
    return background.result("shared_study")


@pytest.mark.usefixtures("postgres")  # skips, or fails in CI, without PostgreSQL; the scenario runs its own cluster
def test_two_processes_share_one_study_through_postgresql_and_an_mlflow_server(shared_study: Prepared) -> None:
    """`share_one_study`: both machines finish, the study holds the target, both ran trials, each has its run."""
    found = shared_study.printed
    assert found["statuses"] == [0, 0], [err for _, err in found["outputs"]]
    trials, runs, password = found["trials"], found["runs"], found["password"]
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    assert TARGET <= len(finished) <= TARGET + 1  # the two may each start the last trial
    assert len(trials) == len(finished), [(t["number"], t["state"], t["user_attrs"].get("reason")) for t in trials]
    assert sorted(t["number"] for t in trials) == list(range(len(trials)))
    assert len({t["user_attrs"]["worker"] for t in trials}) >= 2  # both machines ran trials
    drawn = [tuple(sorted(t["params"].items())) for t in trials]  # machines started together draw their own trials
    assert len(set(drawn)) == len(drawn), drawn
    assert sorted(int(r["tags"]["atelier.trial_number"]) for r in runs) == list(range(len(trials)))
    assert {r["run_id"] for r in runs} == {t["user_attrs"]["mlflow_run_id"] for t in trials}
    for out, err in found["outputs"]:  # the password never reaches the terminal, nor an MLflow param or tag
        assert password not in out + err
    for run in runs:
        assert not [v for v in (*run["params"].values(), *run["tags"].values()) if password in v]


@pytest.mark.usefixtures("postgres")  # skips, or fails in CI, without PostgreSQL; the test runs its own cluster
def test_a_database_restart_mid_search_is_ridden_out(workdir: Path, atelier) -> None:
    """The search runs in this process; a thread restarts the database once the first trial has finished."""
    with tempfile.TemporaryDirectory(prefix="atelier-pg-") as folder, postgres_server(Path(folder)) as server:
        server.create_database("optuna_restart")
        storage = server.url("optuna_restart")
        restarted: list[float] = []

        def restart() -> None:
            deadline = time.monotonic() + 180
            while not _has_finished_trial(storage):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.5)
            server.stop()  # every open connection is cut while the search trains
            time.sleep(4)
            server.start()
            restarted.append(time.monotonic())

        restarter = threading.Thread(target=restart, daemon=True, name="database-restart")
        restarter.start()
        status, _, err = atelier(
            "run",
            "--objective",
            "digits",
            "--study",
            "restart",
            "--trials",
            "3",
            "--max-epochs",
            "6",
            "--pruner",
            "none",
            "--workers",
            "1",
            "--storage",
            storage,
        )
        restarter.join(timeout=60)
        assert restarted, "the database was never restarted: no trial finished within 180 s"
        assert status == 0, err
        trials = optuna.load_study(study_name="restart", storage=storage).get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        finished = max(t.datetime_complete for t in trials).timestamp()
        assert finished > time.time() - (time.monotonic() - restarted[0]), "the search ended before the restart"


def _has_finished_trial(storage: str) -> bool:
    try:
        study = optuna.load_study(study_name="restart", storage=storage)
    except (KeyError, SQLAlchemyError):  # not made yet, or its tables are being made by the search
        return False
    return any(t.state is TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def test_a_storage_call_cut_mid_query_is_made_again(postgres: PostgresServer, tmp_path: Path) -> None:
    """A query in flight when its connection is cut (what a database restart does to a busy search) is made
    again on a new connection: held behind a table lock, its backend is terminated, then the lock released."""
    postgres.create_database("optuna_cut")
    url = postgres.url("optuna_cut")
    study = optuna.create_study(study_name="cut", storage=Store(tmp_path, storage_url=url).storage())
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    storage, study_id = study._storage, study._study_id
    answers: list[object] = []
    reader = threading.Thread(target=lambda: answers.append(_attempt(storage.get_all_trials, study_id)))
    with psycopg.connect(
        host=postgres.host, port=postgres.port, user=postgres.user, password=postgres.password, dbname="optuna_cut"
    ) as locker:
        locker.execute("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE")  # held until the block's commit
        reader.start()
        waiting = _wait_for_backend_waiting_on(locker)
        [[terminated]] = locker.execute("SELECT pg_terminate_backend(%s)", (waiting,)).fetchall()
        assert terminated
    reader.join(timeout=60)
    [answer] = answers
    assert not isinstance(answer, Exception), f"the cut call was not made again: {answer!r}"
    assert [trial.value for trial in answer] == [0.5]


def _attempt(call, *args):
    try:
        return call(*args)
    except Exception as error:  # the test reports it
        return error


def _wait_for_backend_waiting_on(locker: psycopg.Connection) -> int:
    """The process id of the backend whose query waits for a lock in this database."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = locker.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchall()
        if rows:
            return rows[0][0]
        time.sleep(0.1)
    raise AssertionError("the storage's query never waited on the lock")
