"""Everything MLflow: one experiment per study, one run per trial, its metrics, data and weights."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlparse

import mlflow.data
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from search.config.schema import Scalar
from search.data import Images, ImageSet, SearchData
from search.errors import SetupError
from search.record.sqlite_schema import prepare_new_store
from search.secrets import redact

if TYPE_CHECKING:  # `atelier ui` finds its runs page through this module: it must not start TensorFlow
    import keras

TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "http", "https", "databricks")
# MLflow has no 'pruned' status: its table shows pruned trials as Killed (by the pruner), failed ones as Failed.
RUN_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
PARENT_TAG = "mlflow.parentRunId"  # MLflow's nesting: the UI groups a study's trials under its study run
PAUSED_TAG = "atelier.paused_at"  # the epoch a paused trial waits at
STUDY_KIND, STUDY_RUN = "study", "study-report"
MODEL_FILE = "model.keras"

logging.getLogger("mlflow").setLevel(logging.WARNING)
# MLflow prints 'View run ... at: URL' when a run ends: atelier prints its own addresses, free of credentials.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def run_name(number: int) -> str:
    """The MLflow run name of Optuna trial `number`."""
    return f"trial-{number:04d}"


def promotion_run_name(number: int) -> str:
    """The MLflow run name of the promotion of Optuna trial `number`."""
    return f"promotion-{run_name(number)}"


def check_tracking_uri(uri: str) -> str:
    """`uri` if MLflow can track to it; a SetupError naming the accepted forms otherwise."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES or (scheme in ("http", "https") and not parsed.hostname):
        raise SetupError(
            f"tracking URI '{redact(uri)}' is not one MLflow can use; give sqlite:///path/mlflow.db, "
            "postgresql://host/db or http://host:5000"
        )
    return uri


def sqlite_database(uri: str) -> Path | None:
    """The database file of a local `sqlite:///` tracking URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def runs_page(tracking_uri: str, server_url: str) -> str:
    """The address of the newest study's table of runs in the MLflow UI, its trials sorted best first.

    MLflow's UI takes the order (and a filter) from the address, but not the columns shown.
    """
    experiments = MlflowClient(tracking_uri).search_experiments(
        filter_string="tags.`atelier.study` != ''", order_by=["last_update_time DESC"], max_results=1
    )
    if not experiments:
        return server_url
    page = f"{server_url}/#/experiments/{experiments[0].experiment_id}/runs"
    metric, direction = experiments[0].tags.get("atelier.metric"), experiments[0].tags.get("atelier.direction")
    if metric is None:
        return page
    order = quote(f"metrics.`best_{metric}`")
    return f"{page}?orderByKey={order}&orderByAsc={str(direction == 'minimize').lower()}"


def dataset_inputs(data: SearchData) -> list[DatasetInput]:
    """The search's train and validation splits as MLflow dataset inputs (digest, sizes), computed once."""
    inputs = []
    for context, images in (("train", data.train), ("validation", data.val)):
        dataset = mlflow_dataset(images, f"{data.name}-{context}", data.source)
        inputs.append(DatasetInput(Dataset(**dataset.to_dict()), tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def mlflow_dataset(images: ImageSet, name: str, source: str | None = None) -> mlflow.data.dataset.Dataset:
    """Images in memory as MLflow's NumPy dataset; streamed ones by digest and schema alone (nothing read)."""
    with warnings.catch_warnings():  # a plain folder name is ambiguous to MLflow's source registry
        warnings.simplefilter("ignore", UserWarning)
        return _dataset(images, name, source)


def _dataset(images: ImageSet, name: str, source: str | None) -> mlflow.data.dataset.Dataset:
    if isinstance(images, Images):
        return mlflow.data.from_numpy(images.x, targets=images.y, name=name, source=source)
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.schema import Schema, TensorSpec

    digest = hashlib.sha256(images.fingerprint()).hexdigest()[:8]
    source = source or "images"
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, *images.shape), "images")])
    return MetaDataset(resolve_dataset_source(source), name=name, digest=digest, schema=schema)


