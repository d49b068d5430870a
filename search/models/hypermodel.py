"""Bring your own KerasTuner hypermodel: KerasTuner's `HyperParameters` drawn from an Optuna trial.

`TrialHyperParameters` is a `keras_tuner.HyperParameters` (so `Int`, `Float`, `Choice`, `Boolean`,
`Fixed`, `conditional_scope`, `parent_name`/`parent_values`, `name_scope`, `values`, `get` and `space`
are KerasTuner's own) whose new active values come from an Optuna trial instead of their defaults.
KerasTuner 1.4's semantics, checked against its own objects in tests/test_hypermodel.py:

- A value is drawn the first time the hypermodel asks for its name; asking again, in any scope,
  returns the same value (KerasTuner keeps one `values` entry per name).
- An inactive hyperparameter (its condition not met) is registered in `space` but not drawn: the
  call returns None, and the name is absent from `values` and from the trial's params.
- `Int`/`Float` with `step` and linear sampling: Optuna's stepped range over KerasTuner's grid
  (`min_value + k * step`, counted by KerasTuner's floor division). With `step` and log or
  reverse_log sampling, `step` is a multiplier and KerasTuner picks a point of the geometric grid
  uniformly: so does Optuna, as a categorical over the same points.
- `sampling="log"`: Optuna's log scale. `sampling="reverse_log"` (dense near `max_value`): Optuna
  draws the mirror image `min_value + max_value - value` on a log scale, as `NAME:mirrored`; the
  value is the same distribution as KerasTuner's.
- `Choice` and `Boolean`: categorical (Optuna does not use a Choice's order). `Fixed`: returned and
  kept in `values`, hence in MLflow, but not suggested, like a space file's constants.
- Defaults are what `keras_tuner.HyperParameters()` builds: atelier builds once with them before a
  search (as a KerasTuner tuner does to declare its space); trials draw every active value.
- Optuna names: the KerasTuner name (name scopes joined by `/`); a conditional one after its
  conditions, `model_type:mlp/units`, since KerasTuner counts the same name under other conditions
  as another hyperparameter, possibly of another type, which Optuna refuses under one name.
"""

from __future__ import annotations

from search.backend import keras  # first: it imports TensorFlow without its start-up chatter

# isort: split
import difflib
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import keras_tuner
import numpy as np
import optuna
from keras_tuner.engine.hyperparameters import Boolean, Choice, Fixed, HyperParameter, Int
from optuna.trial import FrozenTrial

from search.config.schema import PARAMETERS, Scalar
from search.config.spaces import HypermodelRef
from search.data import SearchData
from search.errors import SetupError
from search.models.build import make_optimizer

Build = Callable[[keras_tuner.HyperParameters], Any]
MIRRORED = ":mirrored"
NOT_IN_NAMES = re.compile(r"[^\w.\- ]")  # what a condition's value may not bring into an Optuna (and MLflow) name


class TrialHyperParameters(keras_tuner.HyperParameters):
    """KerasTuner's `HyperParameters`, each new active value drawn from an Optuna trial (or a `FixedTrial`)."""

    def __init__(self, trial: optuna.trial.BaseTrial) -> None:
        super().__init__()
        self.trial = trial

    def _register(self, hyperparameter: HyperParameter, overwrite: bool = False) -> Any:
        # KerasTuner's one place where a new hyperparameter gets its value: its default, unless `values` has one.
        self._validate_name(hyperparameter.name)
        if self.is_active(hyperparameter) and hyperparameter.name not in self.values:
            self.values[hyperparameter.name] = draw(self.trial, hyperparameter)
        return super()._register(hyperparameter, overwrite)


def optuna_name(hyperparameter: HyperParameter) -> str:
    """The KerasTuner name, after the hyperparameter's conditions if it has any: `model_type:mlp/units`."""
    conditions = [
        f"{c.name}:{' '.join(NOT_IN_NAMES.sub('_', str(v)) for v in c.values)}" for c in hyperparameter.conditions
    ]
    return "/".join([*conditions, hyperparameter.name])


