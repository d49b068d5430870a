"""Real searches end to end: Optuna journal storage, a real MLflow store, real data."""

from __future__ import annotations

from pathlib import Path

import json

import keras
import optuna
import pytest
from mlflow import MlflowClient

from search.tracking import run_name

EPOCH_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
SUMMARY_KEYS = {"best_val_loss", "best_val_accuracy", "best_epoch", "epochs", "n_params", "fit_seconds",
                "trial_seconds"}


def load(workdir: Path, name: str) -> tuple[optuna.Study, MlflowClient, list]:
    """The study, an MLflow client on the store, and the study's trial runs, by trial number."""
    study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "mlruns" / "optuna.journal"))))
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'", max_results=1000)
    return study, client, sorted(runs, key=lambda r: int(r.data.tags["atelier.trial_number"]))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def digits_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real search on digits: 8 trials of up to 4 epochs, Hyperband pruning, shared by several tests."""
    import os

    from search import cli

    workdir = tmp_path_factory.mktemp("digits")
    before = Path.cwd()
    os.chdir(workdir)
    try:
        assert cli.main(["run", "--objective", "digits", "--trials", "8", "--max-epochs", "4", "--workers", "1",
                         "--quiet"]) == 0
    finally:
        os.chdir(before)
    return workdir


def test_every_trial_has_a_matching_mlflow_run(digits_search: Path) -> None:
    study, client, runs = load(digits_search, "digits-dense")
    trials = study.get_trials()
    assert len(trials) == 8 and len(runs) == 8
    for trial, run in zip(trials, runs):
        assert run.info.run_name == run_name(trial.number)
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["atelier.trial_number"] == str(trial.number)
        assert run.data.tags["atelier.state"] == trial.state.name
        assert run.data.tags["atelier.study"] == "digits-dense"
        assert run.info.status == "FINISHED"


def test_runs_carry_params_epoch_metrics_summary_and_data(digits_search: Path) -> None:
    study, client, runs = load(digits_search, "digits-dense")
    for trial, run in zip(study.get_trials(), runs):
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value)
        assert run.data.params["conv_blocks"] == "0"  # fixed parameters are recorded too
        assert run.data.params["optimizer"] == "adam"
        assert SUMMARY_KEYS <= set(run.data.metrics)
        epochs = int(run.data.metrics["epochs"])
        for key in EPOCH_KEYS:
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == list(range(1, epochs + 1))
        val_loss = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert run.data.metrics["best_val_loss"] == pytest.approx(min(val_loss))
        assert run.data.metrics["best_epoch"] == val_loss.index(min(val_loss)) + 1
        assert 0 < run.data.metrics["fit_seconds"] < run.data.metrics["trial_seconds"]
        contexts = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(contexts) == {"train", "validation"}
        assert contexts["train"].name == "digits-train" and contexts["train"].digest
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == pytest.approx(min(val_loss))


def test_pruning_really_prunes_and_completed_trials_keep_best_weights(digits_search: Path) -> None:
    study, client, runs = load(digits_search, "digits-dense")
    states = {t.number: t.state for t in study.get_trials()}
    pruned = [r for r in runs if states[int(r.data.tags["atelier.trial_number"])].name == "PRUNED"]
    assert pruned, "Hyperband pruned no trial of 8"
    for run in pruned:
        assert run.data.metrics["epochs"] < 4
        assert run.data.tags["atelier.reason"].startswith("pruned at epoch")
        assert not client.list_artifacts(run.info.run_id)
    completed = [r for r in runs if r.data.tags["atelier.state"] == "COMPLETE"]
    assert completed
    best = completed[0]
    artifact = client.download_artifacts(best.info.run_id, "model.keras", str(digits_search / "download"))
    model = keras.models.load_model(artifact)
    from search.config import load_objective
    from search.data import load_search_data

    data = load_search_data(load_objective("digits"))
    loss, _ = model.evaluate(data.val.x, data.val.y, verbose=0)
    assert loss == pytest.approx(best.data.metrics["best_val_loss"], rel=1e-3)


def test_rerun_resumes_to_the_target(digits_search: Path, monkeypatch: pytest.MonkeyPatch, atelier) -> None:
    monkeypatch.chdir(digits_search)
    status, out, _ = atelier("run", "--objective", "digits", "--trials", "8", "--max-epochs", "4", "--workers", "1")
    assert status == 0 and "done: 0 trials" in out
    assert len(load(digits_search, "digits-dense")[0].get_trials()) == 8
    status, out, _ = atelier("run", "--objective", "digits", "--trials", "10", "--max-epochs", "4", "--workers", "1")
    assert status == 0 and "resuming with 8 done" in out
    study, _, runs = load(digits_search, "digits-dense")
    counted = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 10 and len(runs) == len(study.get_trials())
    assert len({tuple(sorted(t.params.items())) for t in study.get_trials()}) == len(study.get_trials())


def test_show_lists_trials_best_first(digits_search: Path, monkeypatch: pytest.MonkeyPatch, atelier) -> None:
    monkeypatch.chdir(digits_search)
    status, out, _ = atelier("show", "--format", "csv")
    assert status == 0
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(out))
    complete = table[table.state == "COMPLETE"]
    assert list(complete.value) == sorted(complete.value)
    assert table.state.iloc[0] == "COMPLETE"
    assert {"number", "state", "value", "best_val_accuracy", "dense_layers"} <= set(table.columns)
    status, out, _ = atelier("show")
    assert status == 0 and out.startswith("study digits-dense")


def test_unbuildable_and_oversized_architectures_are_pruned_before_training(workdir: Path, atelier) -> None:
    space = write(workdir / "shrinking.toml", """
