"""The promotion gates: beat the notebooks' baseline, and be no worse than the champion on the same test images."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from scipy.stats import binomtest

from search.backend import keras
from search.data import ImageSet, SearchData
from search.data.batches import predict_proba
from search.models.build import build_model
from search.release.evaluate import Evaluation

BASELINE_PARAMS = {"conv_blocks": 0, "dense_layers": 1, "dense_units_0": 128}  # the notebooks' first model
BASELINE_MAX_EPOCHS = 10
MCNEMAR_ALPHA = 0.05

Say = Callable[[str], None]


@dataclass(frozen=True)
class Gate:
    """One promotion gate: whether it passed, why, and the figures it was judged on."""

    name: str
    passed: bool
    reason: str
    figures: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired right/wrong answers: the discordant counts and the two-sided p-value."""

    candidate_only: int  # images only the candidate got right
    champion_only: int
    p_value: float


def mcnemar(candidate_right: np.ndarray, champion_right: np.ndarray) -> McNemar:
    """The exact (binomial) McNemar test of two classifiers' right answers on the same images."""
    candidate_only = int(np.sum(candidate_right & ~champion_right))
    champion_only = int(np.sum(champion_right & ~candidate_right))
    discordant = candidate_only + champion_only
    p_value = float(binomtest(champion_only, discordant, 0.5).pvalue) if discordant else 1.0
    return McNemar(candidate_only, champion_only, p_value)


def baseline_gate(
    client: MlflowClient,
    best_epoch: int,
    seed: int,
    margin: float,
    data: SearchData,
    training: ImageSet,
    test: ImageSet,
    evaluation: Evaluation,
    say: Say,
) -> Gate:
    """Beat the notebooks' single 128-unit hidden layer, trained on the same images for as many epochs.

    The baseline is trained once per training set, test set, epoch count and seed: a later promotion
    on the same data reads its accuracy from the earlier promotion run instead of training it again.
    """
    epochs = min(best_epoch, BASELINE_MAX_EPOCHS)
    key = _baseline_key(training, test, epochs, seed)
    earlier = _earlier_baseline(client, key)
    if earlier is None:
        keras.utils.set_random_seed(seed)
        baseline = build_model(BASELINE_PARAMS, data.input_shape, data.n_classes)
        baseline.fit(training.batches(128, shuffle=True), shuffle=False, epochs=epochs, verbose=0)
        predicted = predict_proba(baseline, test).argmax(axis=1)
        accuracy, origin = float(np.mean(predicted == test.y)), f"trained for {epochs} epochs"
    else:
        accuracy = earlier.data.metrics["baseline_accuracy"]
        origin = f"read from promotion run {earlier.info.run_id}, same data"
    say(f"baseline: accuracy {accuracy:.4f} ({origin})")
    candidate = evaluation.metrics["accuracy"]
    passed = candidate >= accuracy + margin
    relation = "at least" if passed else "below"
    return Gate(
        "baseline",
        passed,
        f"test accuracy {candidate:.4f} is {relation} the baseline's {accuracy:.4f} + margin {margin} "
        f"(baseline {origin})",
        {"baseline_accuracy": accuracy, "baseline_epochs": float(epochs), "baseline_margin": margin},
        {"atelier.baseline_key": key},
    )


def champion_gate(champion: keras.Model | None, model_name: str, test: ImageSet, evaluation: Evaluation) -> Gate:
    """Not significantly worse than the champion on the same images: McNemar's exact test on paired predictions."""
    if champion is None:
        return Gate("champion", True, f"no champion of '{model_name}' yet", {})
    theirs = predict_proba(champion, test).argmax(axis=1) == test.y
    test_result = mcnemar(evaluation.predicted == test.y, theirs)
    champion_only, candidate_only = test_result.champion_only, test_result.candidate_only
    passed = not (test_result.p_value < MCNEMAR_ALPHA and champion_only > candidate_only)
    verdict = "significantly better" if not passed else "not significantly better"
    return Gate(
        "champion",
        passed,
        f"the champion is {verdict} (McNemar exact p = {test_result.p_value:.4g}; right only for the champion "
        f"{champion_only}, only for the candidate {candidate_only})",
        {
            "mcnemar_p_value": test_result.p_value,
            "mcnemar_champion_only": float(champion_only),
            "mcnemar_candidate_only": float(candidate_only),
            "champion_accuracy": float(np.mean(theirs)),
        },
    )


def _baseline_key(training: ImageSet, test: ImageSet, epochs: int, seed: int) -> str:
    """What a baseline's accuracy depends on, hashed: its training and test images, epochs and seed."""
    digest = hashlib.sha256(json.dumps([BASELINE_PARAMS, epochs, seed]).encode())
    for images in (training, test):
        digest.update(images.fingerprint())
    return digest.hexdigest()[:32]


def _earlier_baseline(client: MlflowClient, key: str) -> Run | None:
    """The newest promotion run, in any study, whose baseline had this key."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=50_000)]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`atelier.baseline_key` = '{key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
