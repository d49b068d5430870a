"""`atelier bench` on digits with a tiny budget: every strategy runs, budgets hold, the tables, files and MLflow run.

The bench runs once for the module: 1 seed, 5 epochs per strategy, trials of at most 2 epochs,
memory after 1 and 2 trials.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras_tuner
import pandas as pd
import pytest
from background import Background, Prepared
from stores import atelier_in, local_client

from search.bench.report import median_interval
from search.bench.space_hypermodel import HpTrial
from search.bench.strategies import DEFAULT_STRATEGIES
from search.config.schema import PARAMETERS
from search.config.spaces import Choice, Range, load_space
from search.models.sampling import sample

BUDGET = 5
STRATEGIES = (*DEFAULT_STRATEGIES, "atelier-asha")  # and the scheduler that pauses and resumes trials
OBJECTIVE = """[data]
source = "digits"
validation_fraction = 0.2

[search]
space = "dense"
max_epochs = 2
trials = 6
max_params = 500000
"""
SUMMARY_COLUMNS = [
    "strategy",
    "seeds",
    "holdout_acc",
    "holdout_acc_lo",
    "holdout_acc_hi",
    "holdout_min",
    "holdout_max",
    "best_val_acc",
    "kt_hb_epoch_ratio",
    "kt_hb_epoch_ratio_lo",
    "kt_hb_epoch_ratio_hi",
    "epochs_to_kt_hb",
    "reached_kt_hb",
    "epochs_to_target",
    "reached_target",
    "epochs",
    "trials",
    "finished",
    "pruned",
    "cut",
    "skipped",
    "failed",
    "wall_s",
    "outside_fit_s_per_trial",
    "cores_busy",
]


def run_bench(folder: Path) -> dict[str, str]:
    """One real bench in a fresh folder; what it printed. Run in the background (conftest.BACKGROUND)."""
    (folder / "tiny.toml").write_text(OBJECTIVE)
    return {
        "bench": atelier_in(
            folder,
            "bench",
            "--objective",
            "tiny.toml",
            "--seeds",
            "1",
            "--budget-epochs",
            BUDGET,
            "--target-accuracy",
            "0.5",
            "--memory-trials",
            "1",
            "2",
            "--holdout",
            "360",
            "--strategies",
            *STRATEGIES,
            "--output",
            "out",
        )
    }


@pytest.fixture(scope="module")
def bench_run(background: Background) -> Prepared:
    return background.result("bench_run")


@pytest.fixture(scope="module")
def bench(bench_run: Prepared) -> tuple[Path, str]:
    """The bench's folder, and what it printed."""
    return bench_run.folder, bench_run.printed["bench"]


@pytest.mark.e2e
def test_every_strategy_spends_exactly_its_budget(bench: tuple[Path, str]) -> None:
    workdir, _ = bench
    runs = pd.read_csv(workdir / "out" / "bench_runs.csv")
    assert list(runs["strategy"]) == list(STRATEGIES)
    assert (runs["epochs"] == BUDGET).all(), runs[["strategy", "epochs"]]
    outcomes = runs[["finished", "pruned", "cut", "skipped", "failed"]].sum(axis=1)
    assert (outcomes == runs["trials"]).all() and (runs["trials"] >= 1).all()
    assert (runs["cut"] <= 1).all() and (runs["failed"] == 0).all()
    curves = pd.read_csv(workdir / "out" / "curves.csv")
    assert curves.groupby("strategy")["epoch"].max().le(BUDGET).all()
    assert curves.groupby("strategy")["best_val_acc"].is_monotonic_increasing.all()
    assert runs["best_val_acc"].between(0.1, 1).all()


