"""The report runs in MLflow: a study's report (rewritten after every search) and a dataset's (once per digest).

Both live beside the trial runs in the study's experiment, tagged `atelier.kind` so nobody takes
them for trials.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric, Param, RunTag

from search.data import SearchData
from search.errors import SetupError
from search.paths import check_output_folder
from search.record.store import Store, load_existing_study
from search.record.tracking import Tracker
from search.reports.data import summary, write_data_report
from search.reports.rungs import rung_summary
from search.reports.study import StudyReport, tally, write_study_report
from search.secrets import redact, without_credentials

DATA_KIND, DATA_RUN = "data", "data-report"
DATA_REPORT_TAG = "atelier.data_report_run"  # on an experiment: the run holding its data's report
LOCAL_UI = "http://127.0.0.1:5000"  # where `atelier ui` serves a local store by default


def run_path(experiment_id: str, run_id: str) -> str:
    """The address of a run's page inside the MLflow UI (relative to the UI's root)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def run_address(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The full address of a run's page: on the tracking server, or where `atelier ui` serves a local store."""
    root = (
        without_credentials(tracking_uri).rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    )
    return f"{root}/{run_path(experiment_id, run_id)}"


def publish_study_report(
    study: optuna.Study,
    tracker: Tracker,
    experiment_id: str,
    keep_in: Path | None = None,
    figures: Mapping[str, float] | None = None,
) -> tuple[str, StudyReport]:
    """Write the study's report and log it to the study's report run (made on first use); return the run's id.

    The files are written to `keep_in` when given, else to a temporary folder. `figures` are metrics of
    the search that just ran (the share of time the cores were busy), logged beside the study's.
    """
    client = tracker.client
    run_id = tracker.study_run(experiment_id, study.study_name)
    with tempfile.TemporaryDirectory() as scratch:
        folder = keep_in or Path(scratch)
        report = write_study_report(study, folder, lambda trial_run: run_path(experiment_id, trial_run))
        for path in report.files:
            client.log_artifact(run_id, str(path))
    now, step = int(time.time() * 1000), len(study.trials)
    metrics = [Metric(f"trials_{state}", count, now, step) for state, count in report.counts.items()]
    metrics += [Metric(f"importance_{name}", share, now, step) for name, share in report.importances.items()]
    metrics += [Metric(name, value, now, step) for name, value in (figures or {}).items()]
    data_run = client.get_experiment(experiment_id).tags.get(DATA_REPORT_TAG)
    data_link = run_path(client.get_run(data_run).info.experiment_id, data_run) if data_run else None
    tags = [RunTag("mlflow.note.content", _description(study, report, experiment_id, data_link))]
    if report.best is not None:
        metrics.append(Metric(f"best_{study.user_attrs.get('metric', 'value')}", report.best.value, now, step))
        tags += [
            RunTag("atelier.best_trial", str(report.best.number)),
            RunTag("atelier.best_run_id", report.best.user_attrs.get("mlflow_run_id", "")),
        ]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.set_terminated(run_id, "FINISHED")
    return run_id, report


@dataclass(frozen=True)
class PublishedReport:
    """A study's report as `atelier report` rewrote it: the study, the report, and its run's address."""

    study: optuna.Study
    report: StudyReport
    address: str


def report_study(store: Store, study_name: str | None, keep_in: Path | None = None) -> PublishedReport:
    """Rewrite the report of an existing study (default: the most recent) in its MLflow experiment."""
    if keep_in is not None:
        check_output_folder(keep_in)
    study = load_existing_study(store, study_name)
    store.check_tracking_exists()
    tracker = Tracker(store.tracking)
    experiment = tracker.client.get_experiment_by_name(study.study_name)
    if experiment is None:
        raise SetupError(
            f"study '{study.study_name}' has no MLflow experiment in {redact(store.tracking)}; pass "
            "the --tracking-uri its search used"
        )
    run_id, report = publish_study_report(study, tracker, experiment.experiment_id, keep_in)
    return PublishedReport(study, report, run_address(store.tracking, experiment.experiment_id, run_id))


def publish_data_report(
    data: SearchData, inputs: list[DatasetInput], tracker: Tracker, experiment_id: str
) -> tuple[str, bool]:
    """The run holding the report of this search's data: found by digest in any experiment, or logged here.

    Returns the run's id and whether it was made now.
    """
    client = tracker.client
    key = "-".join(dataset_input.dataset.digest for dataset_input in inputs)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = _find_run(client, experiments, f"tags.`atelier.data_digest` = '{key}'")
    if found:
        client.set_experiment_tag(experiment_id, DATA_REPORT_TAG, found)
        return found, False
    figures = summary(data)
    run_id = client.create_run(
        experiment_id,
        run_name=f"{DATA_RUN}-{data.name}",
        tags={
            "atelier.kind": DATA_KIND,
            "atelier.data_digest": key,
            "atelier.data_source": data.source,
            "mlflow.note.content": _data_description(data, figures),
        },
    ).info.run_id
    client.set_experiment_tag(experiment_id, DATA_REPORT_TAG, run_id)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in figures.items()])
    tracker.log_inputs(run_id, inputs)
    with tempfile.TemporaryDirectory() as folder:
        write_data_report(data, Path(folder))
        client.log_artifacts(run_id, folder)
    client.set_terminated(run_id, "FINISHED")
    return run_id, True


def _find_run(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> str | None:
    """The id of the oldest run that matches, if any."""
    runs = client.search_runs(experiment_ids, filter_string, order_by=["attributes.start_time ASC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _description(study: optuna.Study, report: StudyReport, experiment_id: str, data_link: str | None) -> str:
    """The run's description (Markdown, shown on its page in the MLflow UI): tally, best trial, how far the
    rankings at the rungs held, where to look."""
    lines = [f"**Study {study.study_name}**: {len(study.trials)} trials ({tally(report.counts)}).", ""]
    if report.best is not None:
        best = report.best
        link = run_path(experiment_id, best.user_attrs.get("mlflow_run_id", ""))
        lines += [
            f"Best: [trial {best.number}]({link}), {study.user_attrs.get('metric', 'value')} {best.value:.4f}.",
            "",
            "| parameter | value |",
            "|---|---|",
        ]
        lines += [f"| {name} | {value} |" for name, value in best.params.items()]
    lines += ["", f"Early judgements: {rung_summary(report.rungs)}."]
    lines += [
        "",
        "Artifacts: `report.html` (every plot, interactive), PNG figures, `trials.csv` (all trials), "
        "`rungs.csv` (how the ranking at each rung held to the last epoch), `best_trial.json`.",
    ]
    if data_link:
        lines += ["", f"The data these trials trained on: [data report]({data_link})."]
    return "\n".join(lines)


def _data_description(data: SearchData, figures: dict[str, object]) -> str:
    """The data report run's description (Markdown): what was read, and the summary figures."""
    lines = [
        f"**Data {data.name}** from `{data.source}`: the train and validation splits a search uses "
        "(the test split is read by `atelier promote` alone).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in figures.items()])
