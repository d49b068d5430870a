"""Building Keras classifiers from flat parameter dicts: sizes, layers, raw-pixel input, compilation."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from search.config.schema import EPOCH_METRICS, PARAMETERS, Scalar
from search.models.build import UnbuildableModel, build_model, check_buildable

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)
ALL_AUGMENTATION = {
    "aug_brightness": 0.2,
    "aug_contrast": 0.2,
    "aug_flip": True,
    "aug_translate": 0.1,
    "aug_rotate": 0.05,
    "aug_zoom": 0.1,
    "aug_erase": 0.5,
}


def small_cnn(**overrides: Scalar) -> dict[str, Scalar]:
    """A two-block CNN with one hidden dense layer, small enough for 8x8 inputs."""
    return {
        "conv_blocks": 2,
        "conv_layers": 1,
        "conv_filters_0": 4,
        "conv_filters_1": 8,
        "dense_layers": 1,
        "dense_units_0": 16,
    } | overrides


def layers_of(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    """The model's layers of one class, in order."""
    return [layer for layer in model.layers if type(layer) is kind]


def test_notebook_baseline_parameter_count() -> None:
    """Flatten -> Dense(128) -> Dense(10) on 28x28x1: 784*128+128 + 128*10+10 = 101,770 parameters."""
    model = build_model({"conv_blocks": 0, "dense_layers": 1, "dense_units_0": 128}, (28, 28, 1), 10)
    assert model.count_params() == (28 * 28 * 128 + 128) + (128 * 10 + 10) == 101_770


def test_missing_parameters_take_schema_defaults() -> None:
    """Parameters left out, per-block ones included, take the schema's defaults."""
    model = build_model({"conv_blocks": 1, "dense_layers": 2}, (8, 8, 1), 3)
    conv = model.get_layer("conv0_0")
    assert (conv.filters, conv.kernel_size, conv.padding) == (32, (3, 3), "same")
    assert [model.get_layer(f"dense{i}").units for i in range(2)] == [128, 128]
    assert type(model.optimizer) is keras.optimizers.Adam
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)
    assert "augment" not in [layer.name for layer in model.layers] and model.losses == []


@pytest.mark.parametrize(("padding", "side"), [("same", 7), ("valid", 5)])
def test_cnn_parameter_count(padding: str, side: int) -> None:
    """Two 3x3 conv blocks (32, 64 filters) on 28x28x1: kernels+biases, then a classifier on the pooled map.

    same: 28 -> pool 14 -> pool 7; valid: 28 -> 26 -> pool 13 -> 11 -> pool 5.
    """
    params = {
        "conv_blocks": 2,
        "conv_layers": 1,
        "conv_filters_0": 32,
        "conv_filters_1": 64,
        "conv_kernel_size": 3,
        "conv_padding": padding,
        "conv_batch_norm": False,
        "dense_layers": 0,
    }
    model = build_model(params, (28, 28, 1), 10)
    conv0 = 3 * 3 * 1 * 32 + 32
    conv1 = 3 * 3 * 32 * 64 + 64
    classes = side * side * 64 * 10 + 10
    assert model.get_layer("flatten").output.shape == (None, side * side * 64)
    assert model.count_params() == conv0 + conv1 + classes
    if padding == "same":
        assert conv0 + conv1 + classes == 320 + 18_496 + 31_370 == 50_186


