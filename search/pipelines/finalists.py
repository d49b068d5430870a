"""The finalists: a study's best configurations trained longer on every training image, side by side, in a time budget.

Each finalist trains in a process of its own forked from the worker server, one lane per core
(two single-thread processes train these CNNs about 1.7 times faster than one process with two
threads: `benchmarks/worker_threads.py`). A finalist trains for as many epochs as fit in its
seconds (`train.TimedEpochs`), its learning-rate schedule stretched to them, on the objective's
whole train split; the validation split stays out of training, so that the ensemble can be chosen
on it. Each finalist is recorded as an MLflow run beside its trial's.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import optuna
from mlflow.entities import Metric, Param
from optuna.trial import FrozenTrial, TrialState

from search.backend import keras, limit_threads
from search.config.spaces import Space
from search.data import SearchData
from search.data.batches import predict_proba
from search.engine.candidate import rebuild_trial
from search.engine.train import timed_callbacks
from search.engine.worker_server import start_worker_server
from search.models.hypermodel import fit_labels
from search.record.tracking import PARENT_TAG
from search.release.stage import Stage

FINALIST_KIND = "finalist"
MAX_STRETCH = 10  # a finalist trains at most this many times its trial's epochs
Say = Callable[[str], None]


@dataclass(frozen=True)
class FinalistJob:
    """One configuration to train: the trial, where its model goes, and for how long."""

    trial: FrozenTrial
    path: Path
    seconds: float
    threads: int
    seed: int


@dataclass(frozen=True)
class Finalist:
    """A trained finalist: its model file, its validation predictions (of the images and their mirror images)."""

    trial: FrozenTrial
    path: Path
    val_plain: np.ndarray
    val_mirrored: np.ndarray
    epochs: int
    seconds: float
    history: dict[str, list[float]]  # per epoch: the fit's metrics, and `epoch_seconds`

    @property
    def name(self) -> str:
        return f"trial_{self.trial.number}"


def best_trials(study: optuna.Study, count: int) -> list[FrozenTrial]:
    """The study's `count` best completed trials with distinct parameters, best first."""
    trials = sorted(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None),
        key=lambda t: t.value if study.direction == optuna.study.StudyDirection.MINIMIZE else -t.value,
    )
    chosen, seen = [], set()
    for trial in trials:
        key = tuple(sorted(trial.params.items()))
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
    return chosen[:count]


def train_finalists(
    trials: Sequence[FrozenTrial],
    space: Space,
    data: SearchData,
    folder: Path,
    seconds_each: float,
    seed: int,
    lanes: int | None = None,
    say: Say = print,
    seeds: Sequence[int] | None = None,
) -> list[Finalist]:
    """Train every trial's configuration for `seconds_each`, `lanes` at a time (default: one per core), each
    seeded with `seed` or with its own of `seeds` (one per trial)."""
    cores = len(os.sched_getaffinity(0))
    lanes = max(1, min(lanes or cores, len(trials)))
    threads = max(1, cores // lanes)
    seeds = list(seeds) if seeds is not None else [seed] * len(trials)
    jobs = [
        FinalistJob(t, folder / f"trial_{t.number}.keras", seconds_each, threads, s)
        for t, s in zip(trials, seeds, strict=True)
    ]
    context = start_worker_server()
    waiting, live, done = list(jobs), {}, []
    while waiting or live:
        while waiting and len(live) < lanes:
            job = waiting.pop(0)
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_train, args=(job, space, data, send), daemon=True)
            process.start()
            send.close()
            live[receive] = (process, job)
            minutes = seconds_each / 60
            say(f"finalist trial {job.trial.number}: training for {minutes:.1f} min on {len(data.train)} images")
        for receive in multiprocessing.connection.wait(list(live)):
            process, job = live.pop(receive)
            try:
                finalist = receive.recv()
            except EOFError:
                finalist = f"its process ended without a word (status {process.exitcode})"
            process.join()
            if not isinstance(finalist, Finalist):
                say(f"finalist trial {job.trial.number}: no model: {finalist}")
                continue
            done.append(finalist)
            accuracy = float(np.mean(finalist.val_plain.argmax(axis=1) == data.val.y))
            paces = ", ".join(f"{seconds:.0f}" for seconds in finalist.history["epoch_seconds"])
            say(
                f"finalist trial {job.trial.number}: {finalist.epochs} epochs in {finalist.seconds / 60:.1f} min "
                f"({paces} s), val_accuracy {accuracy:.4f}"
            )
    return sorted(done, key=lambda f: [t.number for t in trials].index(f.trial.number))


