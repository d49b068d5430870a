"""Test-set metrics and plots of a classifier's predicted probabilities: arrays in, numbers and figures out.

Knows nothing of Keras, Optuna or MLflow; the promotion stage logs what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    average_precision_score,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
)

ECE_BINS = 15
GALLERY_SIZE = 36


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on one labelled set."""

    metrics: dict[str, float]
    report: pd.DataFrame
    confusion: pd.DataFrame
    predicted: np.ndarray


def evaluate(y_true: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...]) -> Evaluation:
    """Accuracy, log loss, macro and weighted precision/recall/F1, ECE, per-class report and confusion matrix."""
    labels = list(range(len(class_names)))
    predicted = proba.argmax(axis=1)
    metrics = {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "log_loss": float(log_loss(y_true, proba, labels=labels)),
        "ece": expected_calibration_error(y_true, proba),
    }
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, predicted, labels=labels, average=average, zero_division=0
        )
        metrics |= {
            f"precision_{average}": float(precision),
            f"recall_{average}": float(recall),
            f"f1_{average}": float(f1),
        }
    report = pd.DataFrame(
        classification_report(
            y_true, predicted, labels=labels, target_names=list(class_names), output_dict=True, zero_division=0
        )
    ).T
    report.index.name = "class"
    confusion = pd.DataFrame(
        confusion_matrix(y_true, predicted, labels=labels),
        index=pd.Index(class_names, name="true"),
        columns=pd.Index(class_names, name="predicted"),
    )
    return Evaluation(metrics, report, confusion, predicted)


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the bins' sizes."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def confusion_figure(confusion: pd.DataFrame, title: str) -> Figure:
    """The confusion matrix as a heat map, each cell showing its count and its share of the true class's row."""
    counts = confusion.to_numpy()
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    size = max(5.0, 0.75 * len(counts) + 2)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axes.text(
            column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center", fontsize=7, color=colour
        )
    ticks = range(len(counts))
    axes.set_xticks(ticks, confusion.columns, rotation=45, ha="right")
    axes.set_yticks(ticks, confusion.index)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def precision_recall_figure(y_true: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...], title: str) -> Figure:
    """One-against-rest precision-recall curve of every class, its average precision in the legend."""
    figure = Figure(figsize=(8, 6))
    axes = figure.subplots()
    for label, name in enumerate(class_names):
        positive = y_true == label
        if not positive.any():
            continue
        precision, recall, _ = precision_recall_curve(positive, proba[:, label])
        average = average_precision_score(positive, proba[:, label])
        axes.plot(recall, precision, label=f"{name} (AP {average:.3f})", linewidth=1.2)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=7)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def misclassified_figure(
    x: np.ndarray,
    y_true: np.ndarray,
    proba: np.ndarray,
    class_names: tuple[str, ...],
    title: str,
    size: int = GALLERY_SIZE,
) -> Figure:
    """A grid of the most confidently misclassified images, each with its true and predicted label."""
    predicted = proba.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    shown = wrong[np.argsort(-proba[wrong, predicted[wrong]], kind="stable")][:size]
    columns = 6
    rows = max(1, -(-len(shown) // columns))
    figure = Figure(figsize=(2 * columns, 2.2 * rows + 0.6))
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, index in zip(grid, shown, strict=False):
        image = x[index]
        axes.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        guess = predicted[index]
        axes.set_title(
            f"true: {class_names[y_true[index]]}\npredicted: {class_names[guess]} {proba[index, guess]:.0%}", fontsize=7
        )
    figure.suptitle(
        f"{title}: {len(shown)} most confident of {len(wrong)} errors" if len(wrong) else f"{title}: no errors"
    )
    figure.tight_layout()
    return figure
