"""`train.fit` on real digits: learning-rate schedule, best-epoch weights, the monitor check."""

from __future__ import annotations

import math
import time

import numpy as np
import optuna
import pytest

from search.backend import keras
from search.config.objectives import load_objective
from search.data import SearchData, load_search_data
from search.engine.train import EpochSchedule, FitOutcome, TimedEpochs, fit
from search.engine.warm_start import SOURCE_ATTR
from search.errors import SetupError
from search.models.build import build_model

PARAMS = {"dense_layers": 1, "dense_units_0": 32, "learning_rate": 0.01, "batch_size": 64}


@pytest.fixture(scope="module")
def digits() -> SearchData:
    return load_search_data(load_objective("digits"))


def test_cosine_schedule_sets_each_epochs_rate(digits: SearchData) -> None:
    params = PARAMS | {"lr_schedule": "cosine"}
    model = build_model(params, digits.input_shape, digits.n_classes)
    result = fit(model, digits, params, max_epochs=4, monitor="val_loss", direction="minimize")
    rates = [epoch["learning_rate"] for epoch in result.history]
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert rates == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_warm_up_rises_to_the_rate_then_the_schedule_runs_over_the_rest(digits: SearchData, schedule: str) -> None:
    params = PARAMS | {"lr_schedule": schedule, "warmup_epochs": 2}
    model = build_model(params, digits.input_shape, digits.n_classes)
    result = fit(model, digits, params, max_epochs=5, monitor="val_loss", direction="minimize")
    rates = [epoch["learning_rate"] for epoch in result.history]
    after = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)] if schedule == "cosine" else [0.01] * 3
    assert rates == pytest.approx([0.01 / 3, 0.02 / 3, *after], rel=1e-5)


def test_model_ends_with_its_best_epochs_weights(digits: SearchData) -> None:
    model = build_model(PARAMS, digits.input_shape, digits.n_classes)
    result = fit(model, digits, PARAMS, max_epochs=5, monitor="val_accuracy", direction="maximize")
    assert result.outcome is FitOutcome.COMPLETED and result.epochs == 5
    accuracies = [epoch["val_accuracy"] for epoch in result.history]
    assert result.best_epoch == accuracies.index(max(accuracies)) + 1
    accuracy = model.evaluate(digits.val.x, digits.val.y, verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(max(accuracies), abs=1e-6)


def test_val_loss_is_the_plain_crossentropy_whatever_smooths_or_penalizes_training(digits: SearchData) -> None:
    """With label smoothing and L2, Keras's validation loss is the training loss (higher for more of either);
    the val_loss a trial is judged by is the plain cross-entropy of its predictions."""
    params = PARAMS | {"label_smoothing": 0.15, "l2": 1e-3}
    model = build_model(params, digits.input_shape, digits.n_classes)
    result = fit(model, digits, params, max_epochs=3, monitor="val_loss", direction="minimize")
    assert not [name for epoch in result.history for name in epoch if "crossentropy" in name]
    proba = np.clip(model.predict(digits.val.x, verbose=0), 1e-7, 1.0)
    plain = float(-np.mean(np.log(proba[np.arange(len(proba)), digits.val.y])))
    assert result.best["val_loss"] == pytest.approx(plain, rel=1e-3)
    keras_loss = model.evaluate(digits.val.x, digits.val.y, verbose=0, return_dict=True)["loss"]
    assert keras_loss > plain + 0.05  # what the pruner compared before


@pytest.mark.parametrize("queued", [False, True], ids=["sampled", "queued"])
def test_a_queued_configuration_runs_to_its_end_where_a_sampled_one_is_pruned(digits: SearchData, queued: bool) -> None:
    """Against three trials no model can beat (val_loss 0 at every epoch), a sampled trial is pruned at the
    first rung; a queued one (a space's reference, a warm start) is reported at the rung and trains on."""
    study = optuna.create_study(pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    for _ in range(3):
        unbeatable = study.ask()
        for epoch in (1, 2, 3):
            unbeatable.report(0.0, epoch)
            unbeatable.should_prune()
        study.tell(unbeatable, 0.0)
    if queued:
        study.enqueue_trial({}, user_attrs={SOURCE_ATTR: "reference of space test"})
    trial = study.ask()
    model = build_model(PARAMS, digits.input_shape, digits.n_classes)
    result = fit(model, digits, PARAMS, max_epochs=3, monitor="val_loss", direction="minimize", trial=trial)
    if not queued:
        assert result.outcome is FitOutcome.PRUNED and result.reason.startswith("pruned at epoch 1")
        return
    assert result.outcome is FitOutcome.COMPLETED and result.epochs == 3
    assert trial.should_prune()  # what the pruner said, and the fit did not act on


def test_a_metric_training_does_not_produce_stops_at_once(digits: SearchData) -> None:
    model = build_model(PARAMS, digits.input_shape, digits.n_classes)
    with pytest.raises(SetupError, match="training does not produce 'val_f1'"):
        fit(model, digits, PARAMS, max_epochs=3, monitor="val_f1", direction="maximize")


def test_timed_epochs_train_what_fits_and_stretch_the_schedule_to_it(digits: SearchData) -> None:
    """A 3-second budget of up to 10,000 epochs: training stops near 3 s, the cosine horizon is the epochs trained."""
    params = PARAMS | {"lr_schedule": "cosine"}
    model = build_model(params, digits.input_shape, digits.n_classes)
    schedule = EpochSchedule(0.01, 10_000, cosine=True)
    timed = TimedEpochs(3.0, schedule)
    model.fit(digits.train.x[:64], digits.train.y[:64], batch_size=64, epochs=1, verbose=0)  # traced beforehand
    started = time.monotonic()
    history = model.fit(
        digits.train.x, digits.train.y, batch_size=64, epochs=10_000, callbacks=[schedule, timed], verbose=0
    )
    seconds, trained = time.monotonic() - started, len(history.epoch)
    assert 2 <= trained < 10_000 and trained == timed.planned == schedule.epochs
    assert seconds < 3.0 + 2 * max(timed.durations)  # the plan errs by an epoch or so, never by the budget
    last_rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))  # set as the last epoch began
    # The decay followed the plan: unstretched (a horizon of 10,000 epochs) the last rate would still be
    # 0.01 to five places; stretched, it is well down the cosine even when slow last epochs cut the plan short.
    assert last_rate < 0.9 * 0.01


def test_timed_epochs_never_pass_the_fits_epochs(digits: SearchData) -> None:
    model = build_model(PARAMS, digits.input_shape, digits.n_classes)
    history = model.fit(
        digits.train.x, digits.train.y, batch_size=64, epochs=3, callbacks=[TimedEpochs(600.0)], verbose=0
    )
    assert len(history.epoch) == 3
