"""The bench's tables and figure: per run, per strategy (median and spread over seeds), best-so-far curves.

Results in, pandas tables and files out; knows nothing of MLflow (`search.bench.record` logs the folder).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from search.bench.strategies import REFERENCE, RunResult  # noqa: E402
from search.reports.rungs import rungs_table  # noqa: E402

OUTCOMES = ("finished", "pruned", "cut", "skipped", "failed")
RESAMPLES = 10_000  # bootstrap resamples of the seeds for each interval
SUMMARY_CSV, RUNS_CSV, CURVES_CSV, RUNGS_CSV, MEMORY_CSV, CURVES_PNG = (
    "bench.csv",
    "bench_runs.csv",
    "curves.csv",
    "rungs.csv",
    "memory.csv",
    "handed_over.png",
)


@dataclass(frozen=True)
class BenchReport:
    """The tables written, the files holding them, and the verdict on the product target (None without both peers)."""

    summary: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame
    verdict: str | None
    files: list[Path]


def best_so_far(result: RunResult) -> np.ndarray:
    """The best validation accuracy after each epoch the run trained (a diagnostic: the luckiest epoch so far)."""
    return np.fmax.accumulate(np.asarray(result.val_accuracy, dtype=float))


def handed_over_curve(result: RunResult) -> np.ndarray:
    """After each epoch the run trained, the holdout accuracy of the model it would hand over then (nan: none yet)."""
    curve = np.full(result.epochs, math.nan)
    for epochs, accuracy in result.handed_over:
        curve[max(0, epochs - 1) :] = accuracy
    return curve


def epochs_to_reach(result: RunResult, accuracy: float) -> float:
    """Epochs the run had trained when the model it hands over first scored `accuracy` on the holdout; inf if never."""
    reached = np.flatnonzero(np.nan_to_num(handed_over_curve(result), nan=-1.0) >= accuracy)
    return float(reached[0] + 1) if reached.size else math.inf


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A bootstrap interval of the median: seeds resampled with replacement, percentiles of the medians.

    Quantiles are taken without interpolation, so a run that never reached a mark (inf) keeps the bound inf.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    draws = np.random.default_rng(0).choice(values, size=(RESAMPLES, values.size), replace=True)
    medians = np.median(draws, axis=1)  # inf where the middle of a resample is: never nan for values >= 0
    tail = (1 - level) / 2
    return (
        float(np.quantile(medians, tail, method="inverted_cdf")),
        float(np.quantile(medians, 1 - tail, method="inverted_cdf")),
    )


def runs_table(results: Sequence[RunResult], target: float | None) -> pd.DataFrame:
    """One row per (strategy, seed): the handed-over model's holdout accuracy, the epochs it took to reach that of
    KerasTuner Hyperband's handed-over model (same seed, Hyperband's whole budget) and `target`, trials, time.

    `kt_hb_epoch_ratio` divides those epochs by the epochs Hyperband spent. `best_val_acc` (the best validation
    accuracy of any epoch of any trial) is a diagnostic only: it scores the luckiest epoch, not a model.
    """
    reference = {r.seed: r for r in results if r.strategy == REFERENCE and not math.isnan(r.holdout_accuracy)}
    rows = []
    for result in results:
        row: dict[str, object] = {
            "strategy": result.strategy,
            "seed": result.seed,
            "holdout_acc": result.holdout_accuracy,
            "best_val_acc": float(np.nanmax(result.val_accuracy)) if result.epochs else math.nan,
        }
        if result.seed in reference:
            peer = reference[result.seed]
            row["epochs_to_kt_hb"] = epochs_to_reach(result, peer.holdout_accuracy)
            row["kt_hb_epoch_ratio"] = row["epochs_to_kt_hb"] / peer.epochs
        if target is not None:
            row["epochs_to_target"] = epochs_to_reach(result, target)
        row |= {"epochs": result.epochs, "trials": result.trials}
        row |= {outcome: result.outcomes.get(outcome, 0) for outcome in OUTCOMES}
        row |= {
            "wall_s": result.wall_seconds,
            "fit_s": result.fit_seconds,
            "outside_fit_s_per_trial": (result.wall_seconds - result.fit_seconds) / max(result.trials, 1),
            "cores_busy": result.cores_busy,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per strategy, in the order run: medians over seeds with bootstrap 95% intervals (`_lo`, `_hi`),
    the holdout accuracy's range, targets reached."""
    rows = []
    for strategy, group in runs.groupby("strategy", sort=False):
        low, high = median_interval(group["holdout_acc"].dropna())
        row: dict[str, object] = {
            "strategy": strategy,
            "seeds": len(group),
            "holdout_acc": group["holdout_acc"].median(),
            "holdout_acc_lo": low,
            "holdout_acc_hi": high,
            "holdout_min": group["holdout_acc"].min(),
            "holdout_max": group["holdout_acc"].max(),
            "best_val_acc": group["best_val_acc"].median(),
        }
        if "kt_hb_epoch_ratio" in group:
            row["kt_hb_epoch_ratio"] = float(np.median(group["kt_hb_epoch_ratio"]))
            row["kt_hb_epoch_ratio_lo"], row["kt_hb_epoch_ratio_hi"] = median_interval(group["kt_hb_epoch_ratio"])
        for column, reached in (("epochs_to_kt_hb", "reached_kt_hb"), ("epochs_to_target", "reached_target")):
            if column in group:
                row[column] = float(np.median(group[column]))
                row[reached] = f"{int(np.isfinite(group[column]).sum())}/{len(group)}"
        for column in ("epochs", "trials", *OUTCOMES, "wall_s", "outside_fit_s_per_trial", "cores_busy"):
            row[column] = group[column].median()
        rows.append(row)
    rounded = ("holdout_acc", "holdout_acc_lo", "holdout_acc_hi", "holdout_min", "holdout_max", "best_val_acc")
    ratios = ("kt_hb_epoch_ratio", "kt_hb_epoch_ratio_lo", "kt_hb_epoch_ratio_hi")
    return pd.DataFrame(rows).round(
        {**dict.fromkeys(rounded, 4), **dict.fromkeys(ratios, 3), "wall_s": 1, "outside_fit_s_per_trial": 3}
        | {"cores_busy": 3}
    )