@pytest.mark.e2e
def test_summary_table_is_printed_and_written(bench: tuple[Path, str]) -> None:
    workdir, printed = bench
    summary = pd.read_csv(workdir / "out" / "bench.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary["strategy"]) == list(STRATEGIES)
    for strategy in STRATEGIES:
        assert strategy in printed


@pytest.mark.e2e
def test_every_model_handed_over_is_scored_on_the_holdout(bench: tuple[Path, str]) -> None:
    """Each strategy hands over its best trial's model; the curve holds its holdout accuracy from then on."""
    workdir, printed = bench
    runs = pd.read_csv(workdir / "out" / "bench_runs.csv").set_index("strategy")
    curves = pd.read_csv(workdir / "out" / "curves.csv")
    assert runs["holdout_acc"].between(0.1, 1).all(), runs["holdout_acc"]
    for strategy in STRATEGIES:
        curve = curves[curves["strategy"] == strategy].sort_values("epoch")["holdout_acc"]
        assert curve.iloc[-1] == runs.loc[strategy, "holdout_acc"], strategy
        assert curve.dropna().index.equals(curve.index[curve.notna().argmax() :])  # nothing handed over, then always
    assert "holdout accuracy" in printed and "360 holdout images" in printed


@pytest.mark.e2e
def test_epochs_to_hyperbands_handed_over_accuracy_follow_the_curves(bench: tuple[Path, str]) -> None:
    """Recomputed from curves.csv: the epoch at which each strategy's handed-over model first scored, on the
    holdout, what KerasTuner Hyperband's handed-over model scored at Hyperband's whole budget."""
    workdir, printed = bench
    curves = pd.read_csv(workdir / "out" / "curves.csv")
    runs = pd.read_csv(workdir / "out" / "bench_runs.csv").set_index("strategy")
    summary = pd.read_csv(workdir / "out" / "bench.csv").set_index("strategy")
    reference = runs.loc["kt-hyperband", "holdout_acc"]
    expected = {}
    for strategy in STRATEGIES:
        curve = curves[curves["strategy"] == strategy].sort_values("epoch")
        reached = curve[curve["holdout_acc"] >= reference]
        expected[strategy] = float(reached["epoch"].iloc[0]) if len(reached) else math.inf
        assert runs.loc[strategy, "epochs_to_kt_hb"] == expected[strategy], strategy
        assert runs.loc[strategy, "kt_hb_epoch_ratio"] == expected[strategy] / runs.loc["kt-hyperband", "epochs"]
        assert summary.loc[strategy, "epochs_to_kt_hb"] == expected[strategy], strategy  # one seed: its median
        assert summary.loc[strategy, "reached_kt_hb"] == f"{int(math.isfinite(expected[strategy]))}/1"
    assert expected["kt-hyperband"] == BUDGET  # KerasTuner hands over a model at the end of its search
    ratio = expected["atelier"] / BUDGET
    assert (
        f"atelier's handed-over model reached the holdout accuracy of KerasTuner Hyperband's in "
        f"{int(math.isfinite(expected['atelier']))} of 1 seeds; epochs as a share of Hyperband's per seed {ratio:.2f}"
    ) in printed


def test_median_interval_brackets_the_median_of_resampled_seeds() -> None:
    assert median_interval([0.9, 0.9, 0.9]) == (0.9, 0.9)  # no spread, no width
    low, high = median_interval([0.80, 0.85, 0.86, 0.88, 0.95])
    assert 0.80 <= low <= 0.86 <= high <= 0.95 and low < high
    wide = median_interval([0.5, 0.85, 0.86, 0.88, 0.99])
    assert wide[0] <= low and wide[1] >= high  # farther seeds, a wider interval
    assert median_interval([1.0, 2.0, math.inf, math.inf, math.inf])[1] == math.inf  # not reached stays not reached
    assert all(math.isnan(bound) for bound in median_interval([]))


@pytest.mark.e2e
def test_memory_is_measured_for_both_libraries(bench: tuple[Path, str]) -> None:
    workdir, printed = bench
    memory = pd.read_csv(workdir / "out" / "memory.csv")
    assert list(memory["library"]) == ["atelier", "kerastuner"]
    assert (memory["trials"] == 2).all()
    assert (memory[["rss_mb_after_1", "rss_mb_after_2"]] > 100).all().all()
    assert "peak RSS" in printed


@pytest.mark.e2e
def test_mlflow_run_holds_the_tables_and_the_figure(bench: tuple[Path, str]) -> None:
    workdir, _ = bench
    png = workdir / "out" / "handed_over.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = local_client(workdir)
    experiment = client.get_experiment_by_name("bench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["atelier.kind"] == "bench"
    assert run.data.params["budget_epochs"] == str(BUDGET)
    assert {f"{s}/holdout_acc" for s in STRATEGIES} <= set(run.data.metrics)
    curve = client.get_metric_history(run.info.run_id, "holdout_acc/kt-hyperband")
    assert [m.step for m in curve] == [BUDGET]  # KerasTuner hands over at its budget's end
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"bench.csv", "bench_runs.csv", "curves.csv", "rungs.csv", "memory.csv", "handed_over.png"} <= artifacts


@pytest.mark.e2e
def test_the_optuna_runs_early_judgements_are_ranked_against_their_ends(bench: tuple[Path, str]) -> None:
    workdir, _ = bench
    rungs = pd.read_csv(workdir / "out" / "rungs.csv")
    assert list(rungs.columns) == ["strategy", "seed", "epoch", "trials", "spearman", "kendall", "best_rank"]
    assert set(rungs["strategy"]) <= {"atelier", "optuna-tpe", "optuna-random", "atelier-asha"} and len(rungs)
    judged = rungs.dropna(subset=["spearman"])
    assert judged["spearman"].between(-1, 1).all() and (judged["trials"] >= 3).all()


@pytest.mark.parametrize("space_name", ["cnn", "dense"])
def test_kerastuner_hyperparameters_carry_the_space(space_name: str) -> None:
    """Through `HpTrial`, KerasTuner registers every parameter a space draws, with its range, scale or choices."""
    space = load_space(space_name)
    hp = keras_tuner.HyperParameters()
    params = sample(HpTrial(hp), space)
    registered = {h.name: h for h in hp.space}
    for name, value in params.items():
        distribution = space.params.get(name if name in PARAMETERS else name.rsplit("_", 1)[0])  # per block: base
        if isinstance(distribution, Range):
            offered = registered[name]
            assert offered.sampling == ("log" if distribution.log else "linear")
            lowest, highest = offered.prob_to_value(0.0), offered.prob_to_value(1 - 1e-12)
            assert (lowest, highest) == pytest.approx((distribution.low, distribution.high))
            if distribution.step is not None:  # every grid point, the top one too (KerasTuner floors the count)
                grid = {round(offered.prob_to_value((i + 0.5) / 1000), 9) for i in range(1000)}
                steps = round((distribution.high - distribution.low) / distribution.step)
                assert grid == {round(distribution.low + i * distribution.step, 9) for i in range(steps + 1)}
        elif isinstance(distribution, Choice):
            assert list(registered[name].values) == list(distribution.choices)
        else:
            assert name not in registered
        assert hp.values.get(name, value) == value
