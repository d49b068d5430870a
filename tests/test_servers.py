"""The test servers work: a shared Optuna study in PostgreSQL, an MLflow server on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from servers import PostgresServer, mlflow_server

pytestmark = pytest.mark.e2e  # a PostgreSQL cluster, an `mlflow server`


def test_optuna_study_is_shared_through_postgres(postgres: PostgresServer) -> None:
    postgres.create_database("optuna_shared")
    url = postgres.url("optuna_shared")
    first = optuna.create_study(study_name="shared", storage=optuna.storages.RDBStorage(url), direction="maximize")
    other = optuna.load_study(study_name="shared", storage=optuna.storages.RDBStorage(url))
    x = optuna.distributions.FloatDistribution(0, 1)
    other.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": x}, value=0.75))
    trials = first.get_trials(deepcopy=False)
    assert [(t.params, t.value, t.state) for t in trials] == [({"x": 0.5}, 0.75, optuna.trial.TrialState.COMPLETE)]
    assert first.best_value == 0.75


def test_mlflow_server_on_postgres_serves_runs_and_artifacts(postgres: PostgresServer, tmp_path: Path) -> None:
    postgres.create_database("mlflow_tracking")
    artifacts = tmp_path / "artifacts"
    note = tmp_path / "note.txt"
    note.write_text("through the server\n")
    with mlflow_server(postgres.url("mlflow_tracking"), artifacts) as url:
        client = mlflow.MlflowClient(tracking_uri=url)
        experiment_id = client.create_experiment("servers-test")
        run = client.create_run(experiment_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        client.log_metric(run.info.run_id, "val_accuracy", 0.5, step=1)
        client.log_metric(run.info.run_id, "val_accuracy", 0.625, step=2)
        client.log_artifact(run.info.run_id, str(note), artifact_path="notes")
        client.set_terminated(run.info.run_id)

        fresh = mlflow.MlflowClient(tracking_uri=url)
        history = fresh.get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.625)]
        assert fresh.get_run(run.info.run_id).info.status == "FINISHED"
        assert [f.path for f in fresh.list_artifacts(run.info.run_id, "notes")] == ["notes/note.txt"]
        fetched = fresh.download_artifacts(run.info.run_id, "notes/note.txt", str(tmp_path / "back"))
        assert Path(fetched).read_text() == "through the server\n"
    assert list(artifacts.rglob("note.txt")), "the server stored the artifact under its destination"