def test_output_is_a_probability_per_class() -> None:
    """The output has one column per class, and each row is a softmax distribution."""
    model = build_model(small_cnn(), (8, 8, 1), 3)
    assert model.output_shape == (None, 3)
    probabilities = model.predict(PIXELS, verbose=0)
    assert probabilities.shape == (16, 3)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_model_scales_raw_pixels_itself() -> None:
    """A Rescaling layer inside the model turns raw 0-255 pixels into [0, 1]."""
    model = build_model(small_cnn(), (8, 8, 1), 3)
    scale = model.get_layer("scale")
    assert isinstance(scale, keras.layers.Rescaling)
    scaled = keras.Model(model.input, scale.output).predict(PIXELS, verbose=0)
    np.testing.assert_allclose(scaled, PIXELS.astype(np.float32) / 255, rtol=1e-6)
    assert scaled.max() <= 1.0 and scaled.max() > 0.9


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_saved_model_predicts_the_same_on_raw_pixels(tmp_path: Path) -> None:
    """A saved and reloaded .keras file (augmentation, batch norm, dropout, L2 included) gives identical predictions."""
    model = build_model(
        small_cnn(conv_batch_norm=True, conv_dropout=0.2, dense_dropout=0.3, l2=1e-4, **ALL_AUGMENTATION), (8, 8, 1), 3
    )
    before = model.predict(PIXELS, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(reloaded.predict(PIXELS, verbose=0), before)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


def test_augmentation_layers_follow_the_parameters() -> None:
    """Each aug_* parameter adds its random layer, in a block before the rescaling; none are added by default."""
    plain = build_model(small_cnn(), (8, 8, 1), 3)
    assert "augment" not in [layer.name for layer in plain.layers]
    augmented = build_model(small_cnn(**ALL_AUGMENTATION), (8, 8, 1), 3)
    names = [layer.name for layer in augmented.layers]
    assert names.index("augment") < names.index("scale")
    augment = augmented.get_layer("augment")
    assert [type(layer) for layer in augment.layers] == [
        keras.layers.RandomBrightness,
        keras.layers.RandomContrast,
        keras.layers.RandomFlip,
        keras.layers.RandomTranslation,
        keras.layers.RandomRotation,
        keras.layers.RandomZoom,
        keras.layers.RandomErasing,
    ]
    only_flip = build_model(small_cnn(aug_flip=True), (8, 8, 1), 3)
    assert [layer.name for layer in only_flip.get_layer("augment").layers] == ["flip"]


def test_colour_augmentation_takes_its_factors_on_the_raw_pixel_range() -> None:
    """aug_brightness and aug_contrast are Keras's factors, on 0-255 pixels (the model scales after augmenting)."""
    augment = build_model(small_cnn(aug_brightness=0.3, aug_contrast=0.4), (8, 8, 3), 3).get_layer("augment")
    brightness, contrast = augment.get_layer("brightness"), augment.get_layer("contrast")
    assert (brightness.factor, tuple(brightness.value_range)) == ((-0.3, 0.3), (0, 255))
    assert (contrast.factor, tuple(contrast.value_range)) == ((0.4, 0.4), (0, 255))


def test_no_stem_by_default() -> None:
    """stem_stride 1 (the default) builds no stem: the first block's convolution reads the scaled pixels."""
    model = build_model(small_cnn(stem_filters=64), (28, 28, 1), 3)
    assert not any(layer.name.startswith("stem") for layer in model.layers)
    assert model.get_layer("conv0_0").input is model.get_layer("scale").output


@pytest.mark.parametrize(("stride", "kernel", "side"), [(2, 3, 112), (4, 7, 56)])
def test_stem_cuts_each_side_by_its_stride(stride: int, kernel: int, side: int) -> None:
    """A stride-s stem: one (2s - 1)-wide convolution of stem_filters, 'same' padding, relu, before the blocks."""
    model = build_model(small_cnn(stem_stride=stride, stem_filters=16), (224, 224, 3), 3)
    stem = model.get_layer("stem")
    assert (stem.kernel_size, stem.strides, stem.padding, stem.filters) == (
        (kernel, kernel),
        (stride, stride),
        "same",
        16,
    )
    assert stem.input is model.get_layer("scale").output
    assert model.get_layer("stem_relu").output.shape == (None, side, side, 16)
    assert model.get_layer("conv0_0").input is model.get_layer("stem_relu").output
    assert stem.count_params() == kernel * kernel * 3 * 16 + 16
    assert "stem_bn" not in [layer.name for layer in model.layers]


def test_stem_follows_the_blocks_batch_norm_and_l2() -> None:
    model = build_model(small_cnn(stem_stride=2, conv_batch_norm=True, l2=1e-4), (16, 16, 3), 3)
    stem = model.get_layer("stem")
    assert not stem.use_bias and model.get_layer("stem_bn").input is stem.output
    assert model.get_layer("stem_relu").input is model.get_layer("stem_bn").output
    assert len(model.losses) == 5  # the stem's kernel, 2 convolutions, the hidden dense layer, the classifier


def test_augmentation_only_in_training() -> None:
    """With every aug_* on, inference is deterministic and leaves pixels alone; training changes them."""
    model = build_model(small_cnn(**ALL_AUGMENTATION), (8, 8, 1), 3)
    first = model.predict(PIXELS, verbose=0)
    np.testing.assert_array_equal(model.predict(PIXELS, verbose=0), first)
    augment = model.get_layer("augment")
    pixels = PIXELS.astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment(pixels, training=False)), pixels)
    assert not np.array_equal(keras.ops.convert_to_numpy(augment(pixels, training=True)), pixels)


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"conv_blocks": 1, "conv_layers": 2, "conv_kernel_size": 5}, "conv block 1 layer 2"),
        ({"conv_blocks": 2, "conv_layers": 1, "conv_kernel_size": 3}, "pooling after conv block 2"),
    ],
)
def test_valid_padding_that_shrinks_to_nothing_is_unbuildable(params: dict[str, Scalar], where: str) -> None:
    """8x8 with valid padding: 5x5 twice leaves 0 pixels; 3x3 then pool, twice, leaves 8-6-3-1-0."""
    full = {"conv_padding": "valid", "conv_filters_0": 4, "conv_filters_1": 4, "dense_layers": 0} | params
    with pytest.raises(UnbuildableModel, match=f"{where} shrinks the 8x8 input to nothing"):
        build_model(full, (8, 8, 1), 3)


