"""`atelier bench --pipelines`: whole pipelines at one wall-clock budget, each run reading the test split once.

Does searching pay on this data? Three pipelines get the same budget, run after run with their own seed
and a fresh store folder, and each ends with one evaluation on the test split:
- `atelier-best`: `atelier best` as the CLI runs it (search, finalists, ensemble, promotion);
- `kt-hyperband`: KerasTuner's Hyperband as its users run it on the same space (through `SpaceHyperModel`):
  searching for the share of the budget `atelier best` gives its search (`best.plan_budget`), stopped by time,
  then its best hyperparameters built afresh and trained on the train and validation splits for the time left
  less the closing reserve (`train.TimedEpochs`), then evaluated;
- `reference`: no search: the space's `[reference]` (parameters it leaves out drawn with the run's seed)
  trained as `atelier best`'s finalists are, one per core with seeds of their own, for the whole budget less
  the closing reserve, their validation predictions ensembled as `atelier best` ensembles its finalists.
"""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split

import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from search.bench.pipeline_tables import runs_table, summary_table
from search.config.objectives import Objective, load_objective
from search.config.spaces import Space, load_space
from search.errors import SetupError
from search.paths import check_output_folder
from search.pipelines.best import plan_budget
from search.record.store import Store

PIPELINES = ("atelier-best", "kt-hyperband", "reference")
SUMMARY_CSV, RUNS_CSV = "pipelines.csv", "pipelines_runs.csv"
Say = Callable[[str], None]


@dataclass(frozen=True)
class PipelinesRequest:
    """What to compare, on what budget, as the user asked."""

    objective: str = "fashion-mnist-best"
    space: str | None = None
    budget: float = 900.0  # seconds of wall clock per pipeline and run
    runs: int = 3
    data_dir: Path | None = None
    output: Path | None = None  # default: bench-out/pipelines-OBJECTIVE-SPACE


@dataclass(frozen=True)
class PipelineRun:
    """One run of one pipeline: its test accuracy, its wall time, what it trained, and its reads of the test split."""

    pipeline: str
    seed: int
    test_accuracy: float
    wall_seconds: float
    trained: str
    test_evaluations: int


@dataclass(frozen=True)
class PipelinesResult:
    """The tables written, where, and the MLflow run holding them."""

    summary: pd.DataFrame
    runs: pd.DataFrame
    folder: Path
    files: list[Path]
    run_address: str
    seconds: float


@dataclass(frozen=True)
class _Checked:
    objective: Objective
    space: Space
    folder: Path


def check_pipelines_request(request: PipelinesRequest) -> _Checked:
    """The request's objective, space and folder, or a SetupError naming what is wrong and the fix."""
    objective = load_objective(request.objective)
    space = load_space(request.space or objective.space)
    if space.hypermodel is not None:
        raise SetupError(
            f"space {space.name} names a KerasTuner hypermodel; atelier bench --pipelines needs a [params] space "
            "with a [reference]; give --space such a space file (e.g. spaces/cnn-best.toml)"
        )
    if not space.reference:
        raise SetupError(
            f"space {space.name} has no [reference] for the pipeline without search to train; add a [reference] "
            f"table to {space.path} or give --space a space that has one (e.g. spaces/cnn-best.toml)"
        )
    if request.runs < 1:
        raise SetupError(f"--runs {request.runs} runs nothing; give at least 1")
    plan_budget(request.budget)  # a budget below atelier best's minimum is refused in its words
    folder = request.output or Path("bench-out") / f"pipelines-{objective.name}-{space.name}"
    check_output_folder(folder)
    return _Checked(objective, space, folder)


def compare_pipelines(request: PipelinesRequest, store: Store, say: Say = print) -> PipelinesResult:
    """Run every pipeline once per run (seeds from the objective's on), write the tables and log them."""
    checked = check_pipelines_request(request)
    store.check()
    from search.bench.record import log_pipelines_run
    from search.record.tracking import Tracker
    from search.reports.runs import run_address

    objective, space = checked.objective, checked.space
    say(
        f"bench --pipelines: {objective.name}, space {space.name}, {request.budget / 60:.1f} min per pipeline and "
        f"run, {request.runs} run(s) of {', '.join(PIPELINES)}"
    )
    started = time.perf_counter()
    results = []
    files = [checked.folder / SUMMARY_CSV, checked.folder / RUNS_CSV]
    for offset in range(request.runs):  # the pipelines alternate, so a change of load falls on all of them
        seed = objective.seed + offset
        for pipeline in PIPELINES:
            result = run_pipeline(pipeline, request, checked.objective, checked.space, seed, say)
            say(
                f"{result.pipeline} seed {result.seed}: test accuracy {result.test_accuracy:.4f} "
                f"(test split evaluated {result.test_evaluations} time(s)) in {result.wall_seconds:.0f} s; "
                f"{result.trained}"
            )
            results.append(result)
            summary = _write_tables(results, files)  # after every run: hours of runs are never lost to a stop
    settings = {
        "objective": objective.name,
        "space": space.name,
        "budget_seconds": request.budget,
        "runs": request.runs,
        "pipelines": " ".join(PIPELINES),
    }
    name = f"pipelines-{objective.name}-{space.name}"
    experiment_id, run_id = log_pipelines_run(Tracker(store.tracking), name, settings, summary, files)
    return PipelinesResult(
        summary,
        runs_table(results),
        checked.folder,
        files,
        run_address(store.tracking, experiment_id, run_id),
        time.perf_counter() - started,
    )


