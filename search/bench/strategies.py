"""`atelier bench`: one space and one objective searched by several strategies at an equal budget of epochs.

The budget is counted in training epochs over the same train and validation split, pruned and
cut trials included: every epoch any trial trains is one unit of the budget. Optuna strategies
start no trial once it is spent; KerasTuner's tuners are stopped the same way (their oracle is told
that it has run its last trial). The trial that spends the last epoch stops there, whatever its
plan. Each (strategy, seed) runs in a fresh process forked from a server that has imported the
libraries, so no run inherits another's Keras state or memory.

Strategies:
- `atelier`: atelier's default, TPE (`make_sampler`) with asynchronous successive halving on the
  objective's metric (`make_pruner`), each trial run by `search.engine.candidate.run_candidate`, as `atelier run`
  runs it; `atelier-hyperband` the same with Optuna's Hyperband pruner (the default before); `atelier-asha`
  the `asha` pruner, trials paused at rungs and resumed (`search.bench.asha_strategy`);
- `optuna-tpe`, `optuna-random`: the same without pruning, each trial trained to `max_epochs`;
- `kt-hyperband`, `kt-bayesian`: KerasTuner's `Hyperband` (max_epochs = the objective's, factor 3,
  iterations until the budget is spent) and `BayesianOptimization` (its defaults), searching the
  same space through `SpaceHyperModel`, on the same objective and metric.
"""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split
import gc
import math
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import keras_tuner
import numpy as np
import optuna

# KerasTuner prints the traceback of every failed trial (too large ones too) while its module-level flag
# `config.DEBUG` is set, and offers no public switch for it (1.4.x): this internal module is the only way.
from keras_tuner.src import config as keras_tuner_config
from optuna.trial import TrialState

from search.bench.space_hypermodel import SpaceHyperModel
from search.config.objectives import Objective
from search.config.spaces import Space
from search.data import ImageSet, SearchData
from search.data.batches import predict_proba
from search.engine.algorithms import first_rung, make_pruner, make_sampler
from search.engine.candidate import TrialOutcome, run_candidate, space_build
from search.engine.cores import CoreMeter
from search.engine.trial import trial_seed
from search.engine.warm_start import first_configurations, queue_configurations
from search.engine.worker_server import start_worker_server
from search.errors import SetupError
from search.models.sampling import sample
from search.reports.rungs import RungCorrelation, rung_correlations

STRATEGIES = (
    "atelier",
    "optuna-tpe",
    "optuna-random",
    "kt-hyperband",
    "kt-bayesian",
    "atelier-hyperband",
    "atelier-asha",
)
DEFAULT_STRATEGIES = STRATEGIES[:5]  # atelier-hyperband (the former default) and atelier-asha: asked for by name
OPTUNA = {
    "atelier": ("tpe", "halving"),
    "atelier-hyperband": ("tpe", "hyperband"),
    "optuna-tpe": ("tpe", "none"),
    "optuna-random": ("random", "none"),
}
REFERENCE = "kt-hyperband"  # the peer whose best accuracy atelier's default must reach in a third of its epochs
PAIR = ("atelier", REFERENCE)  # the strategies the product target compares: `--pair-seeds` gives them more seeds
ACCURACY = "val_accuracy"


def check_strategies(names: Sequence[str]) -> tuple[str, ...]:
    """`names` without repeats, or a SetupError naming the unknown one."""
    for name in names:
        if name not in STRATEGIES:
            raise SetupError(f"unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}")
    return tuple(dict.fromkeys(names))


@dataclass
class Ledger:
    """Every epoch a strategy trains, in order, with its validation accuracy, against a budget of epochs."""

    budget: int
    val_accuracy: list[float] = field(default_factory=list)
    cut: bool = False  # whether the budget ran out inside a trial, before its planned last epoch

    @property
    def epochs(self) -> int:
        return len(self.val_accuracy)

    @property
    def spent(self) -> bool:
        return self.epochs >= self.budget

    def spend(self, model: keras.Model, metrics: Mapping[str, float], last: bool) -> None:
        """Count one epoch of `model` (`last`: its fit's planned last); stop the fit when it spent the budget."""
        self.val_accuracy.append(float(metrics.get(ACCURACY, math.nan)))
        if self.spent and not last:
            model.stop_training = True
            self.cut = True


