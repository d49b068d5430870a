"""A folder of images, one subfolder per class (the layout of `keras.utils.image_dataset_from_directory`).

The class names are the subfolders' names, sorted. Files without an image extension and hidden files
(`.DS_Store`, `Thumbs.db`, anything whose name starts with a dot) are ignored and counted. Without a test
folder, a stratified share of the files (`data.test_fraction`) is held out as the test part, always with the
same seed: every run, resume and machine holds out the same files, and a search never opens them.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from search.config.data_table import DataConfig
from search.data.decode import ImageFormat, UnreadableImage, header, is_image_file
from search.errors import SetupError

IGNORED_NAMES = ("thumbs.db", "desktop.ini")
HOLDOUT_SEED = 0  # the held-out test files depend on the files alone, never on a search's seed
DEFAULT_LONGEST_SIDE = 128  # the default image size: the images' median size, its longer side at most this
FIX_LAYOUT = "put the images in one subfolder per class (train/cat/*.jpg, train/dog/*.jpg, ...)"


@dataclass(frozen=True)
class FolderListing:
    """The image files of a class-per-folder tree, their labels, and what was ignored."""

    root: Path
    class_names: tuple[str, ...]
    files: tuple[str, ...]  # relative to `root`, in class order, then sorted
    labels: np.ndarray
    ignored: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: np.ndarray) -> FolderListing:
        files = tuple(self.files[i] for i in indices)
        return FolderListing(self.root, self.class_names, files, self.labels[indices], self.ignored)


@dataclass(frozen=True)
class FolderParts:
    """A folder objective's train and test files, and the format its images are decoded to."""

    train: FolderListing
    test: FolderListing
    held_out: bool  # whether the test part was held out of the train folder (no test folder given)
    image_format: ImageFormat
    sizes: Counter  # (height, width) of the train part's images
    modes: Counter  # "grayscale" / "colour" of the train part's images


def list_folder(root: Path, key: str = "data.train", class_names: tuple[str, ...] | None = None) -> FolderListing:
    """Every image file under `root`'s class folders; a SetupError names a missing, empty or one-class tree."""
    if not root.exists():
        raise SetupError(f"{root}: no such folder; fix {key} (a folder with one subfolder of images per class)")
    if not root.is_dir():
        raise SetupError(f"{root}: is a file, not a folder; give {key} a folder with one subfolder per class")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not _hidden(entry.name))
    if not classes:
        raise SetupError(f"{root}: no class folders; {FIX_LAYOUT}")
    if len(classes) == 1:
        raise SetupError(f"{root}: a single class folder ({classes[0]}); a classifier needs two or more: {FIX_LAYOUT}")
    if class_names is not None and tuple(classes) != class_names:
        raise SetupError(
            f"{root}: class folders {', '.join(classes)} differ from the train folder's {', '.join(class_names)}; "
            "give the test folder the same class folders"
        )
    files, labels, ignored = [], [], [entry.name for entry in os.scandir(root) if entry.is_file()]
    for label, name in enumerate(classes):
        found = 0
        for folder, subfolders, names in os.walk(root / name):
            subfolders[:] = sorted(sub for sub in subfolders if not _hidden(sub))
            for file in sorted(names):
                relative = Path(folder, file).relative_to(root).as_posix()
                if _hidden(file) or not is_image_file(file):
                    ignored.append(relative)
                    continue
                files.append(relative)
                labels.append(label)
                found += 1
        if not found:
            raise SetupError(
                f"{root / name}: an empty class folder (no .jpg, .png, .bmp or .gif files); add images or remove it"
            )
    return FolderListing(root, tuple(classes), tuple(files), np.asarray(labels, dtype=np.int64), tuple(ignored))


def folder_parts(config: DataConfig) -> FolderParts:
    """The train and test files of a folder objective, and the image format, from the train part's headers."""
    assert config.train is not None  # data_table requires it
    listing = list_folder(config.train)
    if config.test is not None:
        train, test, held_out = listing, list_folder(config.test, "data.test", listing.class_names), False
    else:
        train, test = _hold_out(listing, config.test_fraction)
        held_out = True
    sizes, modes = Counter(), Counter()
    for name in train.files:
        try:
            size, gray = header(train.root / name)
        except UnreadableImage as unreadable:
            if config.skip_unreadable:
                continue
            raise SetupError(unreadable_line(unreadable)) from None
        sizes[size] += 1
        modes["grayscale" if gray else "colour"] += 1
    channels = {"grayscale": 1, "rgb": 3}.get(config.color, 3 if modes["colour"] else 1)
    image_format = ImageFormat(config.image_size or default_size(sizes), channels, config.resize)
    return FolderParts(train, test, held_out, image_format, sizes, modes)


def default_size(sizes: Counter) -> tuple[int, int]:
    """The images' median height and width, scaled down so the longer side is at most DEFAULT_LONGEST_SIDE.

    A CPU trains a 128-pixel image at about 20 times the cost of a 28-pixel one; the searchable stem
    (`stem_stride`) cuts that early. Set data.image_size to train at another size.
    """
    heights = [h for (h, _), count in sizes.items() for _ in range(count)]
    widths = [w for (_, w), count in sizes.items() for _ in range(count)]
    if not heights:
        return (DEFAULT_LONGEST_SIDE, DEFAULT_LONGEST_SIDE)
    height, width = statistics.median_low(heights), statistics.median_low(widths)
    scale = min(1.0, DEFAULT_LONGEST_SIDE / max(height, width))
    return (max(8, round(height * scale)), max(8, round(width * scale)))


def unreadable_line(unreadable: UnreadableImage) -> str:
    """The one line for an image that does not decode."""
    return (
        f"{unreadable.path}: cannot decode this image ({unreadable.reason}); replace or remove the file, "
        "or set skip_unreadable = true in the objective's [data] to skip such files (for --images, copy "
        "objectives/folder.toml and pass it as --objective)"
    )


def _hold_out(listing: FolderListing, fraction: float) -> tuple[FolderListing, FolderListing]:
    counts = np.bincount(listing.labels)
    if counts.min() < 3:  # one held out for the test part, one kept for validation, one to train on
        name, count = listing.class_names[int(np.argmin(counts))], int(counts.min())
        raise SetupError(
            f"{listing.root / name}: {count} image{'s' if count > 1 else ''}, and holding out a test part and "
            "a validation split needs at least 3 of each class; add images or give data.test a test folder"
        )
    count = max(len(listing.class_names), round(fraction * len(listing)))
    try:
        train, test = train_test_split(
            np.arange(len(listing)), test_size=count, stratify=listing.labels, random_state=HOLDOUT_SEED
        )
    except ValueError as error:
        raise SetupError(
            f"{listing.root}: cannot hold out {count} of {len(listing)} images as the test part, stratified by class "
            f"({error}); lower data.test_fraction or give data.test a test folder"
        ) from None
    return listing.subset(np.sort(train)), listing.subset(np.sort(test))


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED_NAMES
