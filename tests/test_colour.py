"""Colour photos of any size: real Fashion-MNIST images tinted (each image times a random RGB colour) and resized,
through the augmentation, the stem, the shipped CNN spaces, the ensemble, the promotion gates and the evaluation,
with 3 or 4 classes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import FixedTrial, TrialState

from search.backend import keras
from search.config.objectives import load_objective
from search.config.schema import PARAMETERS, Scalar
from search.config.spaces import Choice, Range, Space, load_space
from search.data import Images, SearchData, read_idx_pair
from search.data.batches import batches
from search.engine.candidate import Rejected, build_checked, space_build
from search.models.build import build_model
from search.models.sampling import sample
from search.pipelines.ensemble import (
    Candidate,
    Selection,
    candidate_predictions,
    ensemble_model,
    ensemble_proba,
    mirror_images,
    mirror_layer,
    select,
)
from search.record.sqlite_schema import prepare_new_store
from search.release.evaluate import confusion_figure, evaluate, misclassified_figure, precision_recall_figure
from search.release.gates import baseline_gate, champion_gate

optuna.logging.set_verbosity(optuna.logging.WARNING)

FOUR = {1: "Trouser", 7: "Sneaker", 8: "Bag", 9: "Ankle boot"}  # Fashion-MNIST labels kept, numbered 0-3 here
THREE = {1: "Trouser", 7: "Sneaker", 8: "Bag"}
SIZE = (40, 32)  # height, width: not square, not 28x28
CNN_SPACES = ("cnn", "cnn-fast", "cnn-quick", "cnn-best")
SHAPES = ((28, 28, 1), (64, 48, 3), (256, 256, 3))
NEW_PARAMETERS = {"stem_stride", "stem_filters", "aug_brightness", "aug_contrast"}
COLOUR_AUGMENTATION = {"aug_brightness": 0.3, "aug_contrast": 0.3, "aug_flip": True, "aug_translate": 0.1}
MEMBER = {"conv_blocks": 2, "conv_filters_0": 16, "conv_filters_1": 32, "head": "average", "dense_layers": 0}


@pytest.fixture(scope="module")
def fashion(fashion_dir: Path) -> Images:
    """Fashion-MNIST's real test part: 10,000 grayscale 28x28 images."""
    return read_idx_pair(fashion_dir, "test")


def photos(
    fashion: Images, classes: dict[int, str], per_class: int, size: tuple[int, int], seed: int, skip: int = 0
) -> Images:
    """`per_class` real images of each class (after the first `skip`), each tinted by a random RGB colour, resized
    to `size` and shuffled; labels renumbered from 0 in the order of `classes`."""
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([np.flatnonzero(fashion.y == label)[skip : skip + per_class] for label in classes])
    chosen = rng.permutation(chosen)
    colours = rng.uniform(0.2, 1.0, size=(len(chosen), 1, 1, 3))
    tinted = fashion.x[chosen].astype(np.float32) * colours
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(tinted, size))
    labels = np.searchsorted(np.array(sorted(classes)), fashion.y[chosen])
    return Images(np.clip(np.round(resized), 0, 255).astype(np.uint8), labels.astype(np.int64))


def grayscale(images: Images) -> Images:
    """The same images in one channel (the channels' mean)."""
    return Images(np.round(images.x.mean(axis=-1, keepdims=True)).astype(np.uint8), images.y)


def test_the_photos_are_colour_images_of_real_fashion(fashion: Images) -> None:
    images = photos(fashion, THREE, 8, SIZE, seed=0)
    assert images.x.shape == (24, *SIZE, 3) and images.x.dtype == np.uint8
    assert sorted(np.bincount(images.y)) == [8, 8, 8]
    channels = images.x.reshape(len(images), -1, 3).mean(axis=1)
    assert np.all(channels.std(axis=1) > 1)  # tinted: the channels differ in every image


