"""Where an objective's images come from: IDX gz, Kaggle CSV, scikit-learn's digits, a user loader, or a folder.

Images are uint8 arrays of shape (N, H, W, C) holding raw 0-255 pixels; labels are int64. A source reads
its `train` part for a search and its `test` part for promotion alone.
"""

from __future__ import annotations

import gzip
import importlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.model_selection import train_test_split

from search.config.data_table import DataConfig
from search.data.folder_reader import FolderReader
from search.data.images import Images, ImageSet
from search.errors import SetupError

Part = Literal["train", "test"]

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_PLACES = (Path("/usr/share/datasets/fashion-mnist"), Path("~/.keras/datasets/fashion-mnist").expanduser())
IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801


Reader = Callable[[Part], ImageSet]


def reader(config: DataConfig, data_dir: Path | None = None, cache_root: Path | None = None) -> tuple[Reader, str]:
    """A function that reads one part of the objective's data, and a description of where from.

    A folder's images are decoded once into a cache under `cache_root` (the store), or into memory without one.
    """
    if data_dir is not None and config.source != "idx":
        raise SetupError(
            f"--data-dir {data_dir} names a folder of IDX files, but the objective reads "
            f'source = "{config.source}"; drop --data-dir or use an objective with source = "idx"'
        )
    if config.source == "folder":
        return FolderReader(config, cache_root), str(config.train)
    if config.source == "digits":
        return _read_digits, "scikit-learn digits"
    if config.source == "csv":
        return (lambda part: _read_csv(config, part)), str(config.train)
    if config.source == "loader":
        return _user_loader(str(config.loader)), str(config.loader)
    folder = _find_idx_folder(data_dir or config.dir)
    return (lambda part: read_idx_pair(folder, part)), str(folder)


