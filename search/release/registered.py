"""Models as the MLflow Model Registry holds them: pyfunc models from code (`served_model.py`) around a `.keras` file.

`mlflow.pyfunc.load_model`, `mlflow models serve` and `atelier predict` use a registered model
unchanged; promotion reads a champion back as the Keras model it is.
"""

from __future__ import annotations

import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow.keras
import mlflow.pyfunc
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from search.backend import keras

SERVED_CODE = Path(__file__).with_name("served_model.py")  # stands alone: never imported here
KERAS_MODEL = "keras_model"  # the artifact holding the .keras file, as served_model.py names it
PINNED = ("keras", "tensorflow-cpu", "tensorflow", "mlflow", "numpy")
CANDIDATE, CHAMPION = "candidate", "champion"  # aliases: every promoted version; the one that passed every gate


def save_classifier(
    model: keras.Model,
    folder: Path,
    example: np.ndarray,
    proba: np.ndarray,
    class_names: tuple[str, ...],
    resize: str = "pad",
) -> None:
    """Save `model` in `folder` as an MLflow model: signature from `example` and its `proba`, class names, and how
    images were resized to its input (`atelier predict` resizes image files the same way)."""
    with tempfile.TemporaryDirectory() as scratch:
        keras_file = Path(scratch) / "model.keras"
        model.save(keras_file)
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=str(SERVED_CODE),
            artifacts={KERAS_MODEL: str(keras_file)},
            signature=infer_signature(example, proba),
            input_example=example[:2],
            pip_requirements=_requirements(),
            metadata={"class_names": list(class_names), "resize": resize},
        )


def load_keras_model(uri: str) -> keras.Model:
    """The Keras model of a registered model (one saved by `save_classifier`, or an older Keras-flavour one)."""
    model = mlflow.pyfunc.load_model(uri)
    if "keras" in model.metadata.flavors:
        return mlflow.keras.load_model(uri, load_model_kwargs={"compile": False})
    return model.unwrap_python_model().model


def load_champion(client: MlflowClient, model_name: str) -> keras.Model | None:
    """The registered champion of `model_name`, or None when there is none yet (no such model, or no version of it
    has passed every gate)."""
    try:
        aliases = client.get_registered_model(model_name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return load_keras_model(f"models:/{model_name}@{CHAMPION}") if CHAMPION in aliases else None


def _requirements() -> list[str]:
    """Pinned requirements of the saved model, named here so MLflow need not infer them in a subprocess."""
    pins = []
    for package in PINNED:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins
