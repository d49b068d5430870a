"""An atelier space as a KerasTuner hypermodel: `sample` and `build_model` driven by KerasTuner's `hp`.

`HpTrial` offers the three Optuna trial methods that `search.space.sample` calls, each answered by
the KerasTuner hyperparameter of the same name and range, so a KerasTuner tuner searches exactly the
space an atelier study searches, and `SpaceHyperModel.fit` trains with atelier's fit settings (the
trial's batch size, the cosine schedule over the objective's `max_epochs`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from search.backend import keras
import keras_tuner

from search.config import Objective, Space
from search.model import UnbuildableModel, build_model
from search.schema import Scalar
from search.space import sample
from search.train import CosineDecay


class HpTrial:
    """`suggest_int`, `suggest_float` and `suggest_categorical` on a KerasTuner `HyperParameters`."""

    def __init__(self, hp: keras_tuner.HyperParameters) -> None:
        self.hp = hp

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        # With log sampling KerasTuner reads `step` as a multiplier; Optuna's log ranges are unstepped.
        return self.hp.Int(name, low, high, step=None if log else step, sampling="log" if log else "linear")

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self.hp.Float(name, low, high, step=step, sampling="log" if log else "linear")

    def suggest_categorical(self, name: str, choices: Sequence[Scalar]) -> Scalar:
        return self.hp.Choice(name, list(choices))


class SpaceHyperModel(keras_tuner.HyperModel):
    """Build and fit the models of an atelier space for a KerasTuner tuner.

    A model above the objective's `max_params`, or one the input cannot carry, fails its trial
    before training (atelier prunes the same trials before training). `callbacks` are added to
    every fit, after KerasTuner's own.
    """

    def __init__(self, space: Space, objective: Objective, input_shape: tuple[int, ...], n_classes: int,
                 callbacks: Sequence[keras.callbacks.Callback] = ()) -> None:
        super().__init__(name=space.name)
        self.space, self.objective = space, objective
        self.input_shape, self.n_classes = input_shape, n_classes
        self.callbacks = list(callbacks)
        self.fit_seconds = 0.0
        self.skipped = 0  # trials failed before training: too large, or unbuildable

    def params(self, hp: keras_tuner.HyperParameters) -> dict[str, Scalar]:
        """The atelier parameters that `hp` holds (registering any it lacks, as a build does)."""
        return sample(HpTrial(hp), self.space)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        try:
            model = build_model(self.params(hp), self.input_shape, self.n_classes)
        except UnbuildableModel as error:
            self.skipped += 1
            raise keras_tuner.errors.FailedTrialError(f"unbuildable: {error}") from None
        if model.count_params() > self.objective.max_params:
            self.skipped += 1
            raise keras_tuner.errors.FailedTrialError(
                f"too large: {model.count_params():,} parameters exceed max_params {self.objective.max_params:,}")
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
            ) -> keras.callbacks.History:
        params = self.params(hp)
        callbacks = list(kwargs.pop("callbacks", [])) + self.callbacks
        if params.get("lr_schedule") == "cosine":
            callbacks.insert(0, CosineDecay(float(params["learning_rate"]), self.objective.max_epochs))
        started = time.perf_counter()
        try:
            return model.fit(*args, batch_size=int(params["batch_size"]), callbacks=callbacks, **kwargs)
        finally:
            self.fit_seconds += time.perf_counter() - started
