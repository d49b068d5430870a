"""Promotion end to end: real digits searches, a real MLflow store and Model Registry in a temporary folder."""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from background import Background, Prepared
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from PIL import Image
from servers import served_model
from stores import atelier_case, atelier_in, journal_study, local_client

from search.config.objectives import load_objective, objective_from_record
from search.data import load_search_data, reader
from search.release.evaluate import evaluate, expected_calibration_error
from search.release.registered import load_champion

TEST_METRICS = {
    f"test_{name}"
    for name in (
        "accuracy",
        "log_loss",
        "ece",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
    )
}
WEAK_SPACE = """
[params]
dense_units = {choices = [8]}
learning_rate = {low = 1e-7, high = 2e-7, log = true}
"""
MARGIN_OBJECTIVE = (
    (Path(__file__).parent.parent / "objectives" / "digits.toml").read_text()
    + """
[promotion]
margin = 0.5
"""
)
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
        return journal_study(self.workdir, name)

    def promotion_runs(self, study_name: str, model_name: str) -> list[Run]:
        experiment = self.client.get_experiment_by_name(study_name)
        return self.client.search_runs(
            [experiment.experiment_id],
            f"tags.`atelier.kind` = 'promotion' and tags.`atelier.model_name` = '{model_name}'",
        )


def promote_studies(workdir: Path) -> dict[str, str]:
    """Searches and promotions in a fresh folder; what each promotion printed. Run in the background (conftest)."""
    (workdir / "weak.toml").write_text(WEAK_SPACE)
    (workdir / "shrink.toml").write_text(SHRINK_SPACE)
    (workdir / "margin.toml").write_text(MARGIN_OBJECTIVE)

    def cli(*args: str) -> str:
        return atelier_in(workdir, *args)

    cli("run", "--objective", "digits", "--trials", "4", "--max-epochs", "5", "--quiet")
    outputs = {"good": cli("promote")}
    cli(
        "run",
        "--objective",
        "digits",
        "--space",
        "weak.toml",
        "--study",
        "weak",
        "--trials",
        "1",
        "--max-epochs",
        "1",
        "--quiet",
    )
    outputs["weak"] = cli("promote", "--study", "weak", "--model-name", "digits")
    outputs["again"] = cli("promote", "--study", "digits-dense", "--model-name", "digits-again")
    # The same trial refitted on train+validation, against the champion it was saved as: as good, or better.
    # Trained for as long as 10 s allow (up to 4 times its search epochs), so that a five-epoch model's luck
    # of the draw does not decide the gate.
    outputs["refit"] = cli(
        "promote", "--study", "digits-dense", "--refit", "--refit-seconds", "10", "--model-name", "digits-again"
    )
    cli("run", "--objective", "margin.toml", "--seed", "3", "--trials", "1", "--max-epochs", "2", "--quiet")
    outputs["margin"] = cli("promote", "--study", "margin-dense")
    cli(
        "run", "--objective", "digits", "--space", "shrink.toml", "--study", "shrink", "--trials", "1", "--quiet"
    )  # its one trial is pruned as unbuildable: a study with nothing to promote
    return outputs


@pytest.fixture(scope="module")
def promotion_store(background: Background) -> Prepared:
    """The folder `promote_studies` made, and what its promotions printed."""
    return background.result("promotion_store")


@pytest.fixture(scope="module")
def promoted(promotion_store: Prepared) -> Promoted:
    return Promoted(promotion_store.folder, local_client(promotion_store.folder), promotion_store.printed)


@pytest.mark.e2e
def test_first_promotion_becomes_champion_with_its_test_record(promoted: Promoted) -> None:
    client = promoted.client
    best = promoted.study("digits-dense").best_trial
    champion = client.get_model_version_by_alias("digits", "champion")
    assert str(champion.version) == "1"
    assert champion.tags["atelier.trial_number"] == str(best.number)
    [run] = promoted.promotion_runs("digits-dense", "digits")
    assert run.info.run_name == f"promotion-trial-{best.number:04d}"
    assert run.info.run_id == champion.tags["atelier.promotion_run_id"]
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["atelier.source_run_id"] == best.user_attrs["mlflow_run_id"]
    assert tags["atelier.model_uri"] == "models:/digits/1" and tags["atelier.gates"] == "passed"
    assert TEST_METRICS <= set(metrics)
    assert metrics["test_evaluations"] == 1 and metrics["gate_baseline_passed"] == 1
    assert metrics["test_accuracy"] >= metrics["baseline_accuracy"] > 0.1
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "classification_report.csv",
        "precision_recall.png",
        "misclassified.png",
        "model",
    }
    folder = promoted.workdir / "download"
    confusion = pd.read_csv(
        client.download_artifacts(run.info.run_id, "confusion_matrix.csv", str(folder)), index_col=0
    ).to_numpy()
    assert confusion.shape == (10, 10)
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["test_accuracy"])
    assert f"test: accuracy {metrics['test_accuracy']:.4f}" in promoted.outputs["good"]
    assert "models:/digits/1 (champion and candidate)" in promoted.outputs["good"]


