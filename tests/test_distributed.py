"""Two machines, one study: `atelier run` twice at once on a real PostgreSQL and a real `mlflow server`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from servers import PostgresServer, mlflow_server

TARGET = 6


def test_two_processes_share_one_study_through_postgresql_and_an_mlflow_server(
        postgres: PostgresServer, tmp_path: Path) -> None:
    postgres.create_database("optuna_shared_search")
    postgres.create_database("mlflow_shared_search")
    storage = postgres.url("optuna_shared_search")
    with mlflow_server(postgres.url("mlflow_shared_search"), tmp_path / "artifacts", workers=2) as tracking:
        command = [str(Path(sys.executable).parent / "atelier"), "run", "--objective", "digits", "--study", "shared",
                   "--trials", str(TARGET), "--max-epochs", "3", "--storage", storage, "--tracking-uri", tracking]
        machines = []
        for name in ("machine-a", "machine-b"):  # separate folders: nothing shared but the two servers
            (tmp_path / name).mkdir()
            machines.append(subprocess.Popen(command, cwd=tmp_path / name, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
        outputs = [machine.communicate(timeout=600) for machine in machines]
        assert [machine.returncode for machine in machines] == [0, 0], outputs
        client = MlflowClient(tracking)
        experiment = client.get_experiment_by_name("shared")
        runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'")

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert TARGET <= len(finished) <= TARGET + 1  # the two may each start the last trial
    assert len(trials) == len(finished), [(t.number, t.state, t.user_attrs.get("reason")) for t in trials]
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len({t.user_attrs["worker"] for t in trials}) >= 2  # both machines ran trials
    assert sorted(int(r.data.tags["atelier.trial_number"]) for r in runs) == list(range(len(trials)))
    assert {r.info.run_id for r in runs} == {t.user_attrs["mlflow_run_id"] for t in trials}
    for out, err in outputs:  # the password never reaches the terminal, nor an MLflow param or tag
        assert postgres.password not in out + err
    for run in runs:
        assert not [v for v in (*run.data.params.values(), *run.data.tags.values()) if postgres.password in v]