@pytest.mark.parametrize("channels", [1, 3])
def test_each_augmentation_acts_on_colour_and_grayscale_in_training_only(fashion: Images, channels: int) -> None:
    """Brightness moves every pixel and channel of an image alike, contrast scales each channel about its mean
    (by one factor per image, below 1 or above), a flip is exact, translation and erasing change part of an
    image; all leave pixels alone at inference."""
    images = photos(fashion, FOUR, 8, SIZE, seed=1)
    x = (images if channels == 3 else grayscale(images)).x.astype(np.float32)
    params = COLOUR_AUGMENTATION | {"aug_erase": 1.0, "conv_blocks": 1, "conv_filters_0": 4}
    augment = build_model(params, x.shape[1:], 4).get_layer("augment")

    def run(name: str, training: bool = True) -> np.ndarray:
        return keras.ops.convert_to_numpy(augment.get_layer(name)(x, training=training))

    for layer in augment.layers:
        assert np.array_equal(run(layer.name, training=False), x), layer.name
    brightened = run("brightness")
    inside = (brightened > 0) & (brightened < 255)
    for image, after, kept in zip(x, brightened, inside, strict=True):
        assert np.ptp((after - image)[kept]) < 1e-3  # one shift for the whole image
    assert np.ptp([(a - i)[k].mean() for i, a, k in zip(x, brightened, inside, strict=True)]) > 1
    factors = []
    for image, after in zip(x, run("contrast"), strict=True):
        mean = image.mean(axis=(0, 1))
        kept = (after > 0) & (after < 255) & (np.abs(image - mean) > 20)
        ratios = ((after - mean) / (image - mean))[kept]
        assert np.ptp(ratios) < 1e-3  # one factor for every pixel and channel
        factors.append(ratios.mean())
    assert min(factors) < 1 < max(factors)  # contrast lowered and raised alike
    flipped = run("flip")
    mirrored = [np.array_equal(a, i[:, ::-1]) for i, a in zip(x, flipped, strict=True)]
    assert all(m or np.array_equal(a, i) for m, i, a in zip(mirrored, x, flipped, strict=True)) and any(mirrored)
    for name in ("translate", "erase"):
        changed = run(name) != x
        assert changed.any() and not changed.all(axis=(1, 2, 3)).any(), name  # some images, never every pixel
        assert run(name).min() >= 0 and run(name).max() <= 255


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("channels", [1, 3])
def test_a_trained_model_with_a_stem_and_every_augmentation_saves_and_loads(
    fashion: Images, channels: int, tmp_path: Path
) -> None:
    """Build, fit one small batch, save as .keras, load: the same predictions, from the same layers."""
    images = photos(fashion, THREE, 6, (64, 48), seed=2)
    images = images if channels == 3 else grayscale(images)
    params = MEMBER | COLOUR_AUGMENTATION | {"stem_stride": 2, "conv_batch_norm": True, "aug_erase": 0.5}
    model = build_model(params, images.x.shape[1:], 3)
    model.fit(batches(images.x, images.y, 18, shuffle=True), epochs=1, shuffle=False, verbose=0)
    before = model.predict(images.x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(images.x, verbose=0), before)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.get_layer("stem").strides == (2, 2)


def corner(space: Space, end: int) -> dict[str, Scalar]:
    """A FixedTrial's values putting every searched parameter at one end: 0 the first choice or the low end of
    each range, -1 the last choice or the high end; a per-block range in every block, a block's own range there."""
    every_block: dict[str, Scalar] = {}
    own: dict[str, Scalar] = {}
    for name, distribution in space.params.items():
        if isinstance(distribution, Choice):
            value = distribution.choices[end]
        elif isinstance(distribution, Range):
            value = distribution.low if end == 0 else distribution.high
        else:
            continue
        spec = PARAMETERS.get(name)
        if spec is not None and spec.per:
            every_block |= {f"{name}_{block}": value for block in range(int(PARAMETERS[spec.per].maximum))}
        else:
            own[name] = value
    return every_block | own