def test_too_many_blocks_is_unbuildable_even_with_same_padding() -> None:
    """Pooling alone halves 8x8 to 1x1 after three blocks and to nothing after four."""
    defaults = {name: spec.default for name, spec in PARAMETERS.items()}
    check_buildable(defaults | {"conv_blocks": 3}, (8, 8, 1))
    with pytest.raises(UnbuildableModel, match="pooling after conv block 4.*fewer blocks"):
        check_buildable(defaults | {"conv_blocks": 4}, (8, 8, 1))


def test_check_buildable_counts_the_stem() -> None:
    """28x28 through a stride-4 stem is 7x7: two blocks pool it to 1x1, a third to nothing, and the reason says so."""
    defaults = {name: spec.default for name, spec in PARAMETERS.items()}
    check_buildable(defaults | {"conv_blocks": 2, "stem_stride": 4}, (28, 28, 1))
    with pytest.raises(
        UnbuildableModel,
        match=r"pooling after conv block 3 shrinks the 28x28 input to nothing \(a stride-4 stem leaves 7x7\); "
        r"use fewer blocks, a smaller stem_stride or 'same' padding",
    ):
        check_buildable(defaults | {"conv_blocks": 3, "stem_stride": 4}, (28, 28, 1))
    check_buildable({"conv_blocks": 0, "stem_stride": 8}, (4, 4, 1))  # no blocks: no stem, defaults filled in


