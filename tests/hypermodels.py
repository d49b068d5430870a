"""KerasTuner hypermodels written the way KerasTuner's documentation writes them, for the digits objective.

atelier feeds raw 0-255 pixels, so each model scales them first; the rest follows KerasTuner's guides.
"""

from __future__ import annotations

import keras
import keras_tuner
from keras import layers

DIGITS_SHAPE = (8, 8, 1)


def build_model(hp: keras_tuner.HyperParameters) -> keras.Model:
    """KerasTuner's "Getting started" model: tuned depth, widths, activation, dropout and learning rate."""
    model = keras.Sequential()
    model.add(layers.Rescaling(1.0 / 255))
    model.add(layers.Flatten())
    # Tune the number of layers.
    for i in range(hp.Int("num_layers", 1, 3)):
        model.add(
            layers.Dense(
                # Tune number of units separately.
                units=hp.Int(f"units_{i}", min_value=32, max_value=512, step=32),
                activation=hp.Choice("activation", ["relu", "tanh"]),
            )
        )
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(rate=0.25))
    model.add(layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_by_type(hp: keras_tuner.HyperParameters) -> keras.Model:
    """Model selection with `conditional_scope`, as in the docstring of `HyperParameters.conditional_scope`.

    Left uncompiled: atelier compiles it with its defaults.
    """
    model = keras.Sequential()
    model.add(keras.Input(shape=DIGITS_SHAPE))
    model.add(layers.Rescaling(1.0 / 255))
    model_type = hp.Choice("model_type", ["mlp", "cnn"])
    with hp.conditional_scope("model_type", ["mlp"]):
        if model_type == "mlp":
            model.add(layers.Flatten())
            model.add(layers.Dense(hp.Int("units", 32, 128, step=32), activation="relu"))
    with hp.conditional_scope("model_type", ["cnn"]):
        if model_type == "cnn":
            model.add(layers.Conv2D(hp.Int("filters", 8, 32, step=8), 3, activation="relu"))
            model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(10, activation="softmax"))
    return model


class MyHyperModel(keras_tuner.HyperModel):
    """A `HyperModel` subclass, as in KerasTuner's "Tune model training" guide, batch size declared in build."""

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model = keras.Sequential()
        model.add(layers.Rescaling(1.0 / 255))
        model.add(layers.Flatten())
        model.add(layers.Dense(units=hp.Int("units", min_value=32, max_value=512, step=32), activation="relu"))
        model.add(layers.Dense(10, activation="softmax"))
        hp.Choice("batch_size", [16, 32])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


def build_augmented(hp: keras_tuner.HyperParameters) -> keras.Model:
    """`HyperImageAugment` inside a model: each transform's factor tuned together with the classifier.

    `augment_layers=0` applies every transform in turn; KerasTuner 1.4.8's RandAugment mode (the
    default) makes its random layers inside `call`, which fails on Keras 3 with TensorFlow
    ("tf.function only supports singleton tf.Variables").
    """
    augment = keras_tuner.applications.HyperImageAugment(
        input_shape=DIGITS_SHAPE, rotate=0.1, translate_x=0.2, translate_y=0.2, contrast=None, augment_layers=0
    )
    inputs = keras.Input(shape=DIGITS_SHAPE)
    x = augment.build(hp)(inputs)
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-3, 1e-2, sampling="log")),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