@pytest.mark.e2e
def test_registered_champion_predicts_what_was_evaluated(promoted: Promoted) -> None:
    test = reader(load_objective("digits").data)[0]("test")
    mlflow.set_tracking_uri(promoted.client.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/digits@champion")
    assert model.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    assert model.metadata.metadata["class_names"] == [str(digit) for digit in range(10)]
    predicted = np.asarray(model.predict(test.x)).argmax(axis=1)
    [run] = promoted.promotion_runs("digits-dense", "digits")
    assert np.mean(predicted == test.y) == pytest.approx(run.data.metrics["test_accuracy"])


@pytest.mark.e2e
def test_weak_candidate_stays_candidate_with_mcnemar_figures(promoted: Promoted) -> None:
    client = promoted.client
    assert str(client.get_model_version_by_alias("digits", "candidate").version) == "2"
    assert str(client.get_model_version_by_alias("digits", "champion").version) == "1"
    weak = client.get_model_version("digits", "2")
    assert weak.tags["atelier.gate.champion"].startswith("failed: the champion is significantly better")
    assert "not champion" in weak.description and "champion gate failed" in weak.description
    [run] = promoted.promotion_runs("weak", "digits")
    metrics = run.data.metrics
    assert run.data.tags["atelier.gates"] == "failed" and metrics["gate_champion_passed"] == 0
    assert metrics["mcnemar_p_value"] < 0.05
    assert metrics["mcnemar_champion_only"] > metrics["mcnemar_candidate_only"]
    assert metrics["champion_accuracy"] > metrics["test_accuracy"]
    assert metrics["test_evaluations"] == 1
    assert "models:/digits/2 (candidate only)" in promoted.outputs["weak"]
    assert "gate champion: FAILED" in promoted.outputs["weak"]


@pytest.mark.e2e
def test_a_candidate_as_good_as_the_champion_passes_the_gate_with_mcnemars_exact_p(promoted: Promoted) -> None:
    """The refitted trial against the champion saved from it: the gate passes, on figures recomputed here."""
    [champion_run, refit_run] = sorted(
        promoted.promotion_runs("digits-dense", "digits-again"), key=lambda run: run.data.params["refit"]
    )  # "False", "True"
    assert refit_run.data.params["refit"] == "True"
    metrics, tags = refit_run.data.metrics, refit_run.data.tags
    assert metrics["gate_champion_passed"] == 1
    assert tags["atelier.gate.champion"].startswith("passed: the champion is not significantly better")
    test = reader(load_objective("digits").data)[0]("test")
    mlflow.set_tracking_uri(promoted.client.tracking_uri)
    right = {}
    for name, run in (("champion", champion_run), ("candidate", refit_run)):
        with contextlib.redirect_stdout(io.StringIO()):
            proba = np.asarray(mlflow.pyfunc.load_model(run.data.tags["atelier.model_uri"]).predict(test.x))
        right[name] = proba.argmax(axis=1) == test.y
    champion_only = int(np.sum(right["champion"] & ~right["candidate"]))
    candidate_only = int(np.sum(right["candidate"] & ~right["champion"]))
    assert champion_only + candidate_only > 0, "the refitted model predicts exactly as the champion: no test at all"
    assert (metrics["mcnemar_champion_only"], metrics["mcnemar_candidate_only"]) == (champion_only, candidate_only)
    assert metrics["mcnemar_p_value"] == pytest.approx(_mcnemar_exact(champion_only, candidate_only), rel=1e-9)
    assert metrics["mcnemar_p_value"] >= 0.05 or champion_only <= candidate_only
    assert metrics["champion_accuracy"] == pytest.approx(np.mean(right["champion"]))
    assert metrics["test_accuracy"] == pytest.approx(np.mean(right["candidate"]))
    assert "gate champion: passed" in promoted.outputs["refit"]
    version = promoted.client.get_model_version("digits-again", tags["atelier.model_version"])
    assert version.tags["atelier.gate.champion"] == tags["atelier.gate.champion"]
    if tags["atelier.gates"] == "passed":  # the baseline gate too: the refitted model is the champion now
        assert str(promoted.client.get_model_version_by_alias("digits-again", "champion").version) == str(
            version.version
        )


def _mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact test, two-sided: the binomial(b + c, 1/2) probability of a split at least as uneven as b:c."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.e2e
def test_second_promotion_reuses_the_baseline_and_counts_test_evaluations(promoted: Promoted) -> None:
    [first] = promoted.promotion_runs("digits-dense", "digits")
    [again] = [
        run for run in promoted.promotion_runs("digits-dense", "digits-again") if run.data.params["refit"] == "False"
    ]
    assert again.data.metrics["test_evaluations"] == 2
    assert again.data.tags["atelier.baseline_key"] == first.data.tags["atelier.baseline_key"]
    assert again.data.metrics["baseline_accuracy"] == first.data.metrics["baseline_accuracy"]
    assert f"read from promotion run {first.info.run_id}" in promoted.outputs["again"]
    assert "trained for" in promoted.outputs["good"]


@pytest.mark.e2e
def test_objective_margin_and_seed_are_what_promotion_uses(promoted: Promoted) -> None:
    study = promoted.study("margin-dense")
    objective = objective_from_record(study.user_attrs["objective_settings"])
    assert objective.seed == 3 and objective.margin == 0.5
    [run] = promoted.promotion_runs("margin-dense", "margin")
    assert run.data.metrics["baseline_margin"] == 0.5 and run.data.metrics["gate_baseline_passed"] == 0
    assert "below the baseline's" in run.data.tags["atelier.gate.baseline"]
    assert "gate baseline: FAILED" in promoted.outputs["margin"]
    with pytest.raises(MlflowException):
        promoted.client.get_model_version_by_alias("margin", "champion")
    searched = load_search_data(objective)  # the seed-3 split the search used, not the file's seed 0
    train = mlflow.data.from_numpy(searched.train.x, targets=searched.train.y)
    logged = {i.dataset.digest for i in run.inputs.dataset_inputs if i.tags[0].value == "train"}
    assert logged == {train.digest}


def _write_inputs(folder: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Path]:
    """The same images as a .npy file, Kaggle CSVs with and without labels, and a folder of PNGs."""
    folder.mkdir(exist_ok=True)
    pixels = pd.DataFrame(x.reshape(len(x), -1), columns=[f"pixel{i}" for i in range(1, x[0].size + 1)])
    paths = {
        "npy": folder / "images.npy",
        "csv": folder / "unlabelled.csv",
        "labelled": folder / "labelled.csv",
        "png": folder / "png",
    }
    np.save(paths["npy"], x)
    pixels.to_csv(paths["csv"], index=False)
    pixels.assign(label=y)[["label", *pixels.columns]].to_csv(paths["labelled"], index=False)
    paths["png"].mkdir(exist_ok=True)
    for index, image in enumerate(x):
        Image.fromarray(image[..., 0], mode="L").save(paths["png"] / f"{index:03d}.png")
    return paths


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["npy", "csv", "labelled", "png"])
def test_predict_labels_images_as_the_registered_pyfunc_does(
    promoted: Promoted, monkeypatch: pytest.MonkeyPatch, atelier, kind: str
) -> None:
    monkeypatch.chdir(promoted.workdir)
    test = reader(load_objective("digits").data)[0]("test")
    x = test.x[:12]
    path = _write_inputs(promoted.workdir / "inputs", x, test.y[:12])[kind]
    status, out, err = atelier("predict", "--model", "models:/digits@champion", "--input", path, "--format", "json")
    assert status == 0, err
    rows = json.loads(out)
    mlflow.set_tracking_uri(promoted.client.tracking_uri)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's progress bar
        proba = np.asarray(mlflow.pyfunc.load_model("models:/digits@champion").predict(x))
    assert [row["class"] for row in rows] == proba.argmax(axis=1).tolist()
    assert [row["label"] for row in rows] == [str(c) for c in proba.argmax(axis=1)]
    assert [row["probability"] for row in rows] == pytest.approx(proba.max(axis=1), abs=1e-4)
    status, table, _ = atelier("predict", "--model", "models:/digits/1", "--input", path)
    assert (
        status == 0
        and len(table.splitlines()) == 13
        and table.split()[:4] == ["image", "label", "class", "probability"]
    )


