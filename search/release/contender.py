"""The model a promotion tests (`Contender`), and the one a trial gives: rebuilt from its parameters alone, then
refitted, or given the best-epoch weights its run saved."""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from mlflow import MlflowClient

from search.config.schema import Scalar
from search.data import ImageSet, SearchData
from search.engine.candidate import rebuild_trial
from search.engine.train import schedule_callbacks, timed_callbacks
from search.models.hypermodel import fit_labels
from search.record.tracking import MODEL_FILE
from search.release.source import Source
from search.release.stage import Stage

REFIT_MAX_STRETCH = 4  # a timed refit trains at most this many times the search's epochs

Say = Callable[[str], None]


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


def trial_contender(stage: Stage, refit: bool, refit_seconds: float | None, say: Say) -> Contender:
    """The stage's trial rebuilt from its parameters alone, then refitted on the stage's training images or given
    its saved best weights. Seeded before the build, so that two promotions of a trial draw the same initial
    weights."""
    source, trial = stage.source, stage.source.trial
    keras.utils.set_random_seed(source.objective.seed)
    model, params = rebuild_trial(source.space, trial, stage.data)
    if refit:
        epochs = _refit(model, params, source, stage.data, stage.training, refit_seconds, say)
    else:
        epochs = _reload(model, source, stage.client, say)
    logged = trial.params | {"refit": refit, "epochs": epochs}
    return Contender(model, trial.number, trial.user_attrs["mlflow_run_id"], logged, epochs, refit)


def _reload(model: keras.Model, source: Source, client: MlflowClient, say: Say) -> int:
    """Give `model` the best-epoch weights its trial's run saved; the epochs they had trained."""
    trial = source.trial
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(trial.user_attrs["mlflow_run_id"], MODEL_FILE, folder)
        model.set_weights(keras.models.load_model(path, compile=False).get_weights())
    model.optimizer.build(model.trainable_variables)  # saved with its slots, it reloads without a warning
    say(f"trial {trial.number}: best-epoch weights (epoch {source.best_epoch}) from its run")
    return source.best_epoch


def _refit(
    model: keras.Model,
    params: dict[str, Scalar],
    source: Source,
    data: SearchData,
    training: ImageSet,
    refit_seconds: float | None,
    say: Say,
) -> int:
    """Train `model` on `training`; the epochs it trained.

    For the trial's best epoch over the search's schedule; with `refit_seconds`, for as many epochs as fit in
    that time (timed as it trains, at most `REFIT_MAX_STRETCH` times the search's epochs), the schedule
    stretched to them.
    """
    search_epochs = int(source.trial.user_attrs["epochs"])
    if refit_seconds is None:
        epochs, callbacks = source.best_epoch, schedule_callbacks(params, search_epochs)  # the search's schedule
    else:
        epochs = REFIT_MAX_STRETCH * search_epochs
        callbacks = timed_callbacks(params, refit_seconds, epochs)
    labels = fit_labels(model, training.y, data.n_classes)
    history = model.fit(
        training.with_labels(labels).batches(int(params["batch_size"]), shuffle=True),
        shuffle=False,  # the batches are shuffled
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )
    trained = len(history.epoch)
    planned = "" if refit_seconds is None else f", as many as fit in {refit_seconds:.0f} s"
    images = f"{len(training)} train+validation images"
    say(f"trial {source.trial.number}: refitted on {images} for {trained} epochs{planned}")
    return trained