def draw(trial: optuna.trial.BaseTrial, hyperparameter: HyperParameter) -> Scalar:
    """The trial's value of a KerasTuner hyperparameter, drawn from what KerasTuner would draw it from."""
    if isinstance(hyperparameter, Fixed):
        return hyperparameter.value
    name = optuna_name(hyperparameter)
    if isinstance(hyperparameter, (Choice, Boolean)):
        return trial.suggest_categorical(name, list(hyperparameter.values))
    if hyperparameter.step is not None and hyperparameter.sampling != "linear":
        return trial.suggest_categorical(name, _geometric_grid(hyperparameter))
    if hyperparameter.sampling == "reverse_log":
        mirrored = _suggest_number(trial, name + MIRRORED, hyperparameter, log=True)
        return hyperparameter.max_value + hyperparameter.min_value - mirrored
    return _suggest_number(trial, name, hyperparameter, log=hyperparameter.sampling == "log")


def _suggest_number(trial: optuna.trial.BaseTrial, name: str, hyperparameter: HyperParameter, log: bool) -> int | float:
    low, high = hyperparameter.min_value, _top(hyperparameter)
    if isinstance(hyperparameter, Int):
        return trial.suggest_int(name, low, high, step=hyperparameter.step or 1, log=log)
    return trial.suggest_float(name, low, high, step=hyperparameter.step, log=log)


