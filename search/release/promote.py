"""The test-set stage: rebuild a study's best trial, refit or reload it, evaluate once, gate, register.

This is the only module that reads an objective's test split. Everything it measures is logged as a
promotion run in the study's experiment, and the model is registered in the MLflow Model Registry:
alias `candidate` on every promoted version, `champion` only when every gate passes.
"""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split

import contextlib
import io
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import mlflow.data
import numpy as np
import optuna
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.config.objectives import Objective, objective_from_record
from search.config.schema import Scalar
from search.config.spaces import Space, load_space
from search.data import Images, SearchData, load_search_data, reader
from search.data.batches import batches
from search.engine.candidate import rebuild_trial
from search.engine.train import schedule_callbacks, timed_callbacks
from search.errors import SetupError
from search.models.hypermodel import fit_labels
from search.paths import check_name
from search.record.store import Store, latest_study_name
from search.record.tracking import MODEL_FILE, promotion_run_name
from search.release.evaluate import (
    Evaluation,
    confusion_figure,
    evaluate,
    misclassified_figure,
    precision_recall_figure,
)
from search.release.gates import PREDICT_BATCH, Gate, baseline_gate, champion_gate
from search.release.registered import load_keras_model, save_classifier
from search.secrets import redact

PROMOTION_KIND = "promotion"
REFIT_MAX_STRETCH = 4  # a timed refit trains at most this many times the search's epochs
CANDIDATE, CHAMPION = "candidate", "champion"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in the output

Say = Callable[[str], None]


@dataclass(frozen=True)
class Source:
    """The trial to promote and the settings its study was made with."""

    study_name: str
    trial: FrozenTrial
    objective: Objective
    space: Space
    data_dir: Path | None

    @property
    def best_epoch(self) -> int:
        return int(self.trial.user_attrs["best_epoch"])