@pytest.mark.parametrize("space_name", CNN_SPACES)
def test_every_drawn_configuration_of_a_shipped_cnn_space_trains_or_is_refused(
    fashion: Images, space_name: str
) -> None:
    """Each shipped CNN space's two corners (every parameter at its low end, at its high end) and a seeded draw,
    on grayscale 28x28, colour 64x48 and colour 256x256 photos, through the trial core's build check: each builds
    and takes a training step, or is pruned with its reason (unbuildable, or above the objectives' max_params);
    none fails."""
    space = load_space(space_name)
    max_params = load_objective("fashion-mnist").max_params
    drawn = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    configurations = [sample(FixedTrial(corner(space, end)), space) for end in (0, -1)] + [sample(drawn, space)]
    outcomes: list[str] = []
    for params in configurations:
        for shape in SHAPES:
            images = photos(fashion, FOUR, 1, shape[:2], seed=4)
            images = images if shape[2] == 3 else grayscale(images)
            data = SearchData("photos", "test", images, images, tuple(FOUR.values()))
            try:
                model, _ = build_checked(space_build(params, data), max_params)
            except Rejected as rejected:
                assert rejected.outcome.state is TrialState.PRUNED, rejected.outcome.reason
                assert rejected.outcome.reason.startswith(("unbuildable: ", "too large: "))
                outcomes.append(rejected.outcome.reason)
                continue
            model.run_eagerly = True  # one step: tracing the graph would cost more than the step
            loss = model.train_on_batch(images.x[:2], images.y[:2])
            assert np.isfinite(loss[0] if isinstance(loss, list) else loss)
            outcomes.append("trained")
    assert outcomes.count("trained") >= 3
    if space_name == "cnn":  # its high corner: a stride-4 stem, then three blocks of two 5x5 valid convolutions
        assert outcomes[3] == (
            "unbuildable: conv block 1 layer 2 shrinks the 28x28 input to nothing "
            "(5x5 kernel, valid padding; a stride-4 stem leaves 7x7)"
        )
        assert outcomes[5] == "trained"


@pytest.mark.parametrize("space_name", ["cnn-fast", "cnn-quick", "cnn-best"])
def test_the_showcase_spaces_draw_no_stem_and_no_colour_augmentation(space_name: str) -> None:
    """`make search` and `make best`'s spaces never ask Optuna for the new parameters, which stay at their
    defaults: their models on Fashion-MNIST are what they were."""
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    trial = study.ask()
    params = sample(trial, space)
    assert NEW_PARAMETERS.isdisjoint(trial.params)
    assert (params["stem_stride"], params["aug_brightness"], params["aug_contrast"]) == (1, 0.0, 0.0)
    names = {layer.name for layer in build_model(params, (28, 28, 1), 10).layers}
    assert not names & {"stem", "stem_bn", "stem_relu"}


@pytest.fixture(scope="module")
def colour_data(fashion: Images) -> dict[str, Images]:
    """Four classes of tinted 40x32 photos: train and validation from the first images, test from later ones."""
    return {
        "train": photos(fashion, FOUR, 150, SIZE, seed=6),
        "val": photos(fashion, FOUR, 50, SIZE, seed=7, skip=150),
        "test": photos(fashion, FOUR, 50, SIZE, seed=8, skip=200),
    }


@pytest.fixture(scope="module")
def members(colour_data: dict[str, Images]) -> list[keras.Model]:
    """Two small CNNs trained briefly on the colour photos, one with a stride-2 stem."""
    train = colour_data["train"]
    trained = []
    for extra in ({}, {"stem_stride": 2, "aug_brightness": 0.2}):
        keras.utils.set_random_seed(0)
        model = build_model(MEMBER | {"learning_rate": 3e-3} | extra, SIZE + (3,), len(FOUR))
        model.fit(batches(train.x, train.y, 32, shuffle=True), epochs=4, shuffle=False, verbose=0)
        trained.append(model)
    return trained