class LedgerCallback(keras.callbacks.Callback):
    """Charges each epoch of a fit to a ledger."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.ledger.spend(self.model, logs or {}, last=epoch + 1 >= self.params["epochs"])


@dataclass(frozen=True)
class Job:
    """One strategy searching once, with one seed, until its budget is spent."""

    strategy: str
    seed: int
    budget: int
    objective: Objective
    space: Space
    data: SearchData
    holdout: ImageSet  # images of the training part that no strategy trains or selects on


@dataclass(frozen=True)
class RunResult:
    """What one job spent and found.

    `outcomes` counts trials: finished, pruned, cut (stopped by the budget's end), skipped (too large or
    unbuildable: never trained) and failed.
    """

    strategy: str
    seed: int
    val_accuracy: tuple[float, ...]  # each epoch trained, in order
    outcomes: Mapping[str, int]
    wall_seconds: float
    fit_seconds: float
    cores_busy: float | None = None  # the share of the cores' time spent working while the job ran
    holdout_accuracy: float = math.nan  # of the model the strategy hands over at its budget's end (nan: none)
    handed_over: tuple[tuple[int, float], ...] = ()  # (epochs spent, holdout accuracy) each time that model changed
    rungs: tuple[RungCorrelation, ...] = ()  # an Optuna strategy's early judgements against its trials' ends

    @property
    def epochs(self) -> int:
        return len(self.val_accuracy)

    @property
    def trials(self) -> int:
        return sum(self.outcomes.values())


def run_bench(
    objective: Objective,
    space: Space,
    data: SearchData,
    holdout: ImageSet,
    seeds: Mapping[str, int],
    budget: int,
    on_result: Callable[[RunResult], None],
) -> list[RunResult]:
    """Each strategy once per seed, `seeds[strategy]` seeds from `objective.seed` on, one job at a time, each
    in a fresh process.

    Jobs alternate strategies within a seed, so a change in the machine's load falls on all of them.
    """
    context = start_worker_server(also=["search.bench.strategies"])
    results = []
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        for offset in range(max(seeds.values(), default=0)):
            for strategy in [name for name, count in seeds.items() if offset < count]:
                seed = objective.seed + offset
                job = Job(strategy, seed, budget, objective, space, data, holdout)
                result = pool.submit(run_job, job).result()
                on_result(result)
                results.append(result)
    return results


def run_job(job: Job) -> RunResult:
    """Run one job in this process: seed Keras, search until the budget is spent, count what happened."""
    keras.utils.set_random_seed(job.seed)
    quiet()
    gc.collect()
    gc.freeze()  # the libraries and the data live as long as this process: keep them out of every collection
    ledger = Ledger(job.budget)
    meter = CoreMeter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as folder:
        if job.strategy in OPTUNA:
            search = _optuna_search(job, ledger)
        elif job.strategy == "atelier-asha":
            from search.bench.asha_strategy import asha_search

            search = asha_search(job, ledger, Path(folder))
        else:
            search = _kerastuner_search(job, ledger, Path(folder))
    handed_over = tuple(search.handed_over)
    return RunResult(
        job.strategy,
        job.seed,
        tuple(ledger.val_accuracy),
        dict(search.outcomes),
        time.perf_counter() - started,
        search.fit_seconds,
        meter.busy_share(),
        handed_over[-1][1] if handed_over else math.nan,
        handed_over,
        tuple(search.rungs),
    )


@dataclass
class Search:
    """What a strategy's search did: its trials' outcomes, its seconds in `fit`, and the model it hands over."""

    outcomes: Counter[str] = field(default_factory=Counter)
    fit_seconds: float = 0.0
    handed_over: list[tuple[int, float]] = field(default_factory=list)
    rungs: list[RungCorrelation] = field(default_factory=list)


def holdout_accuracy(model: keras.Model, holdout: ImageSet) -> float:
    """The share of the holdout images the model labels right."""
    return float(np.mean(predict_proba(model, holdout).argmax(axis=1) == holdout.y))


def _optuna_search(job: Job, ledger: Ledger) -> Search:
    """Ask and tell trials until the budget is spent; each trial runs through atelier's trial core.

    `atelier` is `atelier run`: the space's `[reference]` is queued first, measured rather than screened. The
    model handed over is the best completed trial's (by the objective, as `atelier promote` picks it), scored on
    the holdout each time a trial takes the lead.
    """
    objective, data = job.objective, job.data
    sampler_name, pruner_name = OPTUNA[job.strategy]
    study = optuna.create_study(
        direction=objective.direction,
        sampler=make_sampler(sampler_name, job.seed, objective.trials),
        pruner=make_pruner(pruner_name, objective.max_epochs, first_rung(job.space)),
    )
    if job.strategy == "atelier":
        queue_configurations(study, first_configurations(job.space))
    search = Search()
    while not ledger.spent:
        trial = study.ask()
        outcome = run_candidate(
            space_build(sample(trial, job.space), data),
            objective,
            data,
            trial=trial,
            callbacks=[LedgerCallback(ledger)],
            seed=trial_seed(job.seed, trial.number),
        )
        if outcome.model is not None and leads(study, outcome.value, objective.direction):
            search.handed_over.append((ledger.epochs, holdout_accuracy(outcome.model, job.holdout)))
        keras.backend.clear_session()
        search.outcomes[label(outcome, ledger)] += 1
        search.fit_seconds += outcome.summary.get("fit_seconds", 0.0)
        study.tell(trial, outcome.value, state=outcome.state)
    search.rungs = rung_correlations(study.get_trials(deepcopy=False), study.direction)
    return search


def leads(study: optuna.Study, value: float | None, direction: str) -> bool:
    """Whether a completed trial's value beats every completed trial's so far (the first one leads)."""
    done = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if value is None:
        return False
    if not done:
        return True
    return value < min(done) if direction == "minimize" else value > max(done)


def label(outcome: TrialOutcome, ledger: Ledger) -> str:
    """How the bench counts a trial: finished, cut (by the budget's end), pruned, skipped or failed."""
    if outcome.state is TrialState.COMPLETE:
        return "cut" if ledger.cut else "finished"
    if outcome.state is TrialState.PRUNED:
        return "skipped" if outcome.skipped else "pruned"
    return "failed"


def quiet() -> None:
    """Keep this process's libraries from printing each trial: the bench counts outcomes and prints its own lines."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    keras_tuner_config.DEBUG = False  # see the import
    # KerasTuner's Hyperband resumes a trial's weights but not its optimizer's state, and Keras says so each time.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")


def kerastuner_objective(objective: Objective) -> keras_tuner.Objective:
    """The objective's metric and direction, as KerasTuner names them."""
    return keras_tuner.Objective(objective.metric, "min" if objective.direction == "minimize" else "max")


def _kerastuner_search(job: Job, ledger: Ledger, folder: Path) -> Search:
    """KerasTuner's tuner as its users run it: `search`, then `get_best_models` (the best trial's best epoch)."""
    objective, data = job.objective, job.data
    hypermodel = SpaceHyperModel(job.space, objective, data, callbacks=[LedgerCallback(ledger)])
    tuner_class = keras_tuner.Hyperband if job.strategy == "kt-hyperband" else keras_tuner.BayesianOptimization
    budgeted = type(f"Budgeted{tuner_class.__name__}", (_Budgeted, tuner_class), {"ledger": ledger})
    settings = (
        {"max_epochs": objective.max_epochs, "factor": 3, "hyperband_iterations": None}
        if job.strategy == "kt-hyperband"
        else {"max_trials": None}
    )
    tuner = budgeted(
        hypermodel,
        objective=kerastuner_objective(objective),
        seed=job.seed,
        directory=str(folder),
        project_name=job.strategy,
        overwrite=True,
        max_consecutive_failed_trials=sys.maxsize,
        **settings,
    )
    tuner.search(epochs=objective.max_epochs, verbose=0)  # the hypermodel trains on its own data
    states = Counter(trial.status for trial in tuner.oracle.trials.values())
    outcomes = Counter(
        finished=states["COMPLETED"] - ledger.cut,
        cut=int(ledger.cut),
        skipped=hypermodel.skipped,
        failed=states["FAILED"] + states["INVALID"] - hypermodel.skipped,
    )
    search = Search(outcomes, hypermodel.fit_seconds)
    if states["COMPLETED"]:
        search.handed_over.append((ledger.epochs, holdout_accuracy(tuner.get_best_models(1)[0], job.holdout)))
    return search


class _Budgeted:
    """Mixed into a KerasTuner tuner: once `ledger` is spent, the oracle's trial limit becomes the trials run."""

    ledger: Ledger
    oracle: keras_tuner.Oracle

    def pre_create_trial(self) -> None:
        if self.ledger.spent:
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle's own way to end `search`