def _bad_predict_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    np.save(folder / "big.npy", np.zeros((3, 28, 28), dtype=np.uint8))
    np.save(folder / "unit.npy", np.full((3, 8, 8), 0.5))
    (folder / "broken").mkdir(exist_ok=True)
    (folder / "broken" / "a.png").write_bytes(b"not a PNG")
    pd.DataFrame({"label": [1], "pixel1": [0], "px2": [3]}).to_csv(folder / "columns.csv", index=False)
    (folder / "notes.txt").write_text("not images")
    return {name: folder / name for name in ("big.npy", "unit.npy", "broken", "columns.csv", "notes.txt")}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("model", "given", "message"),
    [
        (
            "models:/digits@champion",
            "big.npy",
            "images are 28x28x1 (height x width x channels) but the model takes 8x8x1",
        ),
        ("models:/digits@champion", "broken", "a.png: cannot decode this image"),
        ("models:/digits@champion", "unit.npy", "multiply by 255"),
        ("models:/digits@champion", "columns.csv", "columns must be [label,]pixel1,...,pixelN"),
        ("models:/digits@champion", "notes.txt", "cannot read '.txt' files"),
        ("models:/nope@champion", "big.npy", "model 'models:/nope@champion' does not resolve"),
        ("models:/digits/99", "big.npy", "model 'models:/digits/99' does not resolve"),
    ],
)
def test_predict_bad_input_exits_2_with_one_line(
    promoted: Promoted, monkeypatch: pytest.MonkeyPatch, atelier, model: str, given: str, message: str
) -> None:
    monkeypatch.chdir(promoted.workdir)
    path = _bad_predict_inputs(promoted.workdir / "bad")[given]
    versions = len(promoted.client.search_model_versions("name = 'digits'"))
    status, out, err = atelier("predict", "--model", model, "--input", path)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert len(promoted.client.search_model_versions("name = 'digits'")) == versions


