"""The study report and the data report runs: real searches, a real MLflow store, real Optuna studies."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from stores import journal_study, local_client

from search.reports.study import write_study_report

FIGURES = ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate", "slice")
REPORT_FILES = {f"{name}.png" for name in FIGURES} | {"report.html", "trials.csv", "best_trial.json"}


def _runs(client: MlflowClient, study: str, kind: str) -> list:
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], f"tags.`atelier.kind` = '{kind}'")


FIRST = "digits-dense"  # the shared store's study run three times: 6 trials, resumed to 8, then 8 again


@pytest.fixture(scope="module")
def searched(digits_store) -> Path:
    """Real searches on the same digits data: `second` (2 trials), then digits-dense (6, 8, 8 again)."""
    return digits_store.folder


@pytest.fixture(scope="module")
def client(searched: Path) -> MlflowClient:
    return local_client(searched)


@pytest.mark.e2e
def test_each_study_has_one_report_run_with_every_artifact(searched: Path, client: MlflowClient) -> None:
    for name in (FIRST, "second"):
        [run] = _runs(client, name, "study")
        assert run.info.run_name == "study-report" and run.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= REPORT_FILES - {"param_importances.png"}
    [first] = _runs(client, FIRST, "study")
    assert {a.path for a in client.list_artifacts(first.info.run_id)} == REPORT_FILES


@pytest.mark.e2e
def test_the_report_run_records_the_study_after_each_search(searched: Path, client: MlflowClient) -> None:
    study = journal_study(searched, FIRST)
    [run] = _runs(client, FIRST, "study")
    history = client.get_metric_history(run.info.run_id, "trials_complete")
    assert [m.step for m in history] == [6, 8, 8]  # one point per report, at the study's trial count
    busy = client.get_metric_history(run.info.run_id, "cores_busy")  # each search's share, from /proc/stat
    assert [m.step for m in busy] == [6, 8, 8] and all(0 < m.value <= 1 for m in busy)
    finished = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert history[-1].value == len(finished)
    assert run.data.metrics["best_val_loss"] == pytest.approx(study.best_value)
    assert run.data.tags["atelier.best_trial"] == str(study.best_trial.number)
    assert run.data.tags["atelier.best_run_id"] == study.best_trial.user_attrs["mlflow_run_id"]
    importances = {k: v for k, v in run.data.metrics.items() if k.startswith("importance_")}
    shared = set.intersection(*(set(t.params) for t in finished))  # fANOVA weighs the parameters all trials have
    assert set(importances) == {f"importance_{p}" for p in shared}
    assert sum(importances.values()) == pytest.approx(1.0)
    description = run.data.tags["mlflow.note.content"]
    assert f"runs/{study.best_trial.user_attrs['mlflow_run_id']})" in description


@pytest.mark.e2e
def test_trials_csv_and_best_trial_match_the_study(searched: Path, client: MlflowClient, tmp_path: Path) -> None:
    study = journal_study(searched, FIRST)
    [run] = _runs(client, FIRST, "study")
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    table = pd.read_csv(folder / "trials.csv")
    assert sorted(table["number"]) == [t.number for t in study.trials]
    for trial in study.trials:
        row = table[table["number"] == trial.number].iloc[0]
        assert row["state"] == trial.state.name and row["mlflow_run_id"] == trial.user_attrs["mlflow_run_id"]
        assert row["fit_seconds"] == pytest.approx(trial.user_attrs["fit_seconds"])
        assert {name: row[name] for name in trial.params} == pytest.approx(trial.params)
    assert {"best_epoch", "trial_seconds", "value"} <= set(table.columns)
    best = json.loads((folder / "best_trial.json").read_text())
    assert best["number"] == study.best_trial.number and best["params"] == study.best_trial.params
    assert best["run"].endswith(f"/runs/{study.best_trial.user_attrs['mlflow_run_id']}")
    page = (folder / "report.html").read_text()
    assert "<script src=" not in page  # plotly is embedded: the page renders offline, in MLflow's preview
    assert page.count('class="plotly-graph-div"') == len(FIGURES)


@pytest.mark.e2e
def test_the_data_report_is_logged_once_per_dataset(searched: Path, client: MlflowClient) -> None:
    [data_run] = _runs(client, "second", "data")  # the store's first study
    assert not _runs(client, FIRST, "data")  # the same digits data: found by digest, not logged again
    for name in (FIRST, "second"):
        experiment = client.get_experiment_by_name(name)
        assert experiment.tags["atelier.data_report_run"] == data_run.info.run_id
        [report] = _runs(client, name, "study")
        assert f"runs/{data_run.info.run_id})" in report.data.tags["mlflow.note.content"]
    artifacts = {a.path for a in client.list_artifacts(data_run.info.run_id)}
    assert {"class_counts.png", "samples.png", "mean_images.png", "pixel_histogram.png"} <= artifacts
    assert data_run.data.params["classes"] == "10"
    contexts = sorted(i.tags[0].value for i in data_run.inputs.dataset_inputs)
    assert contexts == ["train", "validation"]


@pytest.mark.e2e
def test_atelier_report_rewrites_the_run_and_keeps_the_files(
    searched: Path, client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atelier
) -> None:
    [before] = _runs(client, "second", "study")
    monkeypatch.chdir(searched)  # back where the test started once it ends
    status, out, err = atelier("report", "--study", "second", "--output", tmp_path / "report")
    assert status == 0, err
    assert {p.name for p in (tmp_path / "report").iterdir()} >= REPORT_FILES - {"param_importances.png"}
    assert f"#/experiments/{before.info.experiment_id}/runs/{before.info.run_id}" in out
    [after] = _runs(client, "second", "study")
    assert after.info.run_id == before.info.run_id
    assert len(client.get_metric_history(after.info.run_id, "trials_complete")) == 2


def test_a_study_without_completed_trials_gets_the_plots_it_allows(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="pruned")
    distributions = {"units": IntDistribution(16, 64), "rate": FloatDistribution(1e-4, 1e-2, log=True)}
    for number in range(3):
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"units": 16 + 8 * number, "rate": 1e-3},
                distributions=distributions,
                intermediate_values={1: 2.0 - number / 10},
            )
        )
    report = write_study_report(study, tmp_path)
    assert {p.name for p in report.files} == {"intermediate_values.png", "report.html", "trials.csv", "best_trial.json"}
    assert report.best is None and report.importances == {} and report.counts["pruned"] == 3
    assert json.loads((tmp_path / "best_trial.json").read_text()) == {}
    assert "No trial has completed yet" in (tmp_path / "report.html").read_text()
