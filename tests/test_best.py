"""`atelier best` on the digits in a tiny budget: every phase runs, the budget holds, and the ensemble it registers
is chosen on validation images alone and is served and predicted like any single model."""

from __future__ import annotations

import math
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from stores import atelier_case, local_client

from search.config.objectives import load_objective
from search.data import load_search_data, reader
from search.errors import SetupError
from search.pipelines.best import CLOSING_SECONDS, MIN_STRETCH, affordable, parse_budget, plan_budget

pytestmark = pytest.mark.e2e
BUDGET_S = 120
SLACK_S = 30  # the closing phase is planned, not cut: a loaded machine may run it late by this much


OBJECTIVE = """
[data]
source = "digits"
validation_fraction = 0.2
[search]
space = "dense"
trials = 1000
max_epochs = 4
pruner = "none"
"""


@pytest.fixture(scope="module")
def best_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], float]:
    """`atelier best` on the digits (trials of 4 epochs, unpruned, so that several complete in its 30-second search)."""
    folder = tmp_path_factory.mktemp("best")
    (folder / "tiny.toml").write_text(OBJECTIVE)
    started = time.monotonic()
    ran = atelier_case(folder, "best", "--objective", "tiny.toml", "--budget", str(BUDGET_S), "--model-name", "best")
    return folder, ran, time.monotonic() - started


def test_every_phase_runs_within_the_budget_and_slack(best_run: tuple[Path, dict[str, object], float]) -> None:
    folder, ran, seconds = best_run
    assert ran["status"] == 0, ran["err"]
    out = str(ran["out"])
    assert out.startswith("budget 2:00: search ")
    for line in ("search done in", "finalists: trials", "ensemble: ", "evaluated once on", "gate champion: passed"):
        assert line in out, out
    assert seconds <= BUDGET_S + SLACK_S, out
    client = local_client(folder)
    experiment = client.get_experiment_by_name("tiny-dense")
    kinds = [r.data.tags.get("atelier.kind") for r in client.search_runs([experiment.experiment_id])]
    assert kinds.count("finalist") == 2 and kinds.count("ensemble") == 1 and kinds.count("promotion") == 1


def test_the_ensemble_is_chosen_on_validation_and_served_like_a_single_model(
    best_run: tuple[Path, dict[str, object], float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ensemble run's validation accuracy is the registered model's on the validation images; its test
    accuracy was measured once, by the promotion, and the served model predicts it again."""
    folder, ran, _ = best_run
    assert ran["status"] == 0, ran["err"]
    client: MlflowClient = local_client(folder)
    experiment = client.get_experiment_by_name("tiny-dense")
    (ensemble,) = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'ensemble'")
    (promotion,) = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'promotion'")
    assert promotion.data.tags["atelier.ensemble_run_id"] == ensemble.info.run_id
    assert promotion.data.tags["atelier.test_evaluations"] == "1"
    monkeypatch.chdir(folder)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/best@champion")
    data = load_search_data(load_objective(str(folder / "tiny.toml")))
    val_accuracy = np.mean(np.asarray(served.predict(data.val.x)).argmax(axis=1) == data.val.y)
    assert val_accuracy == pytest.approx(ensemble.data.metrics["val_accuracy_ensemble"], abs=1e-9)
    test = reader(load_objective(str(folder / "tiny.toml")).data, None)[0]("test")
    test_accuracy = np.mean(np.asarray(served.predict(test.x)).argmax(axis=1) == test.y)
    assert test_accuracy == pytest.approx(promotion.data.metrics["test_accuracy"], abs=1e-9)
    np.save(folder / "x.npy", test.x[:7].astype(np.uint8))
    predicted = atelier_case(
        folder, "predict", "--model", "models:/best@champion", "--input", "x.npy", "--format", "csv"
    )
    assert predicted["status"] == 0 and len(str(predicted["out"]).strip().splitlines()) == 8


def _trial(number: int, seconds_an_epoch: float, epochs: int = 6) -> optuna.trial.FrozenTrial:
    """A finished trial of the search that trained `epochs` epochs at `seconds_an_epoch` on its subsample."""
    attrs = {"epochs": epochs, "fit_seconds": seconds_an_epoch * epochs}
    trial = optuna.trial.create_trial(value=1.0 / (number + 1), params={}, distributions={}, user_attrs=attrs)
    trial.number = number
    return trial


def test_finalists_are_as_many_as_can_train_twice_their_search_epochs() -> None:
    """Four finalists when each gets at least 2 x 6 epochs on all images, else the two best (one per lane)."""
    plan = plan_budget(2 * 3600, lanes=2)
    quick = [_trial(n, 20.0) for n in range(4)]  # 80 s an epoch on 4 times the images: 12 epochs need 960 s
    assert affordable(quick, plan, 4000, scale=4.0) == quick  # 2 rounds: about 1985 s each
    slow = quick[:3] + [_trial(3, 80.0)]  # 320 s an epoch: 12 epochs need 3840 s, which only one round gives
    assert affordable(slow, plan, 4000, scale=4.0) == slow[:3]  # the slow one dropped, the round kept
    slowest = [_trial(n, 80.0) for n in range(4)]
    assert affordable(slowest, plan, 6000, scale=4.0) == slowest[:2]  # 2 rounds: 9.3 epochs each
    assert affordable(slowest, plan, 100, scale=4.0) == slowest[:2]  # never fewer than a round of lanes
    assert MIN_STRETCH == 2


def test_the_plan_splits_the_budget_and_keeps_a_closing_reserve() -> None:
    plan = plan_budget(2 * 3600, lanes=2)
    assert plan.count == 4 and plan.lanes == 2 and plan.rounds == 2
    assert plan.closing == pytest.approx(CLOSING_SECONDS + 0.05 * 7200)
    assert plan.search + plan.finalists + plan.closing == pytest.approx(7200)
    assert plan_budget(450, lanes=2).count == 2 and plan_budget(450, 3, lanes=2).rounds == 2
    assert plan.describe().startswith("budget 2:00:00: search 45:20, 4 finalists 1:08:00 (2 at a time, 33:45 of")


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h", 7200), ("90m", 5400), ("450s", 450), ("450", 450), ("1.5h", 5400)]
)
def test_budgets_read_as_written(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["two hours", "-5m", "0", "5d", "", math.inf])
def test_a_budget_that_is_not_a_time_is_refused(text: object) -> None:
    with pytest.raises(SetupError, match="write it as 2h, 90m, 450s or 450"):
        parse_budget(str(text))


def test_a_budget_too_small_is_refused() -> None:
    with pytest.raises(SetupError, match="give at least 1m"):
        plan_budget(30)
