"""The study report and the data report runs: real searches, a real MLflow store, real Optuna studies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from stores import journal_study, local_client

from search.reports.rungs import judged_epochs, rung_correlations, rung_summary
from search.reports.study import write_study_report

FIGURES = ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate", "slice")
REPORT_FILES = {f"{name}.png" for name in FIGURES} | {"report.html", "trials.csv", "rungs.csv", "best_trial.json"}


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
    assert f"Early judgements: {rung_summary(rung_correlations(study.trials, study.direction))}." in description


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
    rungs = pd.read_csv(folder / "rungs.csv")
    expected = rung_correlations(study.trials, study.direction)  # at Hyperband's rungs, from the pruner's record
    assert expected and list(rungs["epoch"]) == [r.epoch for r in expected]
    assert list(rungs["trials"]) == [r.trials for r in expected]
    assert list(rungs["spearman"]) == pytest.approx([r.spearman for r in expected], nan_ok=True)
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
    assert {p.name for p in report.files} == {
        "intermediate_values.png",
        "report.html",
        "trials.csv",
        "rungs.csv",
        "best_trial.json",
    }
    assert report.best is None and report.importances == {} and report.counts["pruned"] == 3
    assert json.loads((tmp_path / "best_trial.json").read_text()) == {}
    assert "No trial has completed yet" in (tmp_path / "report.html").read_text()


def _curves_study(direction: str, curves: list[dict[int, float]]) -> optuna.Study:
    """A study of completed trials that reported `curves` (epoch -> value), each valued at its last epoch."""
    study = optuna.create_study(direction=direction)
    for curve in curves:
        study.add_trial(create_trial(value=curve[max(curve)], intermediate_values=curve))
    return study


def _rows(study: optuna.Study, epochs: list[int] | None = None) -> tuple[list[tuple], list[float], list[float]]:
    """(epoch, trials, best rank) of each row, then each row's Spearman and Kendall."""
    rows = rung_correlations(study.trials, study.direction, epochs)
    return [(r.epoch, r.trials, r.best_rank) for r in rows], [r.spearman for r in rows], [r.kendall for r in rows]


def test_early_rankings_that_hold_correlate_fully_and_every_finished_trial_counts() -> None:
    study = _curves_study("minimize", [{1: 1.0 + k, 2: 0.8 + k, 3: 0.5 + k} for k in range(3)])
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 4.0, 2: 3.9}))  # stopped at 2
    queued = {"warm_start_from": "earlier"}  # a queued configuration counts like any other
    study.add_trial(create_trial(value=3.5, intermediate_values={1: 3.8, 2: 3.6, 3: 3.5}, user_attrs=queued))
    study.add_trial(create_trial(state=TrialState.FAIL, intermediate_values={1: 0.1, 2: 9.0, 3: 9.0}))
    study.add_trial(create_trial(state=TrialState.RUNNING, intermediate_values={1: 0.1, 2: 9.0}))
    shape, spearman, kendall = _rows(study)  # no pruner's record: every epoch some finished trial trained past
    assert shape == [(1, 5, 1), (2, 4, 1)]  # epoch 2: the pruned trial stopped there
    assert spearman == pytest.approx([1.0, 1.0]) and kendall == pytest.approx([1.0, 1.0])


def test_reversed_rankings_correlate_at_minus_one() -> None:
    study = _curves_study("minimize", [{1: 1.0 + k, 4: 2.0 - k / 10} for k in range(4)])
    shape, spearman, kendall = _rows(study)
    assert shape == [(1, 4, 4)]  # the trial that ended best was last at epoch 1
    assert spearman == pytest.approx([-1.0]) and kendall == pytest.approx([-1.0])


def test_the_best_trial_is_ranked_by_the_direction_and_the_correlations_are_not() -> None:
    curves = [{1: early, 2: last} for early, last in [(0.5, 0.9), (0.6, 0.65), (0.7, 0.75), (0.8, 0.85)]]
    accuracy, loss = _rows(_curves_study("maximize", curves)), _rows(_curves_study("minimize", curves))
    assert accuracy[0] == [(1, 4, 4)]  # the most accurate at the end was the least accurate at epoch 1
    assert loss[0] == [(1, 4, 2)]  # the lowest loss at the end (0.65) was the second lowest at epoch 1
    assert accuracy[1] == loss[1] == pytest.approx([-0.2]) and accuracy[2] == loss[2] == pytest.approx([0.0])


def test_a_rung_with_too_few_trials_says_so() -> None:
    study = _curves_study("minimize", [{1: 1.0, 2: 0.9, 3: 0.8}, {1: 2.0, 2: 1.5, 3: 1.0}, {1: 3.0, 2: 2.0}])
    [one, two] = rung_correlations(study.trials, study.direction, [1, 2])
    assert (one.trials, one.too_few) == (3, False) and (two.trials, two.too_few, two.best_rank) == (2, True, None)
    assert math.isnan(two.spearman) and math.isnan(two.kendall)
    assert rung_summary([one, two]).endswith("epoch 1 1.00 (3 trials), epoch 2 too few (2 trials)")
    assert rung_summary([]) == "no trial has trained past an epoch it was judged at"


def test_the_rungs_are_where_successive_halving_judged() -> None:
    study = optuna.create_study(
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for epoch in range(1, 10):
            trial.report(x + 1 / epoch, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x + 1 / 9

    study.optimize(objective, n_trials=20)
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    assert judged_epochs(study.trials) == [2, 6]  # 2, then 3 x 2 (18 is past the last epoch)
    assert [r.epoch for r in rung_correlations(study.trials, study.direction)] == [2, 6]


def test_the_report_holds_the_rung_table(tmp_path: Path) -> None:
    curves = [{1: 1.0, 2: 0.9, 3: 0.8}, {1: 2.0, 2: 1.5, 3: 1.0}, {1: 3.0, 2: 2.0}]
    study = _curves_study("minimize", curves)
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 4.0}))  # went past no epoch
    report = write_study_report(study, tmp_path)
    assert [(r.epoch, r.trials) for r in report.rungs] == [(1, 3), (2, 2)]
    table = pd.read_csv(tmp_path / "rungs.csv")
    assert list(table.columns) == ["epoch", "trials", "spearman", "kendall", "best_rank"]
    assert list(table["epoch"]) == [1, 2] and list(table["trials"]) == [3, 2]
    assert table.loc[0, ["spearman", "kendall", "best_rank"]].tolist() == pytest.approx([1.0, 1.0, 1])
    assert table.loc[1, ["spearman", "kendall", "best_rank"]].isna().all()  # too few: blank
    page = (tmp_path / "report.html").read_text()
    assert "<h2>early judgements</h2>" in page
    assert "<tr><td>1</td><td>3</td><td>1.00</td><td>1.00</td><td>1 of 3</td></tr>" in page
    assert '<tr><td>2</td><td>2</td><td colspan="3">too few</td></tr>' in page


def test_a_report_without_rungs_writes_an_empty_table(tmp_path: Path) -> None:
    study = _curves_study("minimize", [{1: 1.0}, {1: 2.0}])
    report = write_study_report(study, tmp_path)
    assert report.rungs == ()
    assert list(pd.read_csv(tmp_path / "rungs.csv").columns) == ["epoch", "trials", "spearman", "kendall", "best_rank"]
    assert "No trial has trained past an epoch it was judged at." in (tmp_path / "report.html").read_text()
