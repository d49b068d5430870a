"""What a promotion reads before it evaluates: the study's MLflow experiment, the registered champion, and the
images. The only reader of an objective's test split; every mismatch is a SetupError before anything is written."""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split

import os
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from search.config.objectives import Objective
from search.data import ImageSet, SearchData, load_search_data, reader
from search.errors import SetupError
from search.record.store import Store
from search.release.registered import load_champion
from search.release.source import Source
from search.secrets import redact

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars (champion, weights)


@dataclass(frozen=True)
class Stage:
    """Everything a promotion reads before it evaluates: the records, the champion, and the images."""

    source: Source
    client: MlflowClient
    experiment_id: str
    model_name: str
    champion: keras.Model | None
    data: SearchData
    training: ImageSet  # what the contender trained on, for the baseline and the record
    test: ImageSet


def open_stage(
    store: Store,
    source: Source,
    model_name: str | None,
    data_dir: Path | None,
    *,
    every_image: bool,
    with_validation: bool,
) -> Stage:
    """The records, the champion and the images of a promotion: the train split whole (`every_image`) or as the
    search subsampled it, with the validation images added to it or not, and the test split."""
    model_name = model_name or source.objective.name
    client = MlflowClient(store.tracking)
    experiment = client.get_experiment_by_name(source.study_name)
    if experiment is None:
        raise SetupError(
            f"study '{source.study_name}' has no MLflow experiment in {redact(store.tracking)}; "
            "pass the --tracking-uri the search used"
        )
    mlflow.set_tracking_uri(store.tracking)
    champion = load_champion(client, model_name)
    data_dir = data_dir or source.data_dir
    data, training, test = promotion_images(source.objective, data_dir, store.image_cache, every_image, with_validation)
    if champion is not None and champion.input_shape[1:] != data.input_shape:
        raise SetupError(
            f"the champion of '{model_name}' takes {champion.input_shape[1:]} images, this objective "
            f"{data.input_shape}; pass --model-name to register under another name"
        )
    return Stage(source, client, experiment.experiment_id, model_name, champion, data, training, test)


def promotion_images(
    objective: Objective, data_dir: Path | None, cache_root: Path, every_image: bool, with_validation: bool
) -> tuple[SearchData, ImageSet, ImageSet]:
    """The search's data (its train split whole when `every_image`), the training images, and the test split."""
    whole = replace(objective, data=replace(objective.data, subsample=1.0))
    data = load_search_data(whole if every_image else objective, data_dir, cache_root)
    training = data.train.joined(data.val) if with_validation else data.train
    test = reader(objective.data, data_dir, cache_root)[0]("test")
    if tuple(test.shape) != data.input_shape:
        raise SetupError(
            f"test images are {tuple(test.shape)} but training images {data.input_shape}; "
            "the objective's test part does not match its train part"
        )
    return data, training, test
