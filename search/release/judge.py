"""Judging a contender: evaluated once on the test split, gated, and recorded.

Everything it measures is logged as a promotion run in the study's experiment, and the model is registered
in the MLflow Model Registry: alias `candidate` on every promoted version, `champion` only when every gate
passes.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.data
import numpy as np

from search.data import ImageSet
from search.data.batches import predict_proba
from search.record.tracking import mlflow_dataset, promotion_run_name
from search.release.contender import Contender
from search.release.evaluate import (
    Evaluation,
    confusion_figure,
    evaluate,
    misclassified_figure,
    precision_recall_figure,
)
from search.release.gates import Gate, baseline_gate, champion_gate
from search.release.registered import CANDIDATE, CHAMPION, save_classifier
from search.release.source import Source
from search.release.stage import Stage

PROMOTION_KIND = "promotion"
VERSION_TAGS = ("atelier.study", "atelier.trial_number")  # promotion run tags the model version carries too

Say = Callable[[str], None]


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


def judge(stage: Stage, contender: Contender, started: float, say: Say) -> Promotion:
    """Evaluate the contender once on the test split, gate it, and register it; `started` began the promotion."""
    objective = stage.source.objective
    proba = predict_proba(contender.model, stage.test)
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
    count = _test_evaluations(stage)
    tags = _promotion_tags(stage, contender, gates, count)
    metrics = _promotion_metrics(evaluation, gates, count, time.perf_counter() - started)
    run_id, version = _log_promotion_run(stage, contender, proba, evaluation, tags, metrics)
    _label_version(stage, contender, evaluation, gates, tags, run_id, version)
    return Promotion(stage.source, contender.refit, evaluation, gates, stage.model_name, version, run_id, count)


def _test_evaluations(stage: Stage) -> int:
    """How many times the study's test split will have been evaluated, this promotion included."""
    earlier = stage.client.search_runs(
        [stage.experiment_id], filter_string=f"tags.`atelier.kind` = '{PROMOTION_KIND}'", max_results=10_000
    )
    return len(earlier) + 1


def _promotion_tags(stage: Stage, contender: Contender, gates: tuple[Gate, ...], count: int) -> dict[str, str]:
    """The promotion run's tags: where the model came from, how often the test split was read, each gate."""
    tags = {
        "atelier.kind": PROMOTION_KIND,
        "atelier.study": stage.source.study_name,
        "atelier.trial_number": str(contender.trial_number),
        "atelier.source_run_id": contender.source_run_id,
        "atelier.test_evaluations": str(count),
        "atelier.refit": str(contender.refit).lower(),
        "atelier.gates": "passed" if all(g.passed for g in gates) else "failed",
    }
    tags |= {f"atelier.gate.{g.name}": ("passed: " if g.passed else "failed: ") + g.reason for g in gates}
    tags |= contender.tags
    return tags | {key: value for g in gates for key, value in g.tags.items()}


def _promotion_metrics(
    evaluation: Evaluation, gates: tuple[Gate, ...], count: int, promotion_seconds: float
) -> dict[str, float]:
    """The promotion run's metrics: the test figures, each gate's verdict and figures, the count and the time."""
    metrics = {f"test_{k}": v for k, v in evaluation.metrics.items()}
    metrics |= {f"gate_{g.name}_passed": float(g.passed) for g in gates}
    metrics |= {k: v for g in gates for k, v in g.figures.items()}
    return metrics | {"test_evaluations": float(count), "promotion_seconds": promotion_seconds}


def _log_promotion_run(
    stage: Stage,
    contender: Contender,
    proba: np.ndarray,
    evaluation: Evaluation,
    tags: dict[str, str],
    metrics: dict[str, float],
) -> tuple[str, str]:
    """Log the promotion run (metrics, plots, data, model) and register its model; its run id and version."""
    source, model_name, test = stage.source, stage.model_name, stage.test
    run_name = promotion_run_name(contender.trial_number)
    with mlflow.start_run(experiment_id=stage.experiment_id, run_name=run_name, tags=tags) as run:
        mlflow.log_params(contender.params | {"model_name": model_name})
        mlflow.log_metrics(metrics)
        _log_data(source.objective.name, stage.training, test)
        mlflow.log_text(evaluation.confusion.to_csv(), "confusion_matrix.csv")
        mlflow.log_text(evaluation.report.to_csv(), "classification_report.csv")
        title = f"{model_name}: study {source.study_name} {contender.description}"
        class_names = tuple(evaluation.confusion.index)
        mlflow.log_figure(confusion_figure(evaluation.confusion, title), "confusion_matrix.png")
        mlflow.log_figure(precision_recall_figure(test.y, proba, class_names, title), "precision_recall.png")
        mlflow.log_figure(misclassified_figure(test, test.y, proba, class_names, title), "misclassified.png")
        with tempfile.TemporaryDirectory() as folder:  # saved, then logged: log_model fails with an input example
            # (mlflow#16183)
            path = Path(folder) / "model"
            example = test.take(np.arange(min(5, len(test)))).arrays()
            resize = str(stage.data.details.get("resize", "pad"))
            save_classifier(contender.model, path, example, proba[:5], class_names, resize)
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
    return run.info.run_id, version


def _label_version(
    stage: Stage,
    contender: Contender,
    evaluation: Evaluation,
    gates: tuple[Gate, ...],
    tags: dict[str, str],
    run_id: str,
    version: str,
) -> None:
    """The registered version's tags, aliases (`candidate`; `champion` when every gate passed) and description."""
    client, model_name = stage.client, stage.model_name
    for key, value in tags.items():
        if key.startswith("atelier.gate") or key in VERSION_TAGS:
            client.set_model_version_tag(model_name, version, key, value)
    client.set_model_version_tag(model_name, version, "atelier.promotion_run_id", run_id)
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    passed = all(g.passed for g in gates)
    if passed:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    failed = [f"{g.name} gate failed: {g.reason}" for g in gates if not g.passed]
    summary = (
        f"Study {stage.source.study_name} {contender.description}, test accuracy {evaluation.metrics['accuracy']:.4f}; "
    )
    verdict = "every gate passed: champion." if passed else "not champion: " + "; ".join(failed) + "."
    client.update_model_version(model_name, version, description=summary + verdict)


def _log_data(name: str, training: ImageSet, test: ImageSet) -> None:
    """The images the model was trained on and tested on, as MLflow datasets with digests."""
    for context, images in (("train", training), ("test", test)):
        dataset = mlflow_dataset(images, f"{name}-{context}")
        mlflow.log_input(dataset, context=context)
