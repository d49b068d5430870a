"""Ensembles of trained models: members chosen greedily on validation predictions, the mirror image as test-time
augmentation where validation says it helps, and the result built as one Keras model.

The selection is Caruana et al.'s forward selection with replacement: start empty, and each round
add the candidate that raises the ensemble's validation accuracy most, its validation log loss
breaking ties; a candidate drawn k times weighs k. Accuracy first, because log loss alone ranks a
label-smoothed member (underconfident by design) below a sharper but less accurate one: chosen on
log loss, `make best`'s ensemble scored 0.9372 on validation, below its best member's 0.9422.
Each member is a candidate twice, as it is and averaged with its prediction of the mirrored image,
so test-time augmentation is chosen per member by the same rule. Only validation predictions are
read: the test split stays unseen until promotion.

The ensemble is a Keras model of built-in layers only (the members nested, the mirror a fixed
permutation, the average Keras's `Average`), so it saves, registers, serves and predicts exactly
like a single model, and `served_model.py` needs nothing of atelier to load it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import log_loss

from search.backend import keras

ROUNDS = 25  # forward-selection rounds: enough for weights in steps of 4%


@dataclass(frozen=True)
class Candidate:
    """One member as it may join: its index among the members, and whether it averages in the mirror image."""

    member: int
    mirrored: bool

    def label(self, names: Sequence[str]) -> str:
        return names[self.member] + (" + mirror" if self.mirrored else "")


@dataclass(frozen=True)
class Selection:
    """The candidates the forward selection drew, with how often, and the ensemble's validation figures."""

    weights: dict[Candidate, int]
    val_log_loss: float
    val_accuracy: float

    def describe(self, names: Sequence[str]) -> str:
        total = sum(self.weights.values())
        return ", ".join(
            f"{candidate.label(names)} {count / total:.0%}"
            for candidate, count in sorted(self.weights.items(), key=lambda item: -item[1])
        )


def mirror_images(x: np.ndarray) -> np.ndarray:
    """Images flipped left to right (width is the axis after height)."""
    return x[:, :, ::-1, ...]


def candidate_predictions(plain: np.ndarray, mirrored: np.ndarray) -> dict[Candidate, np.ndarray]:
    """Every candidate's validation probabilities, from each member's (members x images x classes)
    predictions of the images and of their mirror images."""
    candidates = {}
    for member in range(len(plain)):
        candidates[Candidate(member, False)] = plain[member]
        candidates[Candidate(member, True)] = (plain[member] + mirrored[member]) / 2
    return candidates


def select(candidates: dict[Candidate, np.ndarray], y: np.ndarray, rounds: int = ROUNDS) -> Selection:
    """Forward selection with replacement on validation accuracy, then log loss; the best prefix of `rounds`
    draws is kept, so the ensemble is never below its best candidate on validation accuracy."""
    labels = list(range(next(iter(candidates.values())).shape[1]))

    def rank(proba: np.ndarray) -> tuple[float, float]:  # lower is better
        return -float(np.mean(proba.argmax(axis=1) == y)), float(log_loss(y, proba, labels=labels))

    total, drawn = None, []
    best: tuple[tuple[float, float], int] | None = None
    for round_ in range(1, rounds + 1):
        ranks = {
            candidate: rank((proba if total is None else total + proba) / round_)
            for candidate, proba in candidates.items()
        }
        chosen = min(ranks, key=lambda candidate: (ranks[candidate], candidate.member, candidate.mirrored))
        drawn.append(chosen)
        total = candidates[chosen] if total is None else total + candidates[chosen]
        if best is None or ranks[chosen] < best[0]:
            best = (ranks[chosen], round_)
    (accuracy, loss), size = best
    return Selection(dict(Counter(drawn[:size])), loss, -accuracy)


def ensemble_proba(selection: Selection, candidates: dict[Candidate, np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities from its candidates' probabilities."""
    size = sum(selection.weights.values())
    return sum(candidates[c] * n for c, n in selection.weights.items()) / size


def mirror_layer(input_shape: tuple[int, ...]) -> keras.Sequential:
    """Flip images left to right with built-in layers: width moved last, a fixed permutation matrix, moved back."""
    height, width, channels = input_shape
    flip = keras.layers.Dense(width, use_bias=False, trainable=False, name="flip_columns")
    layer = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            keras.layers.Permute((1, 3, 2)),
            flip,
            keras.layers.Permute((1, 3, 2)),
        ],
        name="mirror",
    )
    flip.set_weights([np.eye(width, dtype="float32")[::-1]])
    return layer


def ensemble_model(
    members: Sequence[keras.Model], names: Sequence[str], selection: Selection, input_shape: tuple[int, ...]
) -> keras.Model:
    """One Keras model that averages its members' probabilities with the selection's weights.

    A mirrored candidate of weight k adds its member's output for the image and for its mirror image
    k times each; a plain one adds the image's output 2k times, so that every weight holds exactly.
    """
    inputs = keras.Input(shape=input_shape, name="pixels")
    mirror = mirror_layer(input_shape) if any(c.mirrored for c in selection.weights) else None
    flipped = mirror(inputs) if mirror is not None else None
    used = sorted({candidate.member for candidate in selection.weights})
    wrapped = {i: keras.Model(members[i].inputs[0], members[i].outputs[0], name=names[i]) for i in used}
    plain = {i: wrapped[i](inputs) for i in used}
    outputs: list = []
    for candidate, count in sorted(selection.weights.items(), key=lambda item: (item[0].member, item[0].mirrored)):
        i = candidate.member
        outputs += [plain[i], wrapped[i](flipped)] * count if candidate.mirrored else [plain[i], plain[i]] * count
    averaged = keras.layers.Average(name="average")(outputs)
    model = keras.Model(inputs, averaged, name="atelier_ensemble")
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
