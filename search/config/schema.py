"""The hyperparameters a model understands: name, type, default, valid range, structure.

A search space may only name parameters listed here. Parameters with `per` repeat once for
each block counted by another parameter (`conv_filters_0`, `conv_filters_1`, ...); those
with `requires` exist only when the named count is above zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Scalar = bool | int | float | str

# What `model.fit` reports each epoch; the only names a search may monitor.
EPOCH_METRICS: tuple[str, ...] = ("loss", "accuracy", "val_loss", "val_accuracy")
# The plain cross-entropy that atelier's models also report; training reports it as `val_loss` (see train.py).
PLAIN_LOSS = "crossentropy"


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: its type, default and the values that make sense for it."""

    name: str
    type: type
    default: Scalar
    help: str
    minimum: float | None = None
    maximum: float | None = None
    options: tuple[str, ...] | None = None
    per: str | None = None
    requires: str | None = None

    def check(self, value: object) -> str | None:
        """Why `value` is not a valid value of this parameter, or None when it is."""
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.type) and not isinstance(value, bool)
        if not ok:
            return f"expected {self.type.__name__}, got {type(value).__name__} {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a finite number"
        if self.options is not None and value not in self.options:
            return f"{value!r} is not one of {', '.join(map(repr, self.options))}"
        if self.minimum is not None and value < self.minimum:  # type: ignore[operator]
            return f"{value!r} is below the minimum {self.minimum}"
        if self.maximum is not None and value > self.maximum:  # type: ignore[operator]
            return f"{value!r} is above the maximum {self.maximum}"
        return None


def _spec(name: str, type_: type, default: Scalar, help_: str, **limits: object) -> ParamSpec:
    return ParamSpec(name, type_, default, help_, **limits)  # type: ignore[arg-type]


# Order matters: a count comes before the parameters that repeat or depend on it.
PARAMETERS: dict[str, ParamSpec] = {
    spec.name: spec
    for spec in (
        _spec("conv_blocks", int, 0, "convolution blocks, each ending in 2x2 max pooling", minimum=0, maximum=8),
        _spec(
            "stem_stride",
            int,
            1,
            "stride of one convolution before the blocks (kernel 2 x stride - 1): large inputs cut early; 1: no stem",
            minimum=1,
            maximum=8,
            requires="conv_blocks",
        ),
        _spec(
            "stem_filters",
            int,
            32,
            "filters of the stem's convolution",
            minimum=1,
            maximum=1024,
            requires="conv_blocks",
        ),
        _spec("conv_layers", int, 1, "convolutions per block", minimum=1, maximum=4, requires="conv_blocks"),
        _spec(
            "conv_filters", int, 32, "filters of each block's convolutions", minimum=1, maximum=1024, per="conv_blocks"
        ),
        _spec("conv_kernel_size", int, 3, "square kernel size", minimum=1, maximum=11, requires="conv_blocks"),
        _spec("conv_padding", str, "same", "convolution padding", options=("same", "valid"), requires="conv_blocks"),
        _spec("conv_batch_norm", bool, False, "batch normalization after each convolution", requires="conv_blocks"),
        _spec("conv_dropout", float, 0.0, "dropout after each block", minimum=0.0, maximum=0.9, requires="conv_blocks"),
        _spec(
            "conv_dropout_growth",
            float,
            0.0,
            "dropout added per block: block b drops conv_dropout + b x this (at most 0.9)",
            minimum=0.0,
            maximum=0.5,
            requires="conv_blocks",
        ),
        _spec(
            "head",
            str,
            "flatten",
            "how the last block's maps reach the dense layers: flattened, or averaged over the image",
            options=("flatten", "average"),
            requires="conv_blocks",
        ),
        _spec("dense_layers", int, 1, "hidden dense layers before the classifier", minimum=0, maximum=8),
        _spec("dense_units", int, 128, "units of each hidden dense layer", minimum=1, maximum=8192, per="dense_layers"),
        _spec("dense_batch_norm", bool, False, "batch normalization in the dense layers", requires="dense_layers"),
        _spec(
            "dense_dropout",
            float,
            0.0,
            "dropout after each dense layer",
            minimum=0.0,
            maximum=0.9,
            requires="dense_layers",
        ),
        _spec(
            "batch_norm_momentum",
            float,
            0.9,
            "momentum of batch norm's moving statistics (Keras's 0.99 lags far behind a short trial)",
            minimum=0.0,
            maximum=0.999,
        ),
        _spec("l2", float, 0.0, "L2 weight penalty on every kernel", minimum=0.0, maximum=1.0),
        _spec("label_smoothing", float, 0.0, "share of each label spread over all classes", minimum=0.0, maximum=0.5),
        _spec("optimizer", str, "adam", "optimizer", options=("adam", "adamw", "sgd", "rmsprop")),
        _spec("weight_decay", float, 0.004, "AdamW's decoupled weight decay", minimum=0.0, maximum=1.0),
        _spec("learning_rate", float, 1e-3, "initial learning rate", minimum=1e-7, maximum=10.0),
        _spec("lr_schedule", str, "constant", "learning-rate schedule over max_epochs", options=("constant", "cosine")),
        _spec(
            "warmup_epochs",
            int,
            0,
            "epochs of linear learning-rate warm-up before the schedule",
            minimum=0,
            maximum=20,
        ),
        _spec("batch_size", int, 128, "training batch size", minimum=1, maximum=65536),
        _spec("aug_flip", bool, False, "random horizontal flips (training only)"),
        _spec("aug_translate", float, 0.0, "random shift, fraction of height and width", minimum=0.0, maximum=0.5),
        _spec("aug_rotate", float, 0.0, "random rotation, fraction of a full turn", minimum=0.0, maximum=0.5),
        _spec("aug_zoom", float, 0.0, "random zoom, fraction of size", minimum=0.0, maximum=0.9),
        _spec(
            "aug_erase",
            float,
            0.0,
            "random erasing of a patch with noise: an image is erased with probability aug_erase / 2 (Keras draws "
            "each image's probability from [0, aug_erase])",
            minimum=0.0,
            maximum=1.0,
        ),
        _spec(
            "aug_brightness",
            float,
            0.0,
            "random brightness: each image shifted up or down by up to this share of the 0-255 range (training only)",
            minimum=0.0,
            maximum=1.0,
        ),
        _spec(
            "aug_contrast",
            float,
            0.0,
            "random contrast: each image's spread about its channels' means scaled by 1 +/- up to this (training only)",
            minimum=0.0,
            maximum=1.0,
        ),
    )
}