def record_finalist(stage: Stage, study_run_id: str, finalist: Finalist) -> str:
    """The finalist's MLflow run, beside its trial's under the study's run: parameters, curves, figures, model."""
    trial, client, study_name = finalist.trial, stage.client, stage.source.study_name
    run = client.create_run(
        stage.experiment_id,
        run_name=f"finalist-{trial.number}",
        tags={
            "atelier.kind": FINALIST_KIND,
            "atelier.study": study_name,
            "atelier.finalist_of_trial": str(trial.number),
            "atelier.source_run_id": str(trial.user_attrs.get("mlflow_run_id", "")),
            PARENT_TAG: study_run_id,
        },
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(name, float(value), now, step)
        for name, values in finalist.history.items()
        for step, value in enumerate(values, 1)
    ]
    figures = finalist_figures(finalist, stage.data.val.y)
    metrics += [Metric(name, value, now, 0) for name, value in figures.items()]
    params = [Param(k, str(v)) for k, v in trial.params.items()] + [Param("epochs", str(finalist.epochs))]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.log_artifact(run_id, str(finalist.path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def finalist_figures(finalist: Finalist, y: np.ndarray) -> dict[str, float]:
    """Validation accuracy of the finalist, alone and averaged with its prediction of the mirror image."""
    mirrored = (finalist.val_plain + finalist.val_mirrored) / 2
    return {
        "val_accuracy": float(np.mean(finalist.val_plain.argmax(axis=1) == y)),
        "val_accuracy_mirror": float(np.mean(mirrored.argmax(axis=1) == y)),
        "epochs": float(finalist.epochs),
        "fit_seconds": finalist.seconds,
    }


def _train(job: FinalistJob, space: Space, data: SearchData, send: Connection) -> None:
    """In a worker process: train the job's configuration, save it, send back its validation predictions
    (or why it could not: the parent reports it and goes on with the other finalists)."""
    try:
        send.send(_finalist(job, space, data))
    except KeyboardInterrupt:  # the parent got the same Ctrl-C and says so
        pass
    except Exception as error:
        send.send(f"{type(error).__name__}: {error}")
    finally:
        send.close()


def _finalist(job: FinalistJob, space: Space, data: SearchData) -> Finalist:
    limit_threads(job.threads)
    keras.utils.set_random_seed(job.seed)
    model, params = rebuild_trial(space, job.trial, data)
    cap = MAX_STRETCH * int(job.trial.user_attrs.get("epochs", 10))
    callbacks = timed_callbacks(params, job.seconds, cap)
    timed = callbacks[-1]
    started = time.perf_counter()
    labels = fit_labels(model, data.train.y, data.n_classes)
    history = model.fit(
        data.train.with_labels(labels).batches(int(params["batch_size"]), shuffle=True),
        shuffle=False,  # the batches are shuffled
        epochs=cap,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    plain = predict_proba(model, data.val)
    mirrored = predict_proba(model, data.val, mirror=True)
    model.save(job.path)
    curves = {name: [float(v) for v in values] for name, values in history.history.items()}
    curves["epoch_seconds"] = timed.durations
    return Finalist(job.trial, job.path, plain, mirrored, len(history.epoch), seconds, curves)