class Tracker:
    """Records a study's trials in MLflow through one client."""

    def __init__(self, tracking_uri: str) -> None:
        self.uri = check_tracking_uri(tracking_uri)
        database = sqlite_database(tracking_uri)
        if database is not None:
            prepare_new_store(database)
        self.client = MlflowClient(tracking_uri)

    def experiment(self, study_name: str, tags: Mapping[str, str]) -> str:
        """The id of the study's experiment, created on first use."""
        found = self.client.get_experiment_by_name(study_name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(
                study_name, artifact_location=self._artifact_location(study_name), tags=dict(tags)
            )
        except MlflowException:
            found = self.client.get_experiment_by_name(study_name)  # another worker created it first
            if found is None:
                raise
            return found.experiment_id

    def study_run(self, experiment_id: str, study_name: str) -> str:
        """The id of the study's run (its summary and report, and the parent of its trials), made on first use.

        Two machines starting at once may both make one: the oldest is kept and the other deleted.
        """
        mine = None
        runs = self._study_runs(experiment_id)
        if not runs:
            tags = {"atelier.kind": STUDY_KIND, "atelier.study": study_name}
            mine = self.client.create_run(experiment_id, run_name=STUDY_RUN, tags=tags).info.run_id
            runs = self._study_runs(experiment_id)
        oldest = runs[0].info.run_id
        if mine is not None and mine != oldest:
            self.client.delete_run(mine)
        return oldest

    def _study_runs(self, experiment_id: str) -> list:
        return self.client.search_runs(
            [experiment_id],
            f"tags.`atelier.kind` = '{STUDY_KIND}'",
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
        )

    def start_trial(
        self,
        experiment_id: str,
        study_name: str,
        number: int,
        params: Mapping[str, Scalar],
        inputs: list[DatasetInput],
        parent_run_id: str,
    ) -> str:
        """Open the trial's run, under its study's run, with its parameters and data; return its id."""
        run = self.client.create_run(
            experiment_id,
            run_name=run_name(number),
            tags={
                "atelier.kind": "trial",
                "atelier.study": study_name,
                "atelier.trial_number": str(number),
                "atelier.state": TrialState.RUNNING.name,
                PARENT_TAG: parent_run_id,
            },
        )
        run_id = run.info.run_id
        self.log_params(run_id, params)
        self.log_inputs(run_id, inputs)
        return run_id

    def log_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        """The run's datasets; retried once, as another process may register the same ones at this moment."""
        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException:
            self.client.log_inputs(run_id, datasets=inputs)

    def log_params(self, run_id: str, params: Mapping[str, Scalar]) -> None:
        """Parameters of the run (a hypermodel's become known as it builds, after the run started)."""
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_epoch(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics, at step = epoch number (1-based)."""
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_model_file(self, run_id: str, model: keras.Model) -> None:
        """The model as a plain `.keras` artifact: far cheaper than a full MLflow model."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL_FILE
            model.save(path)
            self.client.log_artifact(run_id, str(path))

    def pause_trial(self, run_id: str, epoch: int) -> None:
        """Mark the run of a trial paused at a rung; it stays open, and its epochs continue when it resumes."""
        self.client.log_batch(run_id, tags=[RunTag("atelier.state", "PAUSED"), RunTag(PAUSED_TAG, str(epoch))])

    def resume_trial(self, run_id: str) -> None:
        """Mark the run of a paused trial running again."""
        self.client.set_tag(run_id, "atelier.state", TrialState.RUNNING.name)
        self.client.delete_tag(run_id, PAUSED_TAG)

    def finish_trial(self, run_id: str, state: TrialState, summary: Mapping[str, float], reason: str = "") -> None:
        """Close the run with its summary metrics and its state (and the reason, if it did not complete)."""
        now = int(time.time() * 1000)
        tags = [RunTag("atelier.state", state.name)] + ([RunTag("atelier.reason", reason[:5000])] if reason else [])
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()], tags=tags)
        self.client.set_terminated(run_id, RUN_STATUS.get(state, "KILLED"))

    def _artifact_location(self, study_name: str) -> str | None:
        """Artifacts beside a local SQLite store (`<store>/artifacts/<study>`); a server chooses its own."""
        database = sqlite_database(self.uri)
        if database is None:
            return None
        return (database.resolve().parent / "artifacts" / study_name).as_uri()
