"""Ensembles: forward selection on validation predictions, the mirror as a built-in layer, one saved Keras model."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pytest
from sklearn.metrics import log_loss

from search.config.objectives import load_objective
from search.data import SearchData, load_search_data
from search.models.build import build_model
from search.pipelines.ensemble import (
    Candidate,
    candidate_predictions,
    ensemble_model,
    ensemble_proba,
    mirror_images,
    mirror_layer,
    select,
)
from search.release.registered import save_classifier

PARAMS = {"dense_layers": 1, "dense_units_0": 32, "learning_rate": 0.01, "batch_size": 64}


@pytest.fixture(scope="module")
def digits() -> SearchData:
    return load_search_data(load_objective("digits"))


@pytest.fixture(scope="module")
def members(digits: SearchData) -> list:
    """Two different small networks trained briefly on the digits' train split."""
    trained = []
    for units, epochs in ((32, 4), (64, 6)):
        params = PARAMS | {"dense_units_0": units}
        model = build_model(params, digits.input_shape, digits.n_classes)
        model.fit(digits.train.x, digits.train.y, batch_size=64, epochs=epochs, verbose=0)
        trained.append(model)
    return trained


def one_hot_noise(y: np.ndarray, right: float, seed: int) -> np.ndarray:
    """Probabilities that put `right` on the true class of each image and spread the rest at random."""
    rest = np.random.default_rng(seed).dirichlet(np.ones(10), size=len(y)) * (1 - right)
    rest[np.arange(len(y)), y] += right
    return rest


def test_selection_draws_the_members_that_help_on_validation() -> None:
    """A sure member and a useless one: the useless one never joins; two complementary ones share the weight."""
    y = np.random.default_rng(0).integers(0, 10, 600)
    sure, useless = one_hot_noise(y, 0.9, 1), np.full((600, 10), 0.1)
    plain = np.stack([sure, useless])
    selection = select(candidate_predictions(plain, plain), y)
    assert {c.member for c in selection.weights} == {0}
    left, right = one_hot_noise(y, 0.6, 2), one_hot_noise(y, 0.6, 3)
    left[:300], right[300:] = 0.1, 0.1  # each knows half of the images
    selection = select(candidate_predictions(np.stack([left, right]), np.stack([left, right])), y)
    counts = {c.member: n for c, n in selection.weights.items()}
    assert counts.keys() == {0, 1} and abs(counts[0] - counts[1]) <= 1


def test_selection_is_never_below_the_best_member_on_validation_accuracy(digits: SearchData, members: list) -> None:
    plain = np.stack([m.predict(digits.val.x, verbose=0) for m in members])
    mirrored = np.stack([m.predict(mirror_images(digits.val.x), verbose=0) for m in members])
    candidates = candidate_predictions(plain, mirrored)
    selection = select(candidates, digits.val.y)
    proba = ensemble_proba(selection, candidates)
    assert selection.val_accuracy == pytest.approx(np.mean(proba.argmax(axis=1) == digits.val.y))
    assert selection.val_log_loss == pytest.approx(log_loss(digits.val.y, proba, labels=list(range(10))))
    assert selection.val_accuracy >= max(np.mean(p.argmax(axis=1) == digits.val.y) for p in candidates.values())


def test_selection_prefers_the_more_accurate_member_however_confident_the_other() -> None:
    """A label-smoothed member (right on 95% of images, at 0.5) and a sharp one (right on 90%, at 0.99): log loss
    alone would pick the sharp one, which is less accurate; the selection starts from the accurate one."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 10, 2000)

    def member(right_share: float, confidence: float) -> np.ndarray:
        guess = np.where(rng.random(len(y)) < right_share, y, (y + rng.integers(1, 10, len(y))) % 10)
        proba = np.full((len(y), 10), (1 - confidence) / 9)
        proba[np.arange(len(y)), guess] = confidence
        return proba

    smoothed, sharp = member(0.95, 0.5), member(0.90, 0.99)
    assert log_loss(y, sharp) < log_loss(y, smoothed)  # the bias the selection avoids
    selection = select(candidate_predictions(np.stack([smoothed, sharp]), np.stack([smoothed, sharp])), y)
    heaviest = max(selection.weights, key=lambda candidate: selection.weights[candidate])
    assert heaviest.member == 0
    assert selection.val_accuracy >= np.mean(smoothed.argmax(axis=1) == y)


def test_the_mirror_layer_flips_images_exactly(digits: SearchData) -> None:
    x = digits.val.x[:16]
    flipped = np.asarray(mirror_layer(digits.input_shape)(x))
    assert np.array_equal(flipped, mirror_images(x)) and not np.array_equal(flipped, x)


def test_the_ensemble_is_one_keras_model_that_saves_serves_and_predicts_its_selection(
    digits: SearchData, members: list, tmp_path: Path
) -> None:
    """Weights 2:1 with the mirror on member 1: the model's output is the selection's average, before and after
    being saved as a registered model and loaded back through MLflow's pyfunc interface."""
    selection_weights = {Candidate(0, False): 2, Candidate(1, True): 1}
    plain = np.stack([m.predict(digits.val.x, verbose=0) for m in members])
    mirrored = np.stack([m.predict(mirror_images(digits.val.x), verbose=0) for m in members])
    candidates = candidate_predictions(plain, mirrored)
    from search.pipelines.ensemble import Selection

    selection = Selection(selection_weights, 0.0, 0.0)
    expected = ensemble_proba(selection, candidates)
    model = ensemble_model(members, ["trial_3", "trial_7"], selection, digits.input_shape)
    assert np.allclose(model.predict(digits.val.x, verbose=0), expected, atol=1e-6)
    save_classifier(model, tmp_path / "model", digits.val.x[:5], expected[:5], digits.class_names)
    served = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert np.allclose(np.asarray(served.predict(digits.val.x)), expected, atol=1e-6)
