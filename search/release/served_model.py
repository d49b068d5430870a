"""The code of every model atelier registers: MLflow runs this file when it loads one (models from code).

It must stand alone: `mlflow models serve` and `mlflow.pyfunc.load_model` run it where atelier may
not be installed. The model takes raw 0-255 pixels and answers class probabilities, silently (Keras's
`predict` would draw a progress bar on every request).
"""

from typing import Any

import keras
import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

KERAS_MODEL = "keras_model"  # the artifact holding the .keras file


class KerasClassifier(PythonModel):
    """A Keras image classifier behind MLflow's pyfunc interface."""

    # The saved signature (raw 0-255 image tensors) checks the input; MLflow's type-hint checks would only warn.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        self.model = keras.saving.load_model(context.artifacts[KERAS_MODEL], compile=False)

    def predict(self, context, model_input, params=None):  # unannotated: MLflow reads hints as a schema
        return np.asarray(self.model.predict(np.asarray(model_input), verbose=0))


set_model(KerasClassifier())