def _write_tables(results: list[PipelineRun], files: list[Path]) -> pd.DataFrame:
    """The summary and the runs so far, written to `files`; the summary returned."""
    summary = summary_table(results)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(files[0], index=False)
    runs_table(results).to_csv(files[1], index=False)
    return summary


def run_pipeline(
    pipeline: str, request: PipelinesRequest, objective: Objective, space: Space, seed: int, say: Say
) -> PipelineRun:
    """One run of `pipeline` with `seed`, in a fresh store folder, timed from its start to its evaluation."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"atelier-{pipeline}-") as folder:
        store = Store(Path(folder))
        if pipeline == "atelier-best":
            accuracy, trained, reads = _atelier_best(request, seed, store, say)
        elif pipeline == "kt-hyperband":
            job = _Job(replace(objective, seed=seed), space, request.budget, started, request.data_dir, store)
            accuracy, trained, reads = _in_fresh_process(_kerastuner_pipeline, job)
        else:
            accuracy, trained, reads = _reference(replace(objective, seed=seed), space, request, started, store, say)
    return PipelineRun(pipeline, seed, accuracy, time.monotonic() - started, trained, reads)


class TestSplit:
    """The objective's test split, read once, that can score one model once: a second score is refused."""

    __test__ = False  # not a pytest class

    def __init__(self, images: object) -> None:
        self.images, self.evaluations = images, 0

    def accuracy(self, model: object) -> float:
        from search.data.batches import predict_proba

        if self.evaluations:
            raise RuntimeError("the test split was already evaluated in this run")
        self.evaluations += 1
        proba = predict_proba(model, self.images)
        return float(np.mean(proba.argmax(axis=1) == self.images.y))


def _atelier_best(request: PipelinesRequest, seed: int, store: Store, say: Say) -> tuple[float, str, int]:
    """`atelier best` as the CLI runs it; the test accuracy its promotion measured."""
    from search.pipelines.best import run_best
    from search.pipelines.run import SearchRequest

    search = SearchRequest(
        request.objective, space=request.space, overrides={"seed": seed}, data_dir=request.data_dir, quiet=True
    )
    result = run_best(search, store, request.budget, model_name="pipelines", say=_indented(say))
    promotion = result.promotion
    trained = f"{result.plan.count} finalists ensembled, after a search of {result.seconds['search']:.0f} s"
    return float(promotion.evaluation.metrics["accuracy"]), trained, promotion.test_evaluations


@dataclass(frozen=True)
class _Job:
    objective: Objective  # its seed the run's
    space: Space
    budget: float
    started: float  # `time.monotonic()` when the run began (the same clock in every process)
    data_dir: Path | None
    store: Store


def _in_fresh_process(function: Callable[[_Job], tuple[float, str, int]], job: _Job) -> tuple[float, str, int]:
    """`function(job)` in a process of its own forked from the worker server: no Keras state shared."""
    from search.engine.worker_server import start_worker_server

    context = start_worker_server(also=["search.bench.strategies"])
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        return pool.submit(function, job).result()


