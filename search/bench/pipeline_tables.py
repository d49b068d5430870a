"""The tables of `atelier bench --pipelines`: one row per run, and per pipeline the median test accuracy with its
bootstrap interval. Runs in, pandas tables out; no MLflow, no Keras."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from search.bench.report import median_interval

if TYPE_CHECKING:
    from search.bench.pipelines import PipelineRun


def runs_table(results: list[PipelineRun]) -> pd.DataFrame:
    """One row per run: pipeline, seed, test accuracy, wall seconds, test-split evaluations, what it trained."""
    return pd.DataFrame(
        [
            {
                "pipeline": r.pipeline,
                "seed": r.seed,
                "test_acc": round(r.test_accuracy, 4),
                "wall_s": round(r.wall_seconds, 1),
                "test_evaluations": r.test_evaluations,
                "trained": r.trained,
            }
            for r in results
        ],
        columns=["pipeline", "seed", "test_acc", "wall_s", "test_evaluations", "trained"],
    )


def summary_table(results: list[PipelineRun]) -> pd.DataFrame:
    """Per pipeline: runs, the median test accuracy and its bootstrap 95% interval, the median wall seconds."""
    rows = []
    for pipeline in dict.fromkeys(r.pipeline for r in results):
        mine = [r for r in results if r.pipeline == pipeline]
        accuracies = [r.test_accuracy for r in mine]
        low, high = median_interval(accuracies)
        rows.append(
            {
                "pipeline": pipeline,
                "runs": len(mine),
                "test_acc": round(float(np.median(accuracies)), 4),
                "test_acc_lo": round(low, 4) if not math.isnan(low) else low,
                "test_acc_hi": round(high, 4) if not math.isnan(high) else high,
                "wall_s": round(float(np.median([r.wall_seconds for r in mine])), 1),
            }
        )
    return pd.DataFrame(rows, columns=["pipeline", "runs", "test_acc", "test_acc_lo", "test_acc_hi", "wall_s"])
