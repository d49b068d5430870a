"""The training part of an objective's data split into train and validation, then the train split subsampled.

The splits pick indices, so they are the same whether the images are in memory or read from the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from search.config.objectives import Objective
from search.data.folder_reader import FolderReader
from search.data.images import ImageSet, SearchData
from search.data.sources import FASHION_CLASSES, check_labels, reader
from search.errors import SetupError

HOLDOUT = 10_000  # the bench's holdout by default: an accuracy's standard error near 0.003
HOLDOUT_SHARE = 0.2  # of the train split, when the subsample leaves out too few


def load_search_data(objective: Objective, data_dir: Path | None = None, cache_root: Path | None = None) -> SearchData:
    """The training part split into train and validation, stratified and seeded, then the train split subsampled.

    The validation split is a fraction of the whole training part whatever the subsample, so a search
    on a few training images is still judged on many: one accuracy on 1,500 images has a standard
    error near 0.009, on 6,000 near 0.004. The split is the same for every subsample of one seed.
    A folder's images are decoded into a cache under `cache_root` (the store's), in memory without one.
    """
    return _load(objective, data_dir, cache_root, holdout=0)[0]


def load_bench_data(
    objective: Objective, holdout: int | None = None, data_dir: Path | None = None
) -> tuple[SearchData, ImageSet]:
    """The search's data, and a holdout of `holdout` images of the training part that it neither trains nor
    validates on (stratified, seeded): taken from the images its subsample leaves out when they are enough, so the
    search trains on what `load_search_data` gives it, else split off its train split before the subsample.

    By default HOLDOUT images, or as many as the subsample leaves out when fewer, or a fifth of the train split
    (HOLDOUT_SHARE) when it leaves out fewer still.
    """
    return _load(objective, data_dir, None, holdout)


def _load(
    objective: Objective, data_dir: Path | None, cache_root: Path | None, holdout: int | None
) -> tuple[SearchData, ImageSet]:
    read, where = reader(objective.data, data_dir, cache_root)
    images = read("train")
    class_names = _class_names(objective, read, images)
    check_labels(images.y, len(class_names), where)
    config, seed = objective.data, objective.seed
    _check_classes_split(images, class_names, where, "add images of that class")
    val_count = max(len(class_names), round(config.validation_fraction * len(images)))
    try:
        train_at, val_at = train_test_split(
            np.arange(len(images)), test_size=val_count, stratify=images.y, random_state=seed
        )
    except ValueError as error:
        raise SetupError(
            f"{where}: cannot keep {val_count} of {len(images)} images for validation and train on "
            f"the rest, stratified by class ({error}); lower data.validation_fraction"
        ) from None
    count = len(train_at)
    if config.subsample != 1.0:
        count = min(count, int(config.subsample if config.subsample > 1 else round(config.subsample * len(train_at))))
    if holdout is None:
        holdout = min(HOLDOUT, max(len(train_at) - count, round(HOLDOUT_SHARE * len(train_at))))
    holdout_at = np.arange(0)
    if holdout and len(train_at) - count <= holdout:  # too few left out: the holdout comes out of the train split
        problem = f"{where}: cannot hold out {holdout} of the {len(train_at)} training images for the bench"
        holdout_at = _stratified_take(train_at, images.y[train_at], holdout, seed, problem)
        train_at = np.setdiff1d(train_at, holdout_at, assume_unique=True)
        count = min(count, len(train_at))
    if count < len(train_at):
        problem = f"{where}: data.subsample {config.subsample} cannot pick {count} of {len(train_at)} images"
        kept = _stratified_take(train_at, images.y[train_at], count, seed, problem)
        if holdout and not len(holdout_at):
            left = train_at[~np.isin(train_at, kept)]
            problem = f"{where}: cannot hold out {holdout} of the {len(left)} training images the subsample leaves"
            holdout_at = _stratified_take(left, images.y[left], holdout, seed, problem)
        train_at = kept
    details = read.details if isinstance(read, FolderReader) else {}
    data = SearchData(objective.name, where, images.take(train_at), images.take(val_at), class_names, details)
    return data, images.take(holdout_at)


def _class_names(objective: Objective, read: object, images: ImageSet) -> tuple[str, ...]:
    if isinstance(read, FolderReader):
        return read.class_names
    if objective.data.class_names:
        return objective.data.class_names
    if objective.data.source in ("idx", "csv"):
        return FASHION_CLASSES
    return tuple(str(label) for label in range(int(images.y.max()) + 1))


def _check_classes_split(images: ImageSet, class_names: tuple[str, ...], where: str, fix: str) -> None:
    """A stratified split needs two images of every class present."""
    counts = np.bincount(images.y)
    single = np.flatnonzero(counts == 1)
    if single.size:
        label = int(single[0])
        named = f" ({class_names[label]})" if label < len(class_names) and class_names[label] != str(label) else ""
        raise SetupError(
            f"{where}: class {label}{named} has a single image, and a stratified split into train "
            f"and validation needs at least 2 of each class; {fix}"
        )


def _stratified_take(indices: np.ndarray, labels: np.ndarray, count: int, seed: int, problem: str) -> np.ndarray:
    try:
        taken, _ = train_test_split(indices, train_size=count, stratify=labels, random_state=seed)
    except ValueError as error:
        raise SetupError(
            f"{problem} ({error}); choose a data.subsample that keeps at least 2 images of each "
            "class, or 1.0 for all of them"
        ) from None
    return taken