def _kerastuner_pipeline(job: _Job) -> tuple[float, str, int]:
    """KerasTuner's Hyperband for the search's share of the budget, stopped by time; its best hyperparameters
    trained afresh on the train and validation splits for the time left less the closing; evaluated once."""
    import keras_tuner

    from search.bench.space_hypermodel import SpaceHyperModel
    from search.bench.strategies import kerastuner_objective, quiet
    from search.data import load_search_data
    from search.engine.candidate import space_build
    from search.engine.train import timed_callbacks
    from search.models.hypermodel import fit_labels
    from search.pipelines.finalists import MAX_STRETCH
    from search.release.stage import promotion_images

    objective, plan = job.objective, plan_budget(job.budget)
    keras.utils.set_random_seed(objective.seed)
    quiet()
    deadline = job.started + plan.search
    data = load_search_data(objective, job.data_dir, job.store.image_cache)  # as atelier best's search sees it
    hypermodel = SpaceHyperModel(job.space, objective, data, callbacks=[_Deadline(deadline)])
    timed = type("TimedHyperband", (_Timed, keras_tuner.Hyperband), {"deadline": deadline})
    with tempfile.TemporaryDirectory(prefix="atelier-kt-") as folder:
        tuner = timed(
            hypermodel,
            objective=kerastuner_objective(objective),
            seed=objective.seed,
            directory=folder,
            project_name="kt-hyperband",
            overwrite=True,
            max_consecutive_failed_trials=sys.maxsize,
            max_epochs=objective.max_epochs,
            factor=3,
            hyperband_iterations=None,
        )
        tuner.search(epochs=objective.max_epochs, verbose=0)
        completed = sum(trial.status == "COMPLETED" for trial in tuner.oracle.trials.values())
        if not completed:
            raise SetupError("KerasTuner's Hyperband completed no trial in its search time; give a longer --budget")
        params = hypermodel.params(tuner.get_best_hyperparameters(1)[0])
        searched = len(tuner.oracle.trials)
    whole, training, images = promotion_images(
        objective, job.data_dir, job.store.image_cache, every_image=True, with_validation=True
    )
    keras.utils.set_random_seed(objective.seed)
    model, params = space_build(params, whole)()
    seconds = max(1.0, job.budget - (time.monotonic() - job.started) - plan.closing)
    cap = MAX_STRETCH * objective.max_epochs
    labels = fit_labels(model, training.y, whole.n_classes)
    history = model.fit(
        training.with_labels(labels).batches(int(params["batch_size"]), shuffle=True),
        shuffle=False,  # the batches are shuffled
        epochs=cap,
        callbacks=timed_callbacks(params, seconds, cap),
        verbose=0,
    )
    test = TestSplit(images)
    accuracy = test.accuracy(model)
    trained = (
        f"{searched} trials ({completed} completed), then the best retrained {len(history.epoch)} epochs on "
        f"{len(training)} train+validation images"
    )
    return accuracy, trained, test.evaluations


class _Deadline(keras.callbacks.Callback):
    """Stops a fit once `deadline` (`time.monotonic()`) has passed: the search's time is up."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if time.monotonic() >= self.deadline:
            self.model.stop_training = True


class _Timed:
    """Mixed into a KerasTuner tuner: once `deadline` has passed, the oracle's trial limit becomes the trials run."""

    deadline: float

    def pre_create_trial(self) -> None:
        if time.monotonic() >= self.deadline:
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle's own way to end `search`


def reference_trials(space: Space, count: int, epochs: int, seed: int) -> list:
    """`count` copies (numbered 0 on) of the space's `[reference]` as finished trials, the parameters it leaves
    out drawn with `seed`, each credited `epochs` of search (which bounds a finalist's stretch)."""
    import optuna

    from search.models.sampling import sample

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial(dict(space.reference))
    trial = study.ask()
    sample(trial, space)
    frozen = study.tell(trial, 0.0)
    trials = []
    for number in range(count):
        copy = optuna.trial.create_trial(
            params=frozen.params, distributions=frozen.distributions, value=0.0, user_attrs={"epochs": epochs}
        )
        copy.number = number
        trials.append(copy)
    return trials


def _reference(
    objective: Objective, space: Space, request: PipelinesRequest, started: float, store: Store, say: Say
) -> tuple[float, str, int]:
    """The `[reference]` trained as finalists are, one per core, ensembled, and evaluated once."""
    import optuna

    from search.pipelines.best import ensemble_finalists
    from search.pipelines.finalists import train_finalists
    from search.release.stage import promotion_images

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    lanes = len(os.sched_getaffinity(0))
    plan = plan_budget(request.budget, count=lanes, lanes=lanes)
    data, _, images = promotion_images(
        objective, request.data_dir, store.image_cache, every_image=True, with_validation=False
    )
    trials = reference_trials(space, lanes, objective.max_epochs, objective.seed)
    seeds = [objective.seed + index for index in range(lanes)]
    left = request.budget - (time.monotonic() - started) - plan.closing
    with tempfile.TemporaryDirectory(prefix="atelier-reference-") as folder:
        finalists = train_finalists(
            trials, space, data, Path(folder), plan.each(left), objective.seed, lanes, _indented(say), seeds
        )
        if not finalists:
            raise SetupError(
                "no copy of the [reference] finished training; see the lines above, and give a longer --budget"
            )
        model, _ = ensemble_finalists(finalists, data.val.y, data.input_shape, _indented(say))
        test = TestSplit(images)
        accuracy = test.accuracy(model)
    epochs = ", ".join(str(f.epochs) for f in finalists)
    return accuracy, f"{len(finalists)} copies of the [reference] ({epochs} epochs) ensembled", test.evaluations


def _indented(say: Say) -> Say:
    return lambda line: say(f"  {line}")
