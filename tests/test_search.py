"""Real searches end to end: Optuna journal storage, a real MLflow store, real data."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import optuna
import pytest
from background import Background, Prepared
from mlflow import MlflowClient
from stores import atelier_case, journal_study, local_client

from search.data import IDX_PLACES
from search.engine.study import MAX_FAILURES_IN_A_ROW
from search.engine.warm_start import SOURCE_ATTR
from search.record.tracking import run_name

pytestmark = pytest.mark.e2e  # every test here trains real searches through the command line

EPOCH_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
SUMMARY_KEYS = {
    "best_val_loss",
    "best_val_accuracy",
    "best_epoch",
    "epochs",
    "n_params",
    "fit_seconds",
    "trial_seconds",
}


def load(workdir: Path, name: str) -> tuple[optuna.Study, MlflowClient, list]:
    """The study, an MLflow client on the store, and the study's trial runs, by trial number."""
    study, client = journal_study(workdir, name), local_client(workdir)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'", max_results=1000)
    return study, client, sorted(runs, key=lambda r: int(r.data.tags["atelier.trial_number"]))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def digits_search(digits_store) -> Path:
    """The shared store's digits-dense: 8 trials of up to 4 epochs (6, then resumed), Hyperband pruning."""
    return digits_store.folder


def test_every_trial_has_a_matching_mlflow_run(digits_search: Path) -> None:
    study, client, runs = load(digits_search, "digits-dense")
    trials = study.get_trials()
    assert len(trials) == 8 and len(runs) == 8
    for trial, run in zip(trials, runs, strict=False):
        assert run.info.run_name == run_name(trial.number)
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["atelier.trial_number"] == str(trial.number)
        assert run.data.tags["atelier.state"] == trial.state.name
        assert run.data.tags["atelier.study"] == "digits-dense"
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[trial.state.name]  # as MLflow's UI


def test_runs_carry_params_epoch_metrics_summary_and_data(digits_search: Path) -> None:
    study, client, runs = load(digits_search, "digits-dense")
    for trial, run in zip(study.get_trials(), runs, strict=False):
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
    from search.config.objectives import load_objective
    from search.data import load_search_data

    data = load_search_data(load_objective("digits"))
    plain = model.evaluate(data.val.x, data.val.y, verbose=0, return_dict=True)["crossentropy"]
    assert plain == pytest.approx(best.data.metrics["best_val_loss"], rel=1e-3)  # val_loss: unsmoothed, no L2


def test_rerun_resumes_to_the_target(digits_store) -> None:
    """Run with a target of 6, then 8 (it resumes and runs 2), then 8 again (it runs none)."""
    printed = digits_store.printed
    assert "resuming with 6 done" in printed["resume"] and "done: 2 trials" in printed["resume"]
    assert "resuming with 8 done" in printed["again"] and "done: 0 trials" in printed["again"]
    study, _, runs = load(digits_store.folder, "digits-dense")
    counted = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 8 and len(runs) == len(study.get_trials())
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


SHRINKING_SPACE = """
[params]
conv_blocks = {choices = [3]}
conv_padding = "valid"
conv_kernel_size = 5
dense_units = {choices = [8, 4096]}
"""
BIG_SPACE = "[params]\ndense_units = {choices = [4096]}\ndense_layers = 2\n"
WILD_SPACE = """
[params]
optimizer = "sgd"
l2 = 0.5
learning_rate = {choices = [1e-2, 10.0]}

[reference]  # run first
learning_rate = 10.0
"""
DOOMED_SPACE = """
[params]
optimizer = "sgd"
l2 = 0.5
learning_rate = 10.0
"""
FASHION_OBJECTIVE = f"""
[data]
source = "idx"
dir = "{IDX_PLACES[0]}"
subsample = 300
validation_fraction = 0.002
[search]
space = "cnn"
trials = 3
max_epochs = 2
"""


def run_search_cases(folder: Path) -> dict[str, dict[str, object]]:
    """The searches the tests below read, each case in a folder of its own: exit status, stdout, stderr by run.

    Run in the background (conftest.BACKGROUND), as a user would run them one after another.
    """
    ran = {}

    def atelier(case: str, run: str, *args: object) -> None:
        (folder / case).mkdir(exist_ok=True)
        ran[run] = atelier_case(folder / case, *args)

    shrinking = write(folder / "shrinking.toml", SHRINKING_SPACE)
    atelier(
        "unbuildable",
        "shrink",
        "run",
        "--objective",
        "digits",
        "--space",
        shrinking,
        "--trials",
        "2",
        "--max-epochs",
        "1",
        "--study",
        "shrink",
    )
    big = write(folder / "big.toml", BIG_SPACE)
    atelier("unbuildable", "big", "run", "--objective", "digits", "--space", big, "--trials", "1", "--study", "big")
    atelier(
        "wild",
        "wild",
        "run",
        "--objective",
        "digits",
        "--space",
        write(folder / "wild.toml", WILD_SPACE),
        "--trials",
        "3",
        "--max-epochs",
        "2",
        "--pruner",
        "none",
        "--study",
        "wild",
        "--sampler",
        "random",
    )
    atelier(
        "doomed",
        "doomed",
        "run",
        "--objective",
        "digits",
        "--space",
        write(folder / "doomed.toml", DOOMED_SPACE),
        "--trials",
        "20",
        "--max-epochs",
        "2",
        "--pruner",
        "none",
        "--workers",
        "1",
        "--study",
        "doomed",
        "--quiet",
    )
    atelier(
        "fashion",
        "fashion",
        "run",
        "--objective",
        write(folder / "fashion-small.toml", FASHION_OBJECTIVE),
        "--sampler",
        "random",
    )
    storage = f"sqlite:///{folder / 'relational' / 'optuna.db'}"
    atelier(
        "relational",
        "relational",
        "run",
        "--objective",
        "digits",
        "--trials",
        "2",
        "--max-epochs",
        "2",
        "--storage",
        storage,
        "--quiet",
    )
    atelier("relational", "relational-show", "show", "--storage", storage)
    atelier(
        "two-workers",
        "two-workers",
        "run",
        "--objective",
        "digits",
        "--trials",
        "4",
        "--max-epochs",
        "2",
        "--workers",
        "2",
        "--quiet",
    )
    return ran