def curves_table(results: Sequence[RunResult]) -> pd.DataFrame:
    """Against epochs trained, one row per (strategy, seed, epoch): the handed-over model's holdout accuracy, and
    the best validation accuracy so far (a diagnostic)."""
    frames = [
        pd.DataFrame(
            {
                "strategy": r.strategy,
                "seed": r.seed,
                "epoch": np.arange(1, r.epochs + 1),
                "holdout_acc": handed_over_curve(r),
                "best_val_acc": best_so_far(r),
            }
        )
        for r in results
    ]
    return pd.concat(frames, ignore_index=True)


def rungs_of_runs(results: Sequence[RunResult]) -> pd.DataFrame:
    """Every Optuna run's early judgements: one row per (strategy, seed, rung) with its rank correlations."""
    frames = [rungs_table(r.rungs).assign(strategy=r.strategy, seed=r.seed) for r in results if r.rungs]
    columns = ["strategy", "seed", "epoch", "trials", "spearman", "kendall", "best_rank"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def verdict(runs: pd.DataFrame) -> str | None:
    """Whether atelier's default handed over a model as good on the holdout as KerasTuner Hyperband's with at most
    a third of Hyperband's epochs, and where its median holdout accuracy ranks."""
    if "kt_hb_epoch_ratio" not in runs or not {"atelier", REFERENCE} <= set(runs["strategy"]):
        return None
    paired = runs.pivot(index="seed", columns="strategy", values="kt_hb_epoch_ratio")[["atelier", REFERENCE]].dropna()
    ratios = paired["atelier"]
    ratio = float(np.median(ratios))
    low, high = median_interval(ratios)
    reached = int(np.isfinite(ratios).sum())
    medians = runs.groupby("strategy", sort=False)["holdout_acc"].median().sort_values(ascending=False)
    rank = list(medians.index).index("atelier") + 1
    return (
        f"atelier's handed-over model reached the holdout accuracy of KerasTuner Hyperband's in {reached} of "
        f"{len(paired)} seeds; epochs as a share of Hyperband's per seed {', '.join(f'{r:.2f}' for r in ratios)}, "
        f"median {ratio:.2f} (95% interval {low:.2f} to {high:.2f}; the product target is at most 0.33: "
        f"{'met' if ratio <= 1 / 3 else 'not met'}); atelier's median holdout accuracy {medians['atelier']:.4f} "
        f"ranks {rank} of {len(medians)} (the target: first)"
    )


def plot_curves(curves: pd.DataFrame, budget: int, target: float | None, path: Path) -> Path:
    """The handed-over model's holdout accuracy against epochs trained: the median over seeds, min to max shaded
    (KerasTuner's tuners hand over a model only at their budget's end: a point there)."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for strategy, group in curves.groupby("strategy", sort=False):
        grid = group.pivot(index="epoch", columns="seed", values="holdout_acc").reindex(range(1, budget + 1))
        epochs = grid.index.to_numpy()
        (line,) = axes.plot(epochs, grid.median(axis=1), label=strategy, marker="o", markevery=[budget - 1])
        axes.fill_between(epochs, grid.min(axis=1), grid.max(axis=1), color=line.get_color(), alpha=0.15)
    if target is not None:
        axes.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    finals = curves.groupby(["strategy", "seed"])["holdout_acc"].last().dropna()
    low = finals.min() if len(finals) else 0.0
    axes.set_ylim(max(0.0, low - 0.1), min(1.0, (curves["holdout_acc"].max() if len(finals) else 1.0) + 0.02))
    axes.set_xlabel("epochs trained (all trials, pruned and cut ones included)")
    axes.set_ylabel("holdout accuracy of the model handed over")
    axes.set_title("The model each strategy would hand over, scored on the holdout (median, min to max)", fontsize=10)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
    return path


def write_bench_report(
    results: Sequence[RunResult], memory: pd.DataFrame | None, budget: int, target: float | None, folder: Path
) -> BenchReport:
    """Tables as CSV and the curves as PNG in `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = runs_table(results, target)
    summary = summary_table(runs)
    curves = curves_table(results)
    files = [folder / SUMMARY_CSV, folder / RUNS_CSV, folder / CURVES_CSV, folder / RUNGS_CSV]
    for table, path in zip((summary, runs, curves, rungs_of_runs(results)), files, strict=True):
        table.to_csv(path, index=False)
    if memory is not None:
        files.append(folder / MEMORY_CSV)
        memory.to_csv(files[-1], index=False)
    files.append(plot_curves(curves, budget, target, folder / CURVES_PNG))
    return BenchReport(summary, runs, curves, verdict(runs), files)
