"""Build a compiled Keras classifier from a flat parameter dict; knows nothing of Optuna or MLflow."""

from __future__ import annotations

from collections.abc import Mapping

from search.backend import keras
from search.config.schema import PARAMETERS, PLAIN_LOSS, Scalar

MAX_DROPOUT = 0.9  # a block's dropout, however much it grows per block


class UnbuildableModel(ValueError):
    """The parameters describe a network that cannot exist for this input."""


def build_model(params: Mapping[str, Scalar], input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """A compiled classifier that takes raw 0-255 pixels of `input_shape` and outputs class probabilities."""
    p = _with_defaults(params)
    check_buildable(p, input_shape)
    regularizer = keras.regularizers.L2(p["l2"]) if p["l2"] else None
    momentum = float(p["batch_norm_momentum"])
    inputs = keras.Input(shape=input_shape, name="pixels")
    augmentation = _augmentation(p)
    x = augmentation(inputs) if augmentation.layers else inputs
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(x)
    if p["conv_blocks"] and int(p["stem_stride"]) > 1:
        x = _stem(x, p, regularizer)
    for block in range(int(p["conv_blocks"])):
        for layer in range(int(p["conv_layers"])):
            x = keras.layers.Conv2D(
                int(_each(p, "conv_filters", block)),
                int(p["conv_kernel_size"]),
                padding=str(p["conv_padding"]),
                use_bias=not p["conv_batch_norm"],
                kernel_regularizer=regularizer,
                name=f"conv{block}_{layer}",
            )(x)
            if p["conv_batch_norm"]:
                x = keras.layers.BatchNormalization(momentum=momentum, name=f"conv{block}_{layer}_bn")(x)
            x = keras.layers.Activation("relu", name=f"conv{block}_{layer}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
        rate = min(MAX_DROPOUT, float(p["conv_dropout"]) + block * float(p["conv_dropout_growth"]))
        if rate:
            x = keras.layers.Dropout(rate, name=f"pool{block}_dropout")(x)
    if p["conv_blocks"] and p["head"] == "average":
        x = keras.layers.GlobalAveragePooling2D(name="average")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    for layer in range(int(p["dense_layers"])):
        x = keras.layers.Dense(
            int(_each(p, "dense_units", layer)),
            use_bias=not p["dense_batch_norm"],
            kernel_regularizer=regularizer,
            name=f"dense{layer}",
        )(x)
        if p["dense_batch_norm"]:
            x = keras.layers.BatchNormalization(momentum=momentum, name=f"dense{layer}_bn")(x)
        x = keras.layers.Activation("relu", name=f"dense{layer}_relu")(x)
        if p["dense_dropout"]:
            x = keras.layers.Dropout(float(p["dense_dropout"]), name=f"dense{layer}_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=regularizer, name="classes")(x)
    model = keras.Model(inputs, outputs, name="atelier")
    smoothing = float(p["label_smoothing"])
    model.compile(
        optimizer=make_optimizer(str(p["optimizer"]), float(p["learning_rate"]), float(p["weight_decay"])),
        loss=SmoothedSparseCrossentropy(smoothing) if smoothing else "sparse_categorical_crossentropy",
        metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name=PLAIN_LOSS)],
    )
    return model


@keras.saving.register_keras_serializable(package="atelier")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy against integer labels smoothed: each label keeps 1 - smoothing, and smoothing is spread
    evenly over all classes (Keras's label smoothing, which wants one-hot labels)."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy", **kwargs: object) -> None:
        super().__init__(name=name, **kwargs)
        self.smoothing = smoothing

    def call(self, y_true, y_pred):  # tensors
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), classes)
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=self.smoothing)

    def get_config(self) -> dict[str, object]:
        return super().get_config() | {"smoothing": self.smoothing}