def read_idx_pair(folder: Path, part: Part) -> Images:
    """Read one part of an IDX gz data set, checking magic numbers, sizes and counts."""
    image_file, label_file = (folder / name for name in IDX_FILES[part])
    x = read_idx(image_file, IMAGES_MAGIC)
    y = read_idx(label_file, LABELS_MAGIC).astype(np.int64)
    if len(x) != len(y):
        raise SetupError(
            f"{folder}: {len(x)} images but {len(y)} labels in the {part} part; "
            "the files do not belong together, fetch them again"
        )
    if len(x) == 0:
        raise SetupError(f"{folder}: no images in the {part} part; fetch the files again")
    return Images(x[..., np.newaxis], y)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX gz file as a uint8 array."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise SetupError(f"{path}: cannot read as gzip ({error}); fetch the file again") from None
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        found = f"{struct.unpack('>I', raw[:4])[0]:#06x}" if len(raw) >= 4 else "missing"
        raise SetupError(
            f"{path}: not an IDX file of this kind (magic {found}, expected {magic:#06x}); "
            "check that it is the right file"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise SetupError(f"{path}: header cut short ({len(raw)} bytes); the file is truncated, fetch it again")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if body.size != expected:
        raise SetupError(
            f"{path}: holds {body.size} values, its header promises {expected}; "
            "the file is truncated or corrupt, fetch it again"
        )
    return body.reshape(dims)


def read_kaggle_csv(path: Path, n_classes: int = 10, labelled: bool = True) -> Images:
    """A Kaggle-layout CSV (`label,pixel1,...,pixelN`, N a square) as images and labels."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise SetupError(
            f"{path}: cannot read as CSV ({error}); give a Kaggle-layout CSV, "
            "label,pixel1,...,pixelN with one row per image"
        ) from None
    columns = list(frame.columns)
    pixels = [c for c in columns if c != "label"]
    side = int(round(len(pixels) ** 0.5))
    expected = [f"pixel{i}" for i in range(1, side * side + 1)]
    if pixels != expected or side < 2 or (labelled and "label" not in columns):
        head = "label," if labelled else "[label,]"
        raise SetupError(
            f"{path}: columns must be {head}pixel1,...,pixelN with N a square "
            f"(got {len(columns)} columns starting {', '.join(columns[:3])}); use Kaggle's layout"
        )
    if frame.empty:
        raise SetupError(f"{path}: a header but no rows of images; add one row per image")
    numeric = frame.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().to_numpy()
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise SetupError(
            f"{path}: row {row + 2} column {columns[col]} is not a number "
            f"({frame.iat[row, col]!r}); every cell must be numeric"
        )
    values = numeric[pixels].to_numpy()
    if values.min() < 0 or values.max() > 255 or not np.all(values == np.round(values)):
        raise SetupError(
            f"{path}: pixel values must be whole numbers from 0 to 255 "
            f"(found {values.min()} to {values.max()}); rescale to raw 0-255 pixels"
        )
    if "label" in columns:
        labels = numeric["label"].to_numpy()
        fractional = np.flatnonzero(labels != np.round(labels))
        if fractional.size:
            row = int(fractional[0])
            raise SetupError(
                f"{path}: row {row + 2} has label {labels[row]:g}, not a class number; "
                f"labels must be whole numbers 0..{n_classes - 1}"
            )
    x = values.astype(np.uint8).reshape(len(frame), side, side, 1)
    y = numeric["label"].to_numpy().astype(np.int64) if "label" in columns else np.full(len(frame), -1)
    images = Images(x, y)
    if "label" in columns:
        check_labels(images.y, n_classes, str(path))
    return images


def _find_idx_folder(explicit: Path | None) -> Path:
    names = IDX_FILES["train"]
    if explicit is not None:
        if all((explicit / name).is_file() for name in names):
            return explicit
        raise SetupError(
            f"{explicit}: no Fashion-MNIST files there (need {', '.join(names)}); "
            "fix --data-dir or data.dir, or drop it to use Debian's dataset-fashion-mnist"
        )
    for folder in IDX_PLACES:
        if all((folder / name).is_file() for name in names):
            return folder
    try:
        import keras

        keras.datasets.fashion_mnist.load_data()
    except Exception:
        raise SetupError(
            f"Fashion-MNIST not found in {', '.join(map(str, IDX_PLACES))} and Keras could not download it; "
            "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
            "or pass --data-dir with the four IDX gz files"
        ) from None
    return IDX_PLACES[1]


def _read_csv(config: DataConfig, part: Part) -> Images:
    path = config.train if part == "train" else config.test
    if path is None:
        raise SetupError(f'objective has no {part} CSV; set data.{part} = "path/to/{part}.csv"')
    if not path.is_file():
        raise SetupError(f"{path}: no such CSV file; fix data.{part}")
    return read_kaggle_csv(path, len(config.class_names) or 10)


def _read_digits(part: Part) -> Images:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., np.newaxis]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target.astype(np.int64), test_size=0.2, stratify=digits.target, random_state=0
    )
    return Images(x_train, y_train) if part == "train" else Images(x_test, y_test)


def _user_loader(dotted: str) -> Reader:
    module_name, _, attribute = dotted.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except Exception as error:  # a missing module, a missing name, or a module that fails as it loads
        raise SetupError(
            f"loader '{dotted}' cannot be imported ({type(error).__name__}: {error}); "
            "name it as package.module:function"
        ) from None

    def read(part: Part) -> Images:
        x, y = function(part)
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 3:
            x = x[..., np.newaxis]
        whole = x.size > 0 and np.issubdtype(x.dtype, np.number) and np.array_equal(x, np.round(x))
        if x.ndim != 4 or len(x) != len(y) or not whole or x.min() < 0 or x.max() > 255:
            raise SetupError(
                f"loader '{dotted}' must return (images, labels): images (N, H, W[, C]) "
                f"of whole raw 0-255 pixels and N labels; got {x.shape} and {y.shape}"
            )
        return Images(x.astype(np.uint8), y.astype(np.int64))

    return read


def check_labels(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Every label must name one of `n_classes` classes."""
    if labels.min() < 0 or labels.max() >= n_classes:
        raise SetupError(
            f"{where}: labels must lie in 0..{n_classes - 1} "
            f"(found {labels.min()} to {labels.max()}); fix the labels or data.class_names"
        )