@pytest.fixture(scope="module")
def search_cases(background: Background) -> Prepared:
    """`run_search_cases`'s folder, and each run's exit status and output."""
    return background.result("search_cases")


def test_unbuildable_and_oversized_architectures_are_pruned_before_training(search_cases: Prepared) -> None:
    workdir, ran = search_cases.folder / "unbuildable", search_cases.printed
    assert ran["shrink"]["status"] == 0, ran["shrink"]["err"]
    study, _, runs = load(workdir, "shrink")
    assert all(t.state.name == "PRUNED" for t in study.get_trials())
    assert all("unbuildable" in r.data.tags["atelier.reason"] for r in runs)
    assert all(r.data.metrics["epochs"] == 0 for r in runs)
    assert ran["big"]["status"] == 0, ran["big"]["err"]
    _, _, runs = load(workdir, "big")
    assert "too large" in runs[0].data.tags["atelier.reason"]


def test_diverging_trial_fails_with_reason_and_the_search_goes_on(search_cases: Prepared) -> None:
    assert search_cases.printed["wild"]["status"] == 0, search_cases.printed["wild"]["err"]
    study, _, runs = load(search_cases.folder / "wild", "wild")
    failed = [r for r in runs if r.data.tags["atelier.state"] == "FAIL"]
    assert failed and all(r.info.status == "FAILED" for r in failed)
    assert all("non-finite" in r.data.tags["atelier.reason"] for r in failed)
    assert all(t.params["learning_rate"] == 10.0 for t in study.get_trials() if t.state.name == "FAIL")
    assert sum(t.state.name == "COMPLETE" for t in study.get_trials()) == 3
    first = study.get_trials()[0]  # the space's [reference], queued before anything is sampled
    assert first.state.name == "FAIL" and first.user_attrs[SOURCE_ATTR] == "reference of space wild"
    assert "the first trial runs the space's reference configuration" in search_cases.printed["wild"]["out"]


def test_five_failed_trials_in_a_row_stop_the_search(search_cases: Prepared) -> None:
    """Every trial diverges (SGD at learning rate 10 with a strong L2): the search stops after five, exit 2."""
    status, out, err = (search_cases.printed["doomed"][key] for key in ("status", "out", "err"))
    assert status == 2 and "Traceback" not in out + err
    assert err.count("\n") == 1, err
    assert err.startswith(f"atelier: error: {MAX_FAILURES_IN_A_ROW} trials failed in a row") and "atelier show" in err
    study, _, runs = load(search_cases.folder / "doomed", "doomed")
    assert MAX_FAILURES_IN_A_ROW == 5
    assert [t.state.name for t in study.get_trials()] == ["FAIL"] * 5  # and none started after the fifth
    assert [r.info.status for r in runs] == ["FAILED"] * 5
    assert all("non-finite" in r.data.tags["atelier.reason"] for r in runs)


def test_small_fashion_mnist_cnn_search(search_cases: Prepared, fashion_dir: Path) -> None:
    assert f'dir = "{fashion_dir}"' in FASHION_OBJECTIVE  # Debian's real files, which the fixture checks
    assert search_cases.printed["fashion"]["status"] == 0, search_cases.printed["fashion"]["err"]
    study, client, runs = load(search_cases.folder / "fashion", "fashion-small-cnn")
    assert len(runs) == 3 == len(study.get_trials())
    assert all(r.data.params["conv_blocks"] in {"1", "2", "3"} for r in runs)
    assert {"train", "validation"} == {i.tags[0].value for i in runs[0].inputs.dataset_inputs}
    profiles = {i.tags[0].value: json.loads(i.dataset.profile) for i in runs[0].inputs.dataset_inputs}
    assert profiles["train"]["features_shape"][0] == 300 and profiles["validation"]["features_shape"][0] == 120


def test_a_relational_storage_holds_the_study_when_named(search_cases: Prepared) -> None:
    workdir, ran = search_cases.folder / "relational", search_cases.printed
    assert ran["relational"]["status"] == 0, ran["relational"]["err"]
    study = optuna.load_study(study_name="digits-dense", storage=f"sqlite:///{workdir / 'optuna.db'}")
    assert len(study.get_trials()) == 2 and not (workdir / "mlruns" / "optuna.journal").exists()
    assert ran["relational-show"]["status"] == 0
    assert ran["relational-show"]["out"].startswith("study digits-dense: 2 trials")


def test_two_workers_run_trials_at_the_same_time_and_stop_at_the_target(search_cases: Prepared) -> None:
    assert search_cases.printed["two-workers"]["status"] == 0, search_cases.printed["two-workers"]["err"]
    study, _, runs = load(search_cases.folder / "two-workers", "digits-dense")
    trials = study.get_trials()
    assert 4 <= len(trials) <= 5 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert len(runs) == len(trials)
    by_worker: dict[str, list] = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    assert len(by_worker) >= 2
    spans = [(t.datetime_start, t.datetime_complete, worker) for worker, ts in by_worker.items() for t in ts]
    assert any(
        a_start < b_end and b_start < a_end and a_worker != b_worker
        for a_start, a_end, a_worker in spans
        for b_start, b_end, b_worker in spans
    )