def _top(hyperparameter: HyperParameter) -> int | float:
    """`max_value`, or with a (linear) step the last point of KerasTuner's grid."""
    low, step = hyperparameter.min_value, hyperparameter.step
    if step is None:
        return hyperparameter.max_value
    count = int((hyperparameter.max_value - low) // step)  # KerasTuner's floor: float error may drop max_value there
    if isinstance(hyperparameter, Int):
        return low + count * step
    return float(Decimal(str(low)) + count * Decimal(str(step)))  # exact in decimal, so Optuna keeps it as it is


def _geometric_grid(hyperparameter: HyperParameter) -> list[int | float]:
    """The points KerasTuner picks from when `step` multiplies: `min_value * step ** k` (mirrored for reverse_log)."""
    return [int(v) if isinstance(hyperparameter, Int) else v for v in hyperparameter.values]


def training_params(hp: keras_tuner.HyperParameters) -> dict[str, Scalar]:
    """What atelier's fit reads: the hypermodel's `batch_size` if it declares one, else the schema's default."""
    return {"batch_size": int(hp.values.get("batch_size", PARAMETERS["batch_size"].default))}


def fit_data(model: keras.Model, data: SearchData) -> SearchData:
    """`data` with labels as the model's loss wants them (see `fit_labels`)."""
    return replace(
        data,
        train=data.train.with_labels(fit_labels(model, data.train.y, data.n_classes)),
        val=data.val.with_labels(fit_labels(model, data.val.y, data.n_classes)),
    )


def fit_labels(model: keras.Model, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class numbers, or one-hot rows when the loss is categorical (KerasTuner's own examples compile so)."""
    loss = model.loss
    name = loss if isinstance(loss, str) else getattr(loss, "name", getattr(loss, "__name__", ""))
    return keras.utils.to_categorical(labels, n_classes) if name.startswith("categorical_") else labels


class Hypermodel:
    """A KerasTuner hypermodel (`build(hp)` function, `HyperModel` class or instance), imported by reference."""

    def __init__(self, ref: HypermodelRef) -> None:
        self.reference = ref.reference
        self._build = _builder(ref.reference, _attribute(ref))

    def model(self, hp: keras_tuner.HyperParameters, input_shape: tuple[int, ...]) -> keras.Model:
        """The model `hp` describes, built for `input_shape` and compiled (with atelier's defaults if it was not)."""
        model = self._build(hp)
        if not isinstance(model, keras.Model):
            raise SetupError(
                f"hypermodel '{self.reference}' returned {type(model).__name__}, not a keras.Model; "
                "build(hp) must return the model"
            )
        if not model.built:
            model.build((None, *input_shape))
        _compile(model)
        return model

    def check(self, data: SearchData) -> None:
        """Build it with KerasTuner's defaults, as a tuner does first, and run it on one image; or a SetupError."""
        try:
            model = self.model(keras_tuner.HyperParameters(), data.input_shape)
            shape = tuple(model(data.train.take(np.arange(1)).arrays(), training=False).shape)
        except SetupError:
            raise
        except Exception as error:
            raise SetupError(
                f"hypermodel '{self.reference}' fails with KerasTuner's default values on "
                f"{data.input_shape} images ({type(error).__name__}: {_first_line(error)}); "
                "fix it so that build(keras_tuner.HyperParameters()) makes a model of them"
            ) from None
        finally:
            keras.backend.clear_session()
        if shape != (1, data.n_classes):
            raise SetupError(
                f"hypermodel '{self.reference}' outputs {shape[1:]} per image, but the "
                f"objective has {data.n_classes} classes; end the model with "
                f'Dense({data.n_classes}, activation="softmax")'
            )


def rebuild(
    ref: HypermodelRef, trial: FrozenTrial, input_shape: tuple[int, ...]
) -> tuple[keras.Model, dict[str, Scalar]]:
    """A finished trial's model, from its params through a `FixedTrial`, and the parameters its fit read."""
    hypermodel, hp = Hypermodel(ref), TrialHyperParameters(optuna.trial.FixedTrial(trial.params))
    try:
        return hypermodel.model(hp, input_shape), training_params(hp)
    except SetupError:
        raise
    except Exception as error:
        raise SetupError(
            f"trial {trial.number} does not rebuild from hypermodel '{ref.reference}' "
            f"({type(error).__name__}: {_first_line(error)}); was the hypermodel changed since "
            "the search?"
        ) from None


def _compile(model: keras.Model) -> None:
    """Compile with atelier's defaults (the schema's optimizer and learning rate), or add accuracy to its metrics."""
    if not model.compiled:
        optimizer = make_optimizer(str(PARAMETERS["optimizer"].default), float(PARAMETERS["learning_rate"].default))
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return
    config = model.get_compile_config()
    metrics = config.get("metrics") or []
    if isinstance(metrics, list) and "accuracy" not in metrics:
        model.compile_from_config(config | {"metrics": [*metrics, "accuracy"]})


def _attribute(ref: HypermodelRef) -> Any:
    """The object `package.module:attribute` names, importing the module from the working folder first."""
    module_name, _, attribute = ref.reference.partition(":")
    module = _import(ref, module_name)
    if not hasattr(module, attribute):
        known = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        close = difflib.get_close_matches(attribute, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SetupError(
            f"hypermodel '{ref.reference}': module {module_name} ({module.__file__}) has no "
            f"'{attribute}'{hint}; name a build(hp) function or a keras_tuner.HyperModel in it"
        )
    return getattr(module, attribute)


def _import(ref: HypermodelRef, module_name: str) -> ModuleType:
    with _importable_from(ref.folder):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not f"{module_name}.".startswith(f"{error.name}."):
                raise SetupError(
                    f"hypermodel '{ref.reference}': module {module_name} fails as it loads "
                    f"(ModuleNotFoundError: {error}); install what it imports"
                ) from None
            raise SetupError(
                f"hypermodel '{ref.reference}': no module {module_name} in {ref.folder} or the "
                "installed packages; run atelier in the folder that holds it, or install it"
            ) from None
        except Exception as error:
            raise SetupError(
                f"hypermodel '{ref.reference}': module {module_name} fails as it loads "
                f"({type(error).__name__}: {_first_line(error)}); fix it"
            ) from None


@contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """`folder` on the import path (it stays: a hypermodel may import its neighbours as it builds), and no
    `__pycache__` written into it, so a run stopped by a bad setup leaves the user's folder as it was."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        yield
    finally:
        sys.dont_write_bytecode = writes


def _builder(reference: str, target: Any) -> Build:
    """The `build(hp)` of a function, a `HyperModel` instance, or a `HyperModel` class made with no arguments."""
    if isinstance(target, type) and issubclass(target, keras_tuner.HyperModel):
        try:
            target = target()
        except Exception as error:
            raise SetupError(
                f"hypermodel '{reference}': cannot make {target.__name__}() ({type(error).__name__}: "
                f"{_first_line(error)}); give it defaults for every argument, or name an instance"
            ) from None
    if isinstance(target, keras_tuner.HyperModel):
        if type(target).fit is not keras_tuner.HyperModel.fit:
            raise SetupError(
                f"hypermodel '{reference}' overrides HyperModel.fit, which atelier does not call (it "
                'trains with pruning itself); tune the batch size in build: hp.Choice("batch_size", '
                "[32, 64])"
            )
        return target.build
    if isinstance(target, type) or not callable(target):
        kind = f"the class {target.__name__}" if isinstance(target, type) else f"{type(target).__name__} {target!r:.40}"
        raise SetupError(f"hypermodel '{reference}' names {kind}, not a build(hp) function or a keras_tuner.HyperModel")
    return target


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else "no message"
