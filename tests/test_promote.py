"""Promotion end to end: real digits searches, a real MLflow store and Model Registry in a temporary folder."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from search import cli
from search.config import load_objective
from search.data import reader
from search.evaluate import evaluate, expected_calibration_error

TEST_METRICS = {f"test_{name}" for name in (
    "accuracy", "log_loss", "ece", "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted")}
WEAK_SPACE = """
[params]
dense_units = {choices = [8]}
learning_rate = {low = 1e-7, high = 2e-7, log = true}
"""
SHRINK_SPACE = """
[params]
conv_blocks = 3
conv_padding = "valid"
conv_kernel_size = 5
"""


@dataclass(frozen=True)
class Promoted:
    """The store after a good study was promoted, then a deliberately weak one under the same model name."""

    workdir: Path
    client: MlflowClient
    outputs: dict[str, str]

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(self.workdir / "mlruns" / "optuna.journal"))))

    def promotion_runs(self, study_name: str) -> list[Run]:
        experiment = self.client.get_experiment_by_name(study_name)
        return self.client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'promotion'")


def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(args)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Promoted:
    workdir = tmp_path_factory.mktemp("promote")
    (workdir / "weak.toml").write_text(WEAK_SPACE)
    (workdir / "shrink.toml").write_text(SHRINK_SPACE)
    before = Path.cwd()
    os.chdir(workdir)
    try:
        _cli("run", "--objective", "digits", "--trials", "4", "--max-epochs", "5", "--quiet")
        outputs = {"good": _cli("promote")}
        _cli("run", "--objective", "digits", "--space", "weak.toml", "--study", "weak", "--trials", "1",
             "--max-epochs", "1", "--quiet")
        outputs["weak"] = _cli("promote", "--study", "weak", "--model-name", "digits")
        _cli("run", "--objective", "digits", "--space", "shrink.toml", "--study", "shrink", "--trials", "1",
             "--quiet")  # its one trial is pruned as unbuildable: a study with nothing to promote
    finally:
        os.chdir(before)
    return Promoted(workdir, MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"), outputs)


def test_first_promotion_becomes_champion_with_its_test_record(promoted: Promoted) -> None:
    client = promoted.client
    best = promoted.study("digits-dense").best_trial
    champion = client.get_model_version_by_alias("digits", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["atelier.trial_number"] == str(best.number)
    [run] = promoted.promotion_runs("digits-dense")
    assert run.info.run_name == f"promotion-trial-{best.number:04d}"
    assert run.info.run_id == champion.tags["atelier.promotion_run_id"]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["atelier.source_run_id"] == best.user_attrs["mlflow_run_id"]
    assert tags["atelier.model_uri"] == "models:/digits/1" and tags["atelier.gates"] == "passed"
    assert TEST_METRICS <= set(metrics)
    assert metrics["test_evaluations"] == 1 and metrics["gate_baseline_passed"] == 1
    assert metrics["test_accuracy"] >= metrics["baseline_accuracy"] > 0.1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "confusion_matrix.csv", "confusion_matrix.png", "classification_report.csv", "model"}
    folder = promoted.workdir / "download"
    confusion = pd.read_csv(client.download_artifacts(run.info.run_id, "confusion_matrix.csv", str(folder)),
                            index_col=0).to_numpy()
    assert confusion.shape == (10, 10)
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["test_accuracy"])
    assert f"test: accuracy {metrics['test_accuracy']:.4f}" in promoted.outputs["good"]
    assert "models:/digits/1 (champion and candidate)" in promoted.outputs["good"]


def test_registered_champion_predicts_what_was_evaluated(promoted: Promoted) -> None:
    test = reader(load_objective("digits").data)[0]("test")
    mlflow.set_tracking_uri(promoted.client.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    predicted = np.asarray(model.predict(test.x)).argmax(axis=1)
    [run] = promoted.promotion_runs("digits-dense")
    assert np.mean(predicted == test.y) == pytest.approx(run.data.metrics["test_accuracy"])


def test_weak_candidate_stays_candidate_with_mcnemar_figures(promoted: Promoted) -> None:
    client = promoted.client
    assert str(client.get_model_version_by_alias("digits", "candidate").version) == "2"
    assert str(client.get_model_version_by_alias("digits", "champion").version) == "1"
    weak = client.get_model_version("digits", "2")
    assert weak.tags["atelier.gate.champion"].startswith("failed: the champion is significantly better")
    assert "not champion" in weak.description and "champion gate failed" in weak.description
    [run] = promoted.promotion_runs("weak")
    metrics = run.data.metrics
    assert run.data.tags["atelier.gates"] == "failed" and metrics["gate_champion_passed"] == 0
    assert metrics["mcnemar_p_value"] < 0.05
    assert metrics["mcnemar_champion_only"] > metrics["mcnemar_candidate_only"]
    assert metrics["champion_accuracy"] > metrics["test_accuracy"]
    assert metrics["test_evaluations"] == 1
    assert "models:/digits/2 (candidate only)" in promoted.outputs["weak"]
    assert "gate champion: FAILED" in promoted.outputs["weak"]


@pytest.mark.parametrize(("args", "message"), [
    (("--study", "nope"), "unknown study 'nope'"),
    (("--study", "digits-dense", "--trial", "99"), "has no completed trial 99"),
    (("--study", "shrink"), "has no completed trial to promote"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_registry(
        promoted: Promoted, monkeypatch: pytest.MonkeyPatch, atelier, args: tuple[str, ...], message: str) -> None:
    monkeypatch.chdir(promoted.workdir)
    versions = len(promoted.client.search_model_versions("name = 'digits'"))
    status, out, err = atelier("promote", *args)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    assert len(promoted.client.search_model_versions("name = 'digits'")) == versions


def test_expected_calibration_error_bins_confidences() -> None:
    y = np.array([0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.62, 0.38], [0.3, 0.7], [0.19, 0.81]])
    assert expected_calibration_error(y, proba) == pytest.approx((0.1 + 0.62 + 0.3 + 0.19) / 4)
    same_bin = np.array([[0.95, 0.05], [0.97, 0.03]])
    assert expected_calibration_error(np.array([0, 1]), same_bin) == pytest.approx(abs(0.5 - 0.96))


def test_evaluate_reports_per_class_names_and_confusion() -> None:
    y = np.array([0, 0, 1, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    result = evaluate(y, proba, ("cat", "dog", "bird"))
    assert result.metrics["accuracy"] == 0.75
    assert result.confusion.loc["cat", "dog"] == 1 and result.confusion.loc["bird", "bird"] == 1
    assert result.report.loc["dog", "precision"] == 0.5 and result.report.loc["cat", "recall"] == 0.5
    assert result.metrics["recall_macro"] == pytest.approx((0.5 + 1 + 1) / 3)