[params]
conv_blocks = {choices = [3]}
conv_padding = "valid"
conv_kernel_size = 5
dense_units = {choices = [8, 4096]}
""")
    status, out, _ = atelier("run", "--objective", "digits", "--space", space, "--trials", "2",
                             "--max-epochs", "1", "--study", "shrink")
    assert status == 0
    study, _, runs = load(workdir, "shrink")
    assert all(t.state.name == "PRUNED" for t in study.get_trials())
    assert all("unbuildable" in r.data.tags["atelier.reason"] for r in runs)
    assert all(r.data.metrics["epochs"] == 0 for r in runs)
    big = write(workdir / "big.toml", "[params]\ndense_units = {choices = [4096]}\ndense_layers = 2\n")
    status, _, _ = atelier("run", "--objective", "digits", "--space", big, "--trials", "1", "--study", "big")
    assert status == 0
    _, _, runs = load(workdir, "big")
    assert "too large" in runs[0].data.tags["atelier.reason"]


def test_diverging_trial_fails_with_reason_and_the_search_goes_on(workdir: Path, atelier) -> None:
    space = write(workdir / "wild.toml", """
[params]
optimizer = "sgd"
l2 = 0.5
learning_rate = {choices = [1e-2, 10.0]}
""")
    status, _, _ = atelier("run", "--objective", "digits", "--space", space, "--trials", "3", "--max-epochs",
                           "3", "--pruner", "none", "--study", "wild", "--sampler", "random")
    assert status == 0
    study, _, runs = load(workdir, "wild")
    failed = [r for r in runs if r.data.tags["atelier.state"] == "FAIL"]
    assert failed and all(r.info.status == "FAILED" for r in failed)
    assert all("non-finite" in r.data.tags["atelier.reason"] for r in failed)
    assert all(t.params["learning_rate"] == 10.0 for t in study.get_trials() if t.state.name == "FAIL")
    assert sum(t.state.name == "COMPLETE" for t in study.get_trials()) == 3


def test_small_fashion_mnist_cnn_search(workdir: Path, fashion_dir: Path, atelier) -> None:
    objective = write(workdir / "fashion-small.toml", f"""
[data]
source = "idx"
dir = "{fashion_dir}"
subsample = 1200
validation_fraction = 0.25
[search]
space = "cnn"
trials = 3
max_epochs = 2
""")
    status, out, _ = atelier("run", "--objective", objective, "--sampler", "random")
    assert status == 0
    study, client, runs = load(workdir, "fashion-small-cnn")
    assert len(runs) == 3 == len(study.get_trials())
    assert all(r.data.params["conv_blocks"] in {"1", "2", "3"} for r in runs)
    assert {"train", "validation"} == {i.tags[0].value for i in runs[0].inputs.dataset_inputs}
    profiles = {i.tags[0].value: json.loads(i.dataset.profile) for i in runs[0].inputs.dataset_inputs}
    assert profiles["train"]["features_shape"][0] == 900 and profiles["validation"]["features_shape"][0] == 300


def test_a_relational_storage_holds_the_study_when_named(workdir: Path, atelier) -> None:
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    status, _, _ = atelier("run", "--objective", "digits", "--trials", "2", "--max-epochs", "2", "--storage", storage,
                           "--quiet")
    assert status == 0
    study = optuna.load_study(study_name="digits-dense", storage=storage)
    assert len(study.get_trials()) == 2 and not (workdir / "mlruns" / "optuna.journal").exists()
    status, out, _ = atelier("show", "--storage", storage)
    assert status == 0 and out.startswith("study digits-dense: 2 trials")


def test_two_workers_run_trials_at_the_same_time_and_stop_at_the_target(workdir: Path, atelier) -> None:
    status, _, err = atelier("run", "--objective", "digits", "--trials", "6", "--max-epochs", "3", "--workers", "2",
                             "--quiet")
    assert status == 0, err
    study, _, runs = load(workdir, "digits-dense")
    trials = study.get_trials()
    assert 6 <= len(trials) <= 7 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len(runs) == len(trials)
    by_worker: dict[str, list] = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    assert len(by_worker) >= 2
    spans = [(t.datetime_start, t.datetime_complete, worker) for worker, ts in by_worker.items() for t in ts]
    assert any(a_start < b_end and b_start < a_end and a_worker != b_worker
               for a_start, a_end, a_worker in spans for b_start, b_end, b_worker in spans)