@pytest.mark.parametrize("input_shape", [(9, 9, 1), (30, 18, 3), (13, 6, 3)])
def test_check_buildable_agrees_with_keras_on_odd_sides(input_shape: tuple[int, int, int]) -> None:
    """'same' padding at stride 4 leaves ceil(side / 4), then each block halves it: every block count builds to
    the map Keras makes until the first that pools a side to nothing, which is refused."""
    after_stem = [-(-side // 4) for side in input_shape[:2]]
    for blocks in range(1, 5):
        params = small_cnn(conv_blocks=blocks, stem_stride=4, dense_layers=0) | {
            f"conv_filters_{b}": 4 for b in range(4)
        }
        pooled = tuple(side >> blocks for side in after_stem)
        if min(pooled) < 1:
            with pytest.raises(UnbuildableModel, match=f"pooling after conv block {blocks} .* stride-4 stem leaves"):
                build_model(params, input_shape, 3)
            return
        assert build_model(params, input_shape, 3).get_layer(f"pool{blocks - 1}").output.shape[1:3] == pooled
    pytest.fail("four blocks after a stride-4 stem should pool these inputs to nothing")


def test_check_buildable_accepts_what_keras_builds() -> None:
    """At the edge: 8 -> 6 -> 4 -> pool 2 with valid padding still builds, to a 2x2 map."""
    model = build_model(small_cnn(conv_blocks=1, conv_layers=2, conv_padding="valid", dense_layers=0), (8, 8, 1), 3)
    assert model.get_layer("pool0").output.shape == (None, 2, 2, 4)


def test_batch_norm_adds_layers_and_drops_biases() -> None:
    """Batch norm follows every convolution and hidden dense layer, which then have a kernel but no bias."""
    plain = build_model(small_cnn(conv_layers=2), (8, 8, 1), 3)
    assert not layers_of(plain, keras.layers.BatchNormalization)
    assert all(len(conv.weights) == 2 for conv in layers_of(plain, keras.layers.Conv2D))
    normed = build_model(small_cnn(conv_layers=2, conv_batch_norm=True, dense_batch_norm=True), (8, 8, 1), 3)
    assert len(layers_of(normed, keras.layers.BatchNormalization)) == 2 * 2 + 1
    convs = layers_of(normed, keras.layers.Conv2D)
    assert len(convs) == 4 and all(not conv.use_bias and len(conv.weights) == 1 for conv in convs)
    assert not normed.get_layer("dense0").use_bias
    assert normed.get_layer("classes").use_bias
    assert normed.get_layer("conv1_1_bn").input is normed.get_layer("conv1_1").output


def test_l2_adds_a_penalty_on_every_kernel() -> None:
    """l2 > 0 gives one regularization loss per kernel (2 convs, 1 hidden dense, the classifier); l2 = 0 none."""
    assert build_model(small_cnn(l2=0.0), (8, 8, 1), 3).losses == []
    penalized = build_model(small_cnn(l2=1e-3), (8, 8, 1), 3)
    assert len(penalized.losses) == 4
    assert all(float(loss) > 0 for loss in penalized.losses)


OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def test_every_schema_optimizer_is_known() -> None:
    """The table below covers exactly the optimizers the schema allows."""
    assert set(OPTIMIZERS) == set(PARAMETERS["optimizer"].options)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_compiles_and_steps(name: str) -> None:
    """Each optimizer name compiles to its Keras class at the given learning rate and can take a step."""
    model = build_model({"dense_layers": 1, "dense_units_0": 8, "optimizer": name, "learning_rate": 0.02}, (8, 8, 1), 3)
    assert type(model.optimizer) is OPTIMIZERS[name]
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.02)
    loss = model.train_on_batch(PIXELS, np.arange(16) % 3)
    assert np.isfinite(loss[0] if isinstance(loss, list) else loss)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 1


def test_compiled_for_sparse_labels_and_reports_epoch_metrics() -> None:
    """One epoch on 64 raw images reports exactly the metrics a search may monitor."""
    model = build_model(small_cnn(**ALL_AUGMENTATION), (8, 8, 1), 3)
    assert model.loss == "sparse_categorical_crossentropy"
    images = RNG.integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    labels = RNG.integers(0, 3, size=64)
    history = model.fit(
        images[:48], labels[:48], validation_data=(images[48:], labels[48:]), batch_size=16, epochs=1, verbose=0
    )
    assert set(EPOCH_METRICS) <= set(history.history)
    assert all(len(history.history[name]) == 1 and np.isfinite(history.history[name][0]) for name in EPOCH_METRICS)
    assert 0.0 <= history.history["val_accuracy"][0] <= 1.0


def test_average_head_pools_each_map_to_one_value() -> None:
    """head = average puts global average pooling where flatten was: the dense layer sees one value per filter."""
    flat = build_model(small_cnn(), (8, 8, 1), 3)
    averaged = build_model(small_cnn(head="average"), (8, 8, 1), 3)
    assert layers_of(flat, keras.layers.Flatten) and not layers_of(flat, keras.layers.GlobalAveragePooling2D)
    assert not layers_of(averaged, keras.layers.Flatten)
    assert averaged.get_layer("dense0").input.shape[-1] == 8  # the last block's filters, 2x2 maps averaged
    assert flat.get_layer("dense0").input.shape[-1] == 2 * 2 * 8
    dense_only = build_model({"conv_blocks": 0, "head": "average"}, (8, 8, 1), 3)  # no maps: flattened pixels
    assert dense_only.get_layer("flatten").output.shape[-1] == 64


def test_block_dropout_grows_by_block_up_to_its_cap() -> None:
    model = build_model(
        small_cnn(conv_blocks=3, conv_filters_2=8, conv_dropout=0.2, conv_dropout_growth=0.1), (8, 8, 1), 3
    )
    assert [layer.rate for layer in layers_of(model, keras.layers.Dropout)] == pytest.approx([0.2, 0.3, 0.4])
    capped = build_model(small_cnn(conv_dropout=0.8, conv_dropout_growth=0.5), (8, 8, 1), 3)
    assert [layer.rate for layer in layers_of(capped, keras.layers.Dropout)] == pytest.approx([0.8, 0.9])


def test_label_smoothing_spreads_each_label_over_every_class() -> None:
    """The compiled loss against an independent computation: -sum q log p with q = (1 - s) one-hot + s / classes."""
    model = build_model({"dense_layers": 0, "label_smoothing": 0.1}, (8, 8, 1), 3)
    labels = np.arange(16) % 3
    probabilities = np.asarray(model.predict(PIXELS, verbose=0), dtype=np.float64)
    smoothed = 0.9 * np.eye(3)[labels] + 0.1 / 3
    expected = float(np.mean(-np.sum(smoothed * np.log(probabilities), axis=1)))
    assert model.evaluate(PIXELS, labels, verbose=0)[0] == pytest.approx(expected, rel=1e-4)
    plain = build_model({"dense_layers": 0}, (8, 8, 1), 3)
    assert plain.loss == "sparse_categorical_crossentropy"


def test_a_model_with_smoothed_labels_saves_and_reloads(tmp_path: Path) -> None:
    model = build_model({"dense_layers": 0, "label_smoothing": 0.1}, (8, 8, 1), 3)
    model.optimizer.build(model.trainable_variables)  # saved with its slots, as a trained model is
    model.save(tmp_path / "smoothed.keras")
    for compile_ in (False, True):
        reloaded = keras.saving.load_model(tmp_path / "smoothed.keras", compile=compile_)
        assert np.allclose(reloaded.predict(PIXELS, verbose=0), model.predict(PIXELS, verbose=0))


def test_adamw_takes_its_weight_decay() -> None:
    model = build_model({"dense_layers": 0, "optimizer": "adamw", "weight_decay": 5e-4}, (8, 8, 1), 3)
    assert model.optimizer.weight_decay == pytest.approx(5e-4)
    default = build_model({"dense_layers": 0, "optimizer": "adamw"}, (8, 8, 1), 3)
    assert default.optimizer.weight_decay == pytest.approx(keras.optimizers.AdamW().weight_decay)