@dataclass(frozen=True)
class Promotion:
    """What a promotion measured and where it recorded it."""

    source: Source
    refit: bool
    evaluation: Evaluation
    gates: tuple[Gate, ...]
    model_name: str
    version: str
    run_id: str
    test_evaluations: int

    @property
    def champion(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def find_source(storage: BaseStorage, study_name: str | None, trial_number: int | None) -> Source:
    """The study's best completed trial (or trial `trial_number`), with the study's space and objective."""
    name = study_name or latest_study_name(storage)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SetupError(f"unknown study '{name}'; see the studies with `atelier show` or pass --study") from None
    complete = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if not complete:
        raise SetupError(f"study '{name}' has no completed trial to promote; run more trials with `atelier run`")
    if trial_number is None:
        trial = study.best_trial
    elif trial_number in complete:
        trial = complete[trial_number]
    else:
        raise SetupError(
            f"study '{name}' has no completed trial {trial_number}; "
            f"choose one of {', '.join(map(str, sorted(complete)))}"
        )
    attrs = study.user_attrs
    missing = [key for key in ("space", "space_file", "objective_settings") if key not in attrs]
    if missing:
        raise SetupError(f"study '{name}' does not record its {', '.join(missing)}; it was not made by `atelier run`")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{attrs['space']}.toml"
        path.write_text(attrs["space_file"], encoding="utf-8")
        space = load_space(str(path))
    data_dir = Path(attrs["data_dir"]) if "data_dir" in attrs else None
    return Source(name, trial, objective_from_record(attrs["objective_settings"]), space, data_dir)


@dataclass(frozen=True)
class Contender:
    """The model to promote, and what its promotion run records of where it came from."""

    model: keras.Model
    trial_number: int  # the trial it is, or an ensemble's heaviest member
    source_run_id: str  # the run that trained it
    params: dict[str, Scalar]  # logged to the promotion run
    epochs: int  # the epochs it trained: the baseline trains as many (at most 10)
    refit: bool
    tags: dict[str, str] = field(default_factory=dict)
    label: str = ""  # what it is, in titles and descriptions (default: "trial N")

    @property
    def description(self) -> str:
        return self.label or f"trial {self.trial_number}"


@dataclass(frozen=True)
class Stage:
    """Everything a promotion reads before it evaluates: the records, the champion, and the images."""

    source: Source
    client: MlflowClient
    experiment_id: str
    model_name: str
    champion: keras.Model | None
    data: SearchData
    training: Images  # what the contender trained on, for the baseline and the record
    test: Images


def promote(
    store: Store,
    study_name: str | None = None,
    trial_number: int | None = None,
    refit: bool | None = None,
    model_name: str | None = None,
    data_dir: Path | None = None,
    refit_seconds: float | None = None,
    say: Say = lambda line: None,
) -> Promotion:
    """Rebuild, train or reload, evaluate once on the test split, gate, and register the trial's model.

    `refit_seconds` replaces the objective's `[promotion] refit_seconds`. Every check that can fail
    on bad input runs before anything is written to the store or registry.
    """
    if refit_seconds is not None and not 0 < refit_seconds < math.inf:
        raise SetupError(f"--refit-seconds {refit_seconds} must be a positive number of seconds, e.g. 240")
    source = _checked_source(store, study_name, trial_number, model_name)
    objective = source.objective
    refit = objective.data.subsample != 1.0 if refit is None else refit
    refit_seconds = objective.refit_seconds if refit_seconds is None else refit_seconds
    stage = open_stage(store, source, model_name, data_dir, every_image=refit, with_validation=refit)
    started = time.perf_counter()
    model, epochs = _candidate(source, stage.data, stage.training, refit, refit_seconds, stage.client, say)
    trial = source.trial
    contender = Contender(
        model,
        trial.number,
        trial.user_attrs["mlflow_run_id"],
        trial.params | {"refit": refit, "epochs": epochs},
        epochs,
        refit,
    )
    return judge(stage, contender, started, say)


def _checked_source(store: Store, study_name: str | None, trial_number: int | None, model_name: str | None) -> Source:
    """The trial to promote, after the names given are checked and the store is found."""
    for name, flag in ((study_name, "--study"), (model_name, "--model-name")):
        if name is not None:
            check_name(name, flag)
    store.check_tracking_exists()
    return find_source(store.existing_storage(), study_name, trial_number)


def open_stage(
    store: Store,
    source: Source,
    model_name: str | None,
    data_dir: Path | None,
    *,
    every_image: bool,
    with_validation: bool,
) -> Stage:
    """The records, the champion and the images of a promotion: the train split whole (`every_image`) or as the
    search subsampled it, with the validation images added to it or not, and the test split; every
    mismatch is a SetupError before anything is written."""
    objective = source.objective
    model_name = model_name or objective.name
    client = MlflowClient(store.tracking)
    experiment = client.get_experiment_by_name(source.study_name)
    if experiment is None:
        raise SetupError(
            f"study '{source.study_name}' has no MLflow experiment in {redact(store.tracking)}; "
            "pass the --tracking-uri the search used"
        )
    mlflow.set_tracking_uri(store.tracking)
    champion = _load_champion(client, model_name)
    data_dir = data_dir or source.data_dir
    data = load_search_data(
        replace(objective, data=replace(objective.data, subsample=1.0)) if every_image else objective, data_dir
    )
    training = (
        Images(np.concatenate([data.train.x, data.val.x]), np.concatenate([data.train.y, data.val.y]))
        if with_validation
        else data.train
    )
    test = reader(objective.data, data_dir)[0]("test")
    if test.x.shape[1:] != data.input_shape:
        raise SetupError(
            f"test images are {test.x.shape[1:]} but training images {data.input_shape}; "
            "the objective's test part does not match its train part"
        )
    if champion is not None and champion.input_shape[1:] != data.input_shape:
        raise SetupError(
            f"the champion of '{model_name}' takes {champion.input_shape[1:]} images, this objective "
            f"{data.input_shape}; pass --model-name to register under another name"
        )
    return Stage(source, client, experiment.experiment_id, model_name, champion, data, training, test)


def judge(stage: Stage, contender: Contender, started: float, say: Say) -> Promotion:
    """Evaluate the contender once on the test split, gate it, and register it; `started` began the promotion."""
    objective = stage.source.objective
    proba = contender.model.predict(stage.test.x, batch_size=PREDICT_BATCH, verbose=0)
    evaluation = evaluate(stage.test.y, proba, stage.data.class_names)
    say(f"evaluated once on {len(stage.test)} test images")
    gates = (
        baseline_gate(
            stage.client,
            contender.epochs,
            objective.seed,
            objective.margin,
            stage.data,
            stage.training,
            stage.test,
            evaluation,
            say,
        ),
        champion_gate(stage.champion, stage.model_name, stage.test, evaluation),
    )
    return _register(stage, contender, proba, evaluation, gates, time.perf_counter() - started)


def _load_champion(client: MlflowClient, model_name: str) -> keras.Model | None:
    """The registered champion of `model_name`, or None when there is none yet."""
    try:
        client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return load_keras_model(f"models:/{model_name}@{CHAMPION}")


def _candidate(
    source: Source,
    data: SearchData,
    training: Images,
    refit: bool,
    refit_seconds: float | None,
    client: MlflowClient,
    say: Say,
) -> tuple[keras.Model, int]:
    """The trial's model rebuilt from its parameters alone, then refitted or given its saved best weights,
    and the epochs it trained.

    A refit trains for the trial's best epoch over the search's schedule; with `refit_seconds`, for as
    many epochs as fit in that time (timed as it trains, at most `REFIT_MAX_STRETCH` times the
    search's epochs), the schedule stretched to them. Seeded before the build, so that two
    promotions of a trial draw the same initial weights.
    """
    keras.utils.set_random_seed(source.objective.seed)
    model, params = rebuild_trial(source.space, source.trial, data)
    trial = source.trial
    if not refit:
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(trial.user_attrs["mlflow_run_id"], MODEL_FILE, folder)
            model.set_weights(keras.models.load_model(path, compile=False).get_weights())
        model.optimizer.build(model.trainable_variables)  # saved with its slots, it reloads without a warning
        say(f"trial {trial.number}: best-epoch weights (epoch {source.best_epoch}) from its run")
        return model, source.best_epoch
    search_epochs = int(trial.user_attrs["epochs"])
    if refit_seconds is None:
        epochs, callbacks = source.best_epoch, schedule_callbacks(params, search_epochs)  # the search's schedule
    else:
        epochs = REFIT_MAX_STRETCH * search_epochs
        callbacks = timed_callbacks(params, refit_seconds, epochs)
    labels = fit_labels(model, training.y, data.n_classes)
    history = model.fit(
        batches(training.x, labels, int(params["batch_size"]), shuffle=True),
        shuffle=False,  # the batches are shuffled
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )
    trained = len(history.epoch)
    planned = "" if refit_seconds is None else f", as many as fit in {refit_seconds:.0f} s"
    say(f"trial {trial.number}: refitted on {len(training)} train+validation images for {trained} epochs{planned}")
    return model, trained


def _register(
    stage: Stage,
    contender: Contender,
    proba: np.ndarray,
    evaluation: Evaluation,
    gates: tuple[Gate, ...],
    promotion_seconds: float,
) -> Promotion:
    """Log the promotion run (metrics, gates, plots, data, model), register the model and set its aliases."""
    client, experiment_id, source, model_name = stage.client, stage.experiment_id, stage.source, stage.model_name
    training, test, model, refit = stage.training, stage.test, contender.model, contender.refit
    previous = client.search_runs(
        [experiment_id], filter_string=f"tags.`atelier.kind` = '{PROMOTION_KIND}'", max_results=10_000
    )
    count = len(previous) + 1
    gate_tags = {f"atelier.gate.{g.name}": ("passed: " if g.passed else "failed: ") + g.reason for g in gates}
    passed = all(g.passed for g in gates)
    tags = (
        {
            "atelier.kind": PROMOTION_KIND,
            "atelier.study": source.study_name,
            "atelier.trial_number": str(contender.trial_number),
            "atelier.source_run_id": contender.source_run_id,
            "atelier.test_evaluations": str(count),
            "atelier.refit": str(refit).lower(),
            "atelier.gates": "passed" if passed else "failed",
        }
        | gate_tags
        | contender.tags
    )
    tags |= {key: value for g in gates for key, value in g.tags.items()}
    run_name = promotion_run_name(contender.trial_number)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params(contender.params | {"model_name": model_name})
        metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
        metrics |= {f"gate_{g.name}_passed": float(g.passed) for g in gates}
        metrics |= {k: v for g in gates for k, v in g.figures.items()}
        metrics |= {"test_evaluations": float(count), "promotion_seconds": promotion_seconds}
        mlflow.log_metrics(metrics)
        _log_data(source.objective.name, training, test)
        mlflow.log_text(evaluation.confusion.to_csv(), "confusion_matrix.csv")
        mlflow.log_text(evaluation.report.to_csv(), "classification_report.csv")
        title = f"{model_name}: study {source.study_name} {contender.description}"
        class_names = tuple(evaluation.confusion.index)
        mlflow.log_figure(confusion_figure(evaluation.confusion, title), "confusion_matrix.png")
        mlflow.log_figure(precision_recall_figure(test.y, proba, class_names, title), "precision_recall.png")
        mlflow.log_figure(misclassified_figure(test.x, test.y, proba, class_names, title), "misclassified.png")
        with tempfile.TemporaryDirectory() as folder:  # saved, then logged: log_model fails with an input example
            # (mlflow#16183)
            path = Path(folder) / "model"
            save_classifier(model, path, test.x[:5], proba[:5], class_names)
            mlflow.log_artifacts(str(path), "model")
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's 'Successfully registered...' lines
            version = mlflow.register_model(f"runs:/{run.info.run_id}/model", model_name).version
        mlflow.set_tags(
            {
                "atelier.model_name": model_name,
                "atelier.model_version": version,
                "atelier.model_uri": f"models:/{model_name}/{version}",
            }
        )
    for key, value in tags.items():
        if key.startswith("atelier.gate") or key in ("atelier.study", "atelier.trial_number"):
            client.set_model_version_tag(model_name, version, key, value)
    client.set_model_version_tag(model_name, version, "atelier.promotion_run_id", run.info.run_id)
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    if passed:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    failed = [f"{g.name} gate failed: {g.reason}" for g in gates if not g.passed]
    summary = f"Study {source.study_name} {contender.description}, test accuracy {evaluation.metrics['accuracy']:.4f}; "
    client.update_model_version(
        model_name,
        version,
        description=summary
        + ("every gate passed: champion." if passed else "not champion: " + "; ".join(failed) + "."),
    )
    return Promotion(source, refit, evaluation, gates, model_name, version, run.info.run_id, count)


def _log_data(name: str, training: Images, test: Images) -> None:
    """The images the model was trained on and tested on, as MLflow datasets with digests."""
    for context, images in (("train", training), ("test", test)):
        dataset = mlflow.data.from_numpy(images.x, targets=images.y, name=f"{name}-{context}")
        mlflow.log_input(dataset, context=context)