def check_buildable(params: Mapping[str, Scalar], input_shape: tuple[int, ...]) -> None:
    """Raise `UnbuildableModel` when the stem and the convolution stack shrink the image to nothing."""
    params = _with_defaults(params)
    height, width = input_shape[0], input_shape[1]
    kernel = int(params["conv_kernel_size"])
    stride = int(params["stem_stride"]) if params["conv_blocks"] else 1
    height, width = -(-height // stride), -(-width // stride)  # 'same' padding: ceil(side / stride)
    stem = f"a stride-{stride} stem leaves {height}x{width}" if stride > 1 else ""
    fewer = "fewer blocks, a smaller stem_stride" if stride > 1 else "fewer blocks"
    for block in range(int(params["conv_blocks"])):
        for layer in range(int(params["conv_layers"])):
            if params["conv_padding"] == "valid":
                height, width = height - kernel + 1, width - kernel + 1
            if min(height, width) < 1:
                raise UnbuildableModel(
                    f"conv block {block + 1} layer {layer + 1} shrinks the {input_shape[0]}x{input_shape[1]} "
                    f"input to nothing ({kernel}x{kernel} kernel, valid padding{'; ' + stem if stem else ''})"
                )
        height, width = height // 2, width // 2
        if min(height, width) < 1:
            raise UnbuildableModel(
                f"pooling after conv block {block + 1} shrinks the {input_shape[0]}x{input_shape[1]} "
                f"input to nothing{f' ({stem})' if stem else ''}; use {fewer} or 'same' padding"
            )


def _with_defaults(params: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """`params` with every schema parameter it leaves out at its default."""
    return {name: spec.default for name, spec in PARAMETERS.items()} | dict(params)


def _stem(
    x: keras.KerasTensor, p: Mapping[str, Scalar], regularizer: keras.regularizers.Regularizer | None
) -> keras.KerasTensor:
    """One strided convolution before the blocks: a `stem_stride` s cuts each side by s (area by s squared) at the
    cost of one convolution, so a 224x224 photo reaches the blocks as 56x56 at s = 4.

    The kernel is 2s - 1, the standard overlapping stem: 3x3 at stride 2 as in MobileNet and EfficientNet, 7x7 at
    stride 4, ResNet's 7x7 kernel reaching its stride of 4 in one convolution (ResNet adds a max pool). Neighbouring
    windows overlap by s - 1 pixels, so no detail is split between two windows that each see only half of it, as
    in a patchify stem (kernel = stride, ConvNeXt's). 'same' padding (each side becomes ceil(side / s)), batch
    norm when the blocks have it, then relu.
    """
    stride = int(p["stem_stride"])
    x = keras.layers.Conv2D(
        int(p["stem_filters"]),
        2 * stride - 1,
        strides=stride,
        padding="same",
        use_bias=not p["conv_batch_norm"],
        kernel_regularizer=regularizer,
        name="stem",
    )(x)
    if p["conv_batch_norm"]:
        x = keras.layers.BatchNormalization(momentum=float(p["batch_norm_momentum"]), name="stem_bn")(x)
    return keras.layers.Activation("relu", name="stem_relu")(x)


def _each(p: Mapping[str, Scalar], name: str, index: int) -> Scalar:
    """A per-block parameter of block `index`, or the parameter's default."""
    return p.get(f"{name}_{index}", PARAMETERS[name].default)


def _augmentation(p: Mapping[str, Scalar]) -> keras.Sequential:
    """Random transforms of raw pixels, colour first (so that the geometric transforms' fill stays black); Keras
    runs them in training only. Each works on grayscale and on colour images."""
    layers: list[keras.layers.Layer] = []
    if p["aug_brightness"]:
        layers.append(
            keras.layers.RandomBrightness(float(p["aug_brightness"]), value_range=(0, 255), name="brightness")
        )
    if p["aug_contrast"]:
        spread = float(p["aug_contrast"])  # as a pair: Keras 3 reads a lone factor f as [1, 1 + f], not [1 - f, 1 + f]
        layers.append(keras.layers.RandomContrast((spread, spread), value_range=(0, 255), name="contrast"))
    if p["aug_flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", name="flip"))
    if p["aug_translate"]:
        shift = float(p["aug_translate"])
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="constant", name="translate"))
    if p["aug_rotate"]:
        layers.append(keras.layers.RandomRotation(float(p["aug_rotate"]), fill_mode="constant", name="rotate"))
    if p["aug_zoom"]:
        zoom = float(p["aug_zoom"])
        layers.append(keras.layers.RandomZoom(zoom, zoom, fill_mode="constant", name="zoom"))
    if p["aug_erase"]:
        layers.append(keras.layers.RandomErasing(float(p["aug_erase"]), value_range=(0, 255), name="erase"))
    return keras.Sequential(layers, name="augment")


def make_optimizer(name: str, learning_rate: float, weight_decay: float = 0.004) -> keras.optimizers.Optimizer:
    """One of the schema's optimizers (SGD with Nesterov momentum 0.9; `weight_decay` is AdamW's alone)."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop}[name](learning_rate)
