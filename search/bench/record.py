"""The bench's MLflow run: one run per `atelier bench` in the experiment `bench`, holding its tables and figure."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pandas as pd
from mlflow.entities import Metric, Param

from search.bench.report import BenchReport
from search.record.tables import render
from search.record.tracking import Tracker

EXPERIMENT, KIND, PIPELINES_KIND = "bench", "bench", "bench-pipelines"
SUMMARY_METRICS = (
    "holdout_acc",
    "holdout_acc_lo",
    "holdout_acc_hi",
    "best_val_acc",
    "kt_hb_epoch_ratio",
    "epochs_to_kt_hb",
    "epochs_to_target",
    "epochs",
    "trials",
    "pruned",
    "outside_fit_s_per_trial",
)


def log_bench_run(
    tracker: Tracker, name: str, settings: Mapping[str, object], report: BenchReport, memory: pd.DataFrame | None
) -> tuple[str, str]:
    """Log the bench to a new run of the `bench` experiment; return (experiment id, run id).

    Metrics: `STRATEGY/FIGURE` from the summary (inf, a target never reached, is left out),
    `holdout_acc/STRATEGY` at step = epochs trained (the handed-over model's, median over seeds), and
    `LIBRARY/rss_mb_after_N`. The files are the run's artifacts, the summary its description.
    """
    client = tracker.client
    experiment_id = tracker.experiment(EXPERIMENT, {"atelier.kind": KIND})
    note = f"**atelier bench** {name}\n\n{render(report.summary, 'markdown')}"
    if report.verdict:
        note += f"\n{report.verdict}\n"
    run_id = client.create_run(
        experiment_id, run_name=name, tags={"atelier.kind": KIND, "mlflow.note.content": note}
    ).info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{row['strategy']}/{column}", float(row[column]), now, 0)
        for row in report.summary.to_dict("records")
        for column in SUMMARY_METRICS
        if column in row and pd.notna(row[column]) and abs(float(row[column])) != float("inf")
    ]
    medians = report.curves.groupby(["strategy", "epoch"], sort=False)["holdout_acc"].median()
    metrics += [
        Metric(f"holdout_acc/{strategy}", float(value), now, int(epoch))
        for (strategy, epoch), value in medians.items()
        if pd.notna(value)
    ]
    if memory is not None:
        metrics += [
            Metric(f"{row['library']}/{column}", float(value), now, 0)
            for row in memory.to_dict("records")
            for column, value in row.items()
            if column.startswith(("rss_mb", "outside")) and pd.notna(value)
        ]
    params = [Param(key, str(value)) for key, value in settings.items()]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000], params=params if start == 0 else [])
    for path in report.files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return experiment_id, run_id


def log_pipelines_run(
    tracker: Tracker, name: str, settings: Mapping[str, object], summary: pd.DataFrame, files: list
) -> tuple[str, str]:
    """Log `atelier bench --pipelines` to a new run of the `bench` experiment; return (experiment id, run id).

    Metrics: `PIPELINE/FIGURE` from the summary (median test accuracy, its interval, wall seconds); the files
    are the run's artifacts, the summary its description.
    """
    client = tracker.client
    experiment_id = tracker.experiment(EXPERIMENT, {"atelier.kind": KIND})
    note = f"**atelier bench --pipelines** {name}\n\n{render(summary, 'markdown')}"
    run_id = client.create_run(
        experiment_id, run_name=name, tags={"atelier.kind": PIPELINES_KIND, "mlflow.note.content": note}
    ).info.run_id
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{row['pipeline']}/{column}", float(value), now, 0)
        for row in summary.to_dict("records")
        for column, value in row.items()
        if column != "pipeline" and pd.notna(value)
    ]
    client.log_batch(run_id, metrics=metrics, params=[Param(key, str(value)) for key, value in settings.items()])
    for path in files:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return experiment_id, run_id
