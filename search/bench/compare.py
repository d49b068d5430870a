"""`atelier bench` as one function: check the request, run every (strategy, seed) job, the memory runs, the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from search.bench.strategies import DEFAULT_STRATEGIES, PAIR, RunResult, check_strategies
from search.config.objectives import Objective, load_objective
from search.config.spaces import Space, load_space
from search.errors import SetupError
from search.paths import check_output_folder
from search.record.store import Store

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchRequest:
    """What to compare, on what budget, as the user asked."""

    objective: str = "fashion-mnist-quick"
    space: str | None = None
    seeds: int = 3
    pair_seeds: int | None = None  # seeds of atelier and kt-hyperband, the pair the target compares (None: seeds)
    budget_epochs: int = 60
    target_accuracy: float | None = None
    strategies: Sequence[str] = DEFAULT_STRATEGIES
    memory_trials: Sequence[int] = (5, 30, 100)  # none: no memory figures
    holdout: int | None = None  # training images nobody trains or selects on, to score the models handed over
    data_dir: Path | None = None
    output: Path | None = None  # default: bench-out/OBJECTIVE-SPACE


@dataclass(frozen=True)
class BenchResult:
    """The report written, where, and the MLflow run holding it."""

    summary: pd.DataFrame
    verdict: str | None
    memory: pd.DataFrame | None
    folder: Path
    files: list[Path]
    run_address: str
    seconds: float


@dataclass(frozen=True)
class _Checked:
    objective: Objective
    space: Space
    strategies: tuple[str, ...]
    folder: Path


def check_request(request: BenchRequest) -> _Checked:
    """The request's objective, space, strategies and folder, or a SetupError naming what is wrong."""
    objective = load_objective(request.objective)
    space = load_space(request.space or objective.space)
    if space.hypermodel is not None:
        raise SetupError(
            f"space {space.name} names a KerasTuner hypermodel; atelier bench drives a [params] space "
            "through Optuna and through KerasTuner alike; give --space a space file with [params]"
        )
    strategies = check_strategies(request.strategies)
    if request.holdout is not None and request.holdout < 1:
        raise SetupError(f"--holdout {request.holdout} scores nothing; give a count of images, e.g. 10000")
    if request.budget_epochs < 1:
        raise SetupError(f"--budget-epochs {request.budget_epochs} leaves nothing to train; give at least 1")
    if request.seeds < 1:
        raise SetupError(f"--seeds {request.seeds} runs nothing; give at least 1")
    if request.pair_seeds is not None and request.pair_seeds < request.seeds:
        raise SetupError(
            f"--pair-seeds {request.pair_seeds} is below --seeds {request.seeds}; give at least as many, "
            "or leave it out"
        )
    if request.target_accuracy is not None and not 0 < request.target_accuracy <= 1:
        raise SetupError(f"--target-accuracy {request.target_accuracy} is not an accuracy; give a share in (0, 1]")
    if any(count < 1 for count in request.memory_trials):
        raise SetupError(
            f"--memory-trials {' '.join(map(str, request.memory_trials))}: counts of trials must be "
            "at least 1 (give none to skip the memory figures)"
        )
    folder = request.output or Path("bench-out") / f"{objective.name}-{space.name}"
    check_output_folder(folder)
    return _Checked(objective, space, strategies, folder)


def compare(request: BenchRequest, store: Store, say: Say = print) -> BenchResult:
    """Run the bench: every strategy once per seed, then the memory runs; write and log the report.

    The request and the store are checked before anything is written.
    """
    checked = check_request(request)
    store.check()
    objective, space = checked.objective, checked.space
    from search.bench.memory import measure_memory
    from search.bench.record import log_bench_run
    from search.bench.report import write_bench_report
    from search.bench.strategies import run_bench
    from search.data.splits import load_bench_data
    from search.record.tracking import Tracker
    from search.reports.runs import run_address

    data, holdout = load_bench_data(objective, request.holdout, request.data_dir)
    seeds = {
        strategy: request.pair_seeds if strategy in PAIR and request.pair_seeds else request.seeds
        for strategy in checked.strategies
    }
    say(
        f"bench: {objective.name} ({len(data.train)} train, {len(data.val)} validation, {len(holdout)} holdout "
        f"images), space "
        f"{space.name}, {request.budget_epochs} epochs per strategy and seed (trials of at most "
        f"{objective.max_epochs}), seeds: {', '.join(f'{s} {n}' for s, n in seeds.items())}"
    )
    started = time.perf_counter()
    results = run_bench(
        objective, space, data, holdout, seeds, request.budget_epochs, lambda result: say(_job_line(result))
    )
    memory = (
        measure_memory(objective, space, request.data_dir, request.memory_trials) if request.memory_trials else None
    )
    report = write_bench_report(results, memory, request.budget_epochs, request.target_accuracy, checked.folder)
    settings = {
        "objective": objective.name,
        "space": space.name,
        "seeds": request.seeds,
        "pair_seeds": request.pair_seeds or request.seeds,
        "budget_epochs": request.budget_epochs,
        "max_epochs": objective.max_epochs,
        "strategies": " ".join(checked.strategies),
        "target_accuracy": request.target_accuracy,
        "train_images": len(data.train),
        "validation_images": len(data.val),
        "holdout_images": len(holdout),
        "memory_trials": " ".join(map(str, request.memory_trials)),
    }
    experiment_id, run_id = log_bench_run(
        Tracker(store.tracking), f"{objective.name}-{space.name}", settings, report, memory
    )
    return BenchResult(
        report.summary,
        report.verdict,
        memory,
        checked.folder,
        report.files,
        run_address(store.tracking, experiment_id, run_id),
        time.perf_counter() - started,
    )


def _job_line(result: RunResult) -> str:
    return (
        f"{result.strategy} seed {result.seed}: holdout accuracy {result.holdout_accuracy:.4f} of the model handed "
        f"over (best val_accuracy of any epoch {max(result.val_accuracy, default=0):.4f}) "
        f"in {result.epochs} epochs, {result.trials} trials "
        f"({', '.join(f'{n} {k}' for k, n in result.outcomes.items() if n)}), {result.wall_seconds:.0f} s"
    )
