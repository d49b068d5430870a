"""An atelier space as a KerasTuner hypermodel: `sample` and `build_model` driven by KerasTuner's `hp`.

`HpTrial` offers the three Optuna trial methods that `search.models.sampling.sample` calls, each answered by
the KerasTuner hyperparameter of the same name and range, so a KerasTuner tuner searches exactly the
space an atelier study searches, and `SpaceHyperModel` builds, checks and trains through atelier's
trial core (`search.engine.candidate`), as `atelier run` does.
"""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split
from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner
from optuna.trial import TrialState

from search.config.objectives import Objective
from search.config.schema import Scalar
from search.config.spaces import Space
from search.data import SearchData
from search.engine.candidate import Rejected, build_checked, space_build, train_built
from search.models.sampling import sample


class HpTrial:
    """`suggest_int`, `suggest_float` and `suggest_categorical` on a KerasTuner `HyperParameters`."""

    def __init__(self, hp: keras_tuner.HyperParameters) -> None:
        self.hp = hp

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        # With log sampling KerasTuner reads `step` as a multiplier; Optuna's log ranges are unstepped.
        return self.hp.Int(name, low, high, step=None if log else step, sampling="log" if log else "linear")

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        # KerasTuner counts a stepped range's values as floor((high - low) / step) + 1, which loses `high`
        # when the division falls just short (0.5 / 0.05 = 9.999...): half a step more keeps it, as in Optuna.
        top = high if step is None else high + step / 2
        return self.hp.Float(name, low, top, step=step, sampling="log" if log else "linear")

    def suggest_categorical(self, name: str, choices: Sequence[Scalar]) -> Scalar:
        return self.hp.Choice(name, list(choices))


class SpaceHyperModel(keras_tuner.HyperModel):
    """Build and fit the models of an atelier space for a KerasTuner tuner, through atelier's trial core.

    A model above the objective's `max_params`, or one the input cannot carry, fails its trial
    before training, and a diverged fit fails it, as in an atelier trial. The models train on
    `data` (a tuner's `search` passes no data) with atelier's fit; `callbacks` see every epoch,
    after KerasTuner's own.
    """

    def __init__(
        self, space: Space, objective: Objective, data: SearchData, callbacks: Sequence[keras.callbacks.Callback] = ()
    ) -> None:
        super().__init__(name=space.name)
        self.space, self.objective, self.data = space, objective, data
        self.callbacks = list(callbacks)
        self.fit_seconds = 0.0
        self.skipped = 0  # trials failed before training: too large, or unbuildable

    def params(self, hp: keras_tuner.HyperParameters) -> dict[str, Scalar]:
        """The atelier parameters that `hp` holds (registering any it lacks, as a build does)."""
        return sample(HpTrial(hp), self.space)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        try:
            model, _ = build_checked(space_build(self.params(hp), self.data), self.objective.max_params)
        except Rejected as rejected:
            self.skipped += rejected.outcome.skipped
            raise keras_tuner.errors.FailedTrialError(rejected.outcome.reason) from None
        return model

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Mapping[str, float]:
        """Train as an atelier trial does, from `initial_epoch` to `epochs` as the tuner asks; the best epoch's
        metrics are the trial's result."""
        if args or "x" in kwargs:
            raise TypeError("SpaceHyperModel trains on the data it was made with; call the tuner's search without data")
        outcome = train_built(
            model,
            self.params(hp),
            self.objective,
            self.data,
            callbacks=[*kwargs.get("callbacks", ()), *self.callbacks],
            epochs=kwargs["epochs"],
            initial_epoch=kwargs.get("initial_epoch", 0),
        )
        self.fit_seconds += outcome.summary.get("fit_seconds", 0.0)
        if outcome.state is TrialState.FAIL:
            raise keras_tuner.errors.FailedTrialError(outcome.reason)
        return dict(outcome.best)
