"""Label images with a model from the registry: image files (one, or a folder of them), `.npy` or Kaggle-layout CSV.

The model is loaded as an MLflow pyfunc, the same way `mlflow models serve` loads it, so what
`atelier predict` prints is what the served model answers. Image files of any size and colour mode are
decoded, converted and resized to the model's input by `search.data.decode`, as the training images were
(the resize mode the model was trained with is in its metadata).
"""

from __future__ import annotations

import search.backend  # noqa: F401  first: TensorFlow without its start-up chatter, before a model loads it

# isort: split

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from search.data import read_kaggle_csv
from search.data.decode import IMAGE_EXTENSIONS, ImageFormat, UnreadableImage, decode_image, is_image_file
from search.errors import SetupError
from search.record.store import Store

IMAGES = "image files (" + ", ".join(IMAGE_EXTENSIONS) + ")"


@dataclass(frozen=True)
class Classifier:
    """A registered model with the shape of image it takes and the names of its classes."""

    uri: str
    model: mlflow.pyfunc.PyFuncModel
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    resize: str = "pad"  # how the training images were brought to the input's size

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities of raw 0-255 images, one row per image."""
        # Models registered before served_model.py was the registered code draw Keras's progress bar on stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            return np.asarray(self.model.predict(x))


def load_classifier(uri: str) -> Classifier:
    """The model at `uri` (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/... or a folder)."""
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SetupError(
            f"model '{uri}' does not resolve ({first_line}); give a registered model such as "
            "models:/fashion-mnist@champion, and the --store or --tracking-uri it was registered in"
        ) from None
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec():
        raise SetupError(f"model '{uri}' has no tensor input signature; promote it with `atelier promote`")
    shape = tuple(int(size) for size in schema.inputs[0].shape[1:])
    names = (model.metadata.metadata or {}).get("class_names")
    output = model.metadata.get_output_schema()
    count = int(output.inputs[0].shape[-1]) if output is not None and output.is_tensor_spec() else 0
    resize = (model.metadata.metadata or {}).get("resize", "pad")
    return Classifier(uri, model, shape, tuple(names) if names else tuple(str(i) for i in range(count)), resize)


def read_images(path: Path, input_shape: tuple[int, ...], resize: str = "pad") -> tuple[list[str], np.ndarray]:
    """Names and raw 0-255 uint8 pixels of the images at `path`, in the model's input shape."""
    image_format = ImageFormat((input_shape[0], input_shape[1]), input_shape[-1], resize)
    if path.is_dir():
        return _read_folder(path, image_format)
    if not path.is_file():
        raise SetupError(f"{path}: no such file or folder; give {IMAGES}, a folder of them, a .npy or a .csv file")
    if is_image_file(path.name):
        return [path.name], _decoded([path], image_format)
    if path.suffix == ".npy":
        return _read_npy(path, input_shape)
    if path.suffix == ".csv":
        x = read_kaggle_csv(path, labelled=False).x
        return [f"row {row}" for row in range(1, len(x) + 1)], _fit_shape(x, input_shape, str(path))
    raise SetupError(
        f"{path}: cannot read '{path.suffix}' files; give {IMAGES}, a folder of them, a .npy file "
        "or a Kaggle-layout .csv file"
    )


def predict_images(store: Store, model_uri: str, path: Path) -> pd.DataFrame:
    """Label the images at `path` with the model at `model_uri` (a registry URI resolves in `store`)."""
    store.check()
    if model_uri.startswith(("models:/", "runs:/")):
        store.check_tracking_exists()
    mlflow.set_tracking_uri(store.tracking)
    classifier = load_classifier(model_uri)
    names, images = read_images(path, classifier.input_shape, classifier.resize)
    return predictions_table(classifier, names, images)


def predictions_table(classifier: Classifier, names: list[str], x: np.ndarray) -> pd.DataFrame:
    """One row per image: its name, predicted label, and the label's probability."""
    proba = classifier.predict(x)
    best = proba.argmax(axis=1)
    labels = [classifier.class_names[i] if i < len(classifier.class_names) else str(i) for i in best]
    return pd.DataFrame(
        {"image": names, "label": labels, "class": best, "probability": proba[np.arange(len(best)), best].round(4)}
    )


def _read_npy(path: Path, input_shape: tuple[int, ...]) -> tuple[list[str], np.ndarray]:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise SetupError(f"{path}: not a readable .npy array ({error}); save images with numpy.save") from None
    if not np.issubdtype(x.dtype, np.number) or x.size == 0:
        raise SetupError(f"{path}: holds {x.dtype} array of shape {x.shape}; give numeric images (N, H, W[, C])")
    if np.issubdtype(x.dtype, np.floating) and x.max() <= 1.0 and x.max() > 0:
        raise SetupError(f"{path}: pixels lie in [0, 1]; the model takes raw 0-255 pixels: multiply by 255")
    if x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise SetupError(
            f"{path}: pixel values must be whole numbers from 0 to 255 "
            f"(found {x.min()} to {x.max()}); give raw 0-255 pixels"
        )
    if x.shape == input_shape or x.shape == input_shape[:-1]:
        x = x[np.newaxis]  # a single image
    return [f"image {i}" for i in range(len(x))], _fit_shape(x.astype(np.uint8), input_shape, str(path))


def _read_folder(folder: Path, image_format: ImageFormat) -> tuple[list[str], np.ndarray]:
    """Every image file under `folder` (its subfolders too, hidden files left out), sorted by path."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and is_image_file(path.name) and not any(part.startswith(".") for part in path.parts)
    )
    if not files:
        raise SetupError(f"{folder}: no images in this folder; give a folder of {IMAGES}")
    return [path.relative_to(folder).as_posix() for path in files], _decoded(files, image_format)


def _decoded(files: list[Path], image_format: ImageFormat) -> np.ndarray:
    try:
        return np.stack([decode_image(path, image_format) for path in files])
    except UnreadableImage as unreadable:
        raise SetupError(
            f"{unreadable.path}: cannot decode this image ({unreadable.reason}); remove or replace it"
        ) from None


def _fit_shape(x: np.ndarray, input_shape: tuple[int, ...], where: str) -> np.ndarray:
    """`x` as (N,) + input_shape, adding a missing single channel; a SetupError when it does not fit."""
    if x.ndim == len(input_shape) and input_shape[-1] == 1:
        x = x[..., np.newaxis]
    if x.shape[1:] != input_shape:
        got = "x".join(map(str, x.shape[1:]))
        wanted = "x".join(map(str, input_shape))
        raise SetupError(
            f"{where}: images are {got} (height x width x channels) but the model takes {wanted}; "
            "resize or convert them first"
        )
    return x