def test_the_mirror_layer_flips_colour_images_exactly(colour_data: dict[str, Images]) -> None:
    x = colour_data["val"].x[:8]
    flipped = keras.ops.convert_to_numpy(mirror_layer(x.shape[1:])(x.astype(np.float32)))
    assert np.array_equal(flipped, mirror_images(x)) and not np.array_equal(flipped, x)
    assert np.array_equal(flipped[..., 1], x[:, :, ::-1, 1])  # every channel flipped, none mixed


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_the_ensemble_of_colour_models_selects_predicts_and_saves(
    colour_data: dict[str, Images], members: list[keras.Model], tmp_path: Path
) -> None:
    """On four classes of colour photos: the selection is never below its best candidate, and the ensemble as one
    Keras model (a mirrored member included) predicts the selection's average, saved and loaded too."""
    val = colour_data["val"]
    plain = np.stack([m.predict(val.x, verbose=0) for m in members])
    mirrored = np.stack([m.predict(mirror_images(val.x), verbose=0) for m in members])
    candidates = candidate_predictions(plain, mirrored)
    assert next(iter(candidates.values())).shape == (len(val), 4)
    selection = select(candidates, val.y)
    best = max(np.mean(p.argmax(axis=1) == val.y) for p in candidates.values())
    assert selection.val_accuracy >= best > 0.5  # four classes: chance is 0.25
    fixed = Selection({Candidate(0, False): 1, Candidate(1, True): 2}, 0.0, 0.0)
    model = ensemble_model(members, ["plain", "stem"], fixed, val.x.shape[1:])
    expected = ensemble_proba(fixed, candidates)
    np.testing.assert_allclose(model.predict(val.x, verbose=0), expected, atol=1e-6)
    model.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(val.x, verbose=0), expected, atol=1e-6)


def test_the_gates_judge_colour_models_of_four_classes(
    colour_data: dict[str, Images], members: list[keras.Model], tmp_path: Path
) -> None:
    """The baseline trains on the colour photos with four outputs and the gate compares test accuracies; the
    champion gate pairs the two members' answers on the same images."""
    train, test = colour_data["train"], colour_data["test"]
    data = SearchData("photos", "test", train, colour_data["val"], tuple(FOUR.values()))
    proba = members[1].predict(test.x, verbose=0)
    evaluation = evaluate(test.y, proba, data.class_names)
    said: list[str] = []
    prepare_new_store(tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    gate = baseline_gate(client, 2, 0, 0.0, data, train, test, evaluation, said.append)
    baseline = gate.figures["baseline_accuracy"]
    assert 0.5 < baseline <= 1.0 and said == [f"baseline: accuracy {baseline:.4f} (trained for 2 epochs)"]
    assert gate.passed == (evaluation.metrics["accuracy"] >= baseline)
    champion = champion_gate(members[0], "photos", test, evaluation)
    theirs = members[0].predict(test.x, verbose=0).argmax(axis=1) == test.y
    assert champion.figures["champion_accuracy"] == pytest.approx(np.mean(theirs))
    ours = evaluation.predicted == test.y
    assert champion.figures["mcnemar_candidate_only"] == np.sum(ours & ~theirs)


def test_the_evaluation_of_colour_images_has_a_row_per_class(
    colour_data: dict[str, Images], members: list[keras.Model]
) -> None:
    """Per-class metrics and a 4x4 confusion matrix; the figures draw, the gallery in colour."""
    test = colour_data["test"]
    proba = members[0].predict(test.x, verbose=0)
    names = tuple(FOUR.values())
    evaluation = evaluate(test.y, proba, names)
    assert evaluation.confusion.shape == (4, 4) and evaluation.confusion.to_numpy().sum() == len(test)
    assert list(evaluation.confusion.index) == list(names)
    assert np.array_equal(
        np.diag(evaluation.confusion.to_numpy()), np.bincount(test.y[evaluation.predicted == test.y], minlength=4)
    )
    assert set(names) <= set(evaluation.report.index)
    assert evaluation.report.loc["Bag", "support"] == 50
    gallery = misclassified_figure(test.x, test.y, proba, names, "photos")
    shown = [axes.images[0].get_array() for axes in gallery.axes if axes.images]
    wrong = np.flatnonzero(evaluation.predicted != test.y)
    assert len(wrong) and len(shown) == min(len(wrong), 36) and all(image.shape == (*SIZE, 3) for image in shown)
    surest = wrong[np.argmax(proba[wrong, evaluation.predicted[wrong]])]
    assert np.array_equal(shown[0], test.x[surest])  # the image itself, in colour, most confident error first
    for figure in (
        confusion_figure(evaluation.confusion, "photos"),
        precision_recall_figure(test.y, proba, names, "photos"),
        gallery,
    ):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
