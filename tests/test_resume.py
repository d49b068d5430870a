"""A fit paused at a rung, checkpointed in the store and resumed gives what training straight through gives:
the same batches (`EpochOrder`), the same random draws (`EpochSeeds`), the optimizer's state, the schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.backend import keras
from search.config.objectives import load_objective
from search.data import SearchData, load_search_data
from search.data.batches import EpochOrder, steps
from search.engine.checkpoints import Checkpoints
from search.engine.train import FitOutcome, Progress, fit
from search.models.build import build_model

PARAMS = {
    "dense_layers": 2,
    "dense_units_0": 32,
    "dense_units_1": 16,
    "dense_dropout": 0.3,
    "aug_flip": True,
    "aug_translate": 0.1,
    "optimizer": "adamw",
    "learning_rate": 0.01,
    "lr_schedule": "cosine",
    "warmup_epochs": 1,
    "batch_size": 64,
}
EPOCHS, PAUSE = 5, 2


@pytest.fixture(scope="module")
def digits() -> SearchData:
    return load_search_data(load_objective("digits"))


def _model(digits: SearchData) -> keras.Model:
    keras.utils.set_random_seed(7)
    return build_model(PARAMS, digits.input_shape, digits.n_classes)


def _fit(model: keras.Model, digits: SearchData, **kwargs):  # noqa: ANN202
    return fit(model, digits, PARAMS, max_epochs=EPOCHS, monitor="val_loss", direction="minimize", seed=11, **kwargs)


def test_a_paused_and_resumed_fit_ends_where_one_straight_through_ends(digits: SearchData, tmp_path: Path) -> None:
    straight_model = _model(digits)
    straight = _fit(straight_model, digits, pausing=True)  # pausing: keep the last weights, to compare them

    paused_model = _model(digits)
    first = _fit(paused_model, digits, epochs=PAUSE, pausing=True)
    assert first.outcome is FitOutcome.COMPLETED and first.epochs == PAUSE
    checkpoints = Checkpoints(tmp_path / "checkpoints" / "study")
    checkpoints.save(3, paused_model, Progress(first.best_epoch, first.best, first.best_weights), PAUSE)
    del paused_model
    keras.backend.clear_session()
    keras.utils.set_random_seed(99)  # whatever the resuming process's seed: the epochs draw from the trial's
    model, since, epoch = checkpoints.load(3)
    assert epoch == PAUSE and checkpoints.epoch(3) == PAUSE
    rest = _fit(model, digits, epochs=EPOCHS, initial_epoch=epoch, since=since, pausing=True)

    assert [e["learning_rate"] for e in first.history + rest.history] == pytest.approx(
        [e["learning_rate"] for e in straight.history], rel=1e-6
    )
    assert [e["val_loss"] for e in first.history + rest.history] == pytest.approx(
        [e["val_loss"] for e in straight.history], rel=1e-5
    )
    for resumed, through in zip(model.get_weights(), straight_model.get_weights(), strict=True):
        np.testing.assert_allclose(resumed, through, rtol=1e-5, atol=1e-6)
    assert rest.best_epoch == straight.best_epoch and rest.best == pytest.approx(straight.best)


def test_a_resumed_fit_ends_holding_the_best_epoch_even_from_before_its_pause(
    digits: SearchData, tmp_path: Path
) -> None:
    model = _model(digits)
    first = _fit(model, digits, epochs=PAUSE, pausing=True)
    best = Progress(1, dict(first.history[0]) | {"val_loss": -1.0}, [w * 0 for w in model.get_weights()])
    rest = _fit(model, digits, epochs=EPOCHS, initial_epoch=PAUSE, since=best)  # epoch 1 "best": unbeatable
    assert rest.best_epoch == 1 and rest.epochs == EPOCHS - PAUSE
    assert all(not w.any() for w in model.get_weights())  # it ends with that epoch's weights


def test_epoch_order_is_a_function_of_the_seed_and_the_epoch(digits: SearchData) -> None:
    n, size = len(digits.train), 64
    per_epoch = steps(n, size)

    def labels(order: EpochOrder, epochs: int) -> list[np.ndarray]:
        batches = list(digits.train.batches(size, shuffle=order).take(epochs * per_epoch).as_numpy_iterator())
        return [np.concatenate([y for _, y in batches[e * per_epoch : (e + 1) * per_epoch]]) for e in range(epochs)]

    from_zero, from_two = labels(EpochOrder(5, 0), 3), labels(EpochOrder(5, 2), 1)
    np.testing.assert_array_equal(from_zero[2], from_two[0])  # epoch 2 alike, however the fit began
    assert not np.array_equal(from_zero[0], from_zero[1])  # a new order each epoch
    assert sorted(from_zero[1]) == sorted(digits.train.y)  # each epoch every image once
    assert not np.array_equal(labels(EpochOrder(6, 0), 1)[0], from_zero[0])  # another seed, another order