@pytest.mark.e2e
def test_mlflow_models_serve_answers_with_the_champions_probabilities(promoted: Promoted) -> None:
    test = reader(load_objective("digits").data)[0]("test")
    with served_model("models:/digits@champion", promoted.client.tracking_uri, promoted.workdir) as ask:
        answered = ask(test.x[:20])
    mlflow.set_tracking_uri(promoted.client.tracking_uri)
    expected = np.asarray(mlflow.pyfunc.load_model("models:/digits@champion").predict(test.x[:20]))
    assert answered.shape == (20, 10)
    np.testing.assert_allclose(answered.sum(axis=1), 1.0, atol=1e-4)
    assert answered.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--study", "nope"), "unknown study 'nope'"),
        (("--study", "digits-dense", "--trial", "99"), "has no completed trial 99"),
        (("--study", "shrink"), "has no completed trial to promote"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_the_registry(
    promoted: Promoted, monkeypatch: pytest.MonkeyPatch, atelier, args: tuple[str, ...], message: str
) -> None:
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


PARTS_LOADER = '''
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

LOG = Path(__file__).with_name("parts.log")


def load(part):
    """scikit-learn's digits, the first 1,400 as train and the rest as test; logs every part asked for."""
    with LOG.open("a") as log:
        log.write(part + "\\n")
    digits = load_digits()
    rows = slice(0, 1400) if part == "train" else slice(1400, None)
    return np.round(digits.images[rows] * (255 / 16)), digits.target[rows]
'''
PARTS_OBJECTIVE = """
[data]
source = "loader"
loader = "parts_loader:load"
validation_fraction = 0.2

[search]
space = "dense"
trials = 2
max_epochs = 2
"""


def search_and_promote_with_a_loader(workdir: Path) -> dict[str, dict[str, object]]:
    """A search, then a promotion, of an objective whose loader logs the parts asked for; each command's exit
    status and output, and the log after each. Run in the background (conftest.BACKGROUND)."""
    (workdir / "parts_loader.py").write_text(PARTS_LOADER)
    (workdir / "parts.toml").write_text(PARTS_OBJECTIVE)
    sys.path.insert(0, str(workdir))  # where the objective's loader module is, as a user's PYTHONPATH says
    try:
        log = workdir / "parts.log"
        ran = {"run": atelier_case(workdir, "run", "--objective", "parts.toml", "--workers", "1", "--quiet")}
        ran["run"]["asked"] = log.read_text().split() if log.exists() else []
        ran["promote"] = atelier_case(workdir, "promote", "--study", "parts-dense", "--model-name", "parts")
        ran["promote"]["asked"] = log.read_text().split()
    finally:
        sys.path.remove(str(workdir))
    return ran


@pytest.fixture(scope="module")
def parts_promotion(background: Background) -> Prepared:
    return background.result("parts_promotion")


@pytest.mark.e2e
def test_only_promotion_asks_the_data_for_the_test_part(parts_promotion: Prepared) -> None:
    """Through the command line: a search asks its loader for `train` alone; promotion asks for `test` once."""
    ran = parts_promotion.printed
    assert ran["run"]["status"] == 0, ran["run"]["err"]
    assert ran["run"]["asked"] == ["train"]
    assert ran["promote"]["status"] == 0, ran["promote"]["err"]
    asked = ran["promote"]["asked"]
    assert asked[0] == "train" and asked.count("test") == 1 and set(asked) == {"train", "test"}
    assert "test: accuracy" in ran["promote"]["out"]


def test_a_registered_model_without_a_champion_has_none(tmp_path: Path) -> None:
    """Every earlier promotion failed a gate: the model is registered, its `champion` alias was never set."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert load_champion(client, "photos") is None
    client.create_registered_model("photos")
    assert load_champion(client, "photos") is None
