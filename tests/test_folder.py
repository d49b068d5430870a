"""A folder of image files in a user's layout: listing, held-out test files, decoding every mode, the cache,
memory against streaming. Real Fashion-MNIST images written as files (tests/image_folders.py)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
from image_folders import fashion_images, write_folder
from PIL import Image

from search.config.data_table import DataConfig
from search.config.objectives import Objective, images_objective
from search.data import CachedImages, Images, load_search_data, reader
from search.data.decode import ImageFormat, decode_image
from search.data.folder import folder_parts, list_folder
from search.errors import SetupError


def folder_objective(root: Path, **data: object) -> Objective:
    return Objective(name="photos", path=root, data=DataConfig(source="folder", train=root, **data))  # type: ignore[arg-type]


def one_line(error: pytest.ExceptionInfo[SetupError], *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 30 real images: tinted and gray, PNG and JPEG, of five sizes, with a notes and a hidden file."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    write_folder(root, per_class=30, classes=3)
    return root


def test_classes_are_the_sorted_folder_names_and_other_files_are_counted_as_ignored(photos: Path) -> None:
    listing = list_folder(photos)
    assert listing.class_names == ("pullover", "t-shirt-top", "trouser")
    assert len(listing) == 90 and np.bincount(listing.labels).tolist() == [30, 30, 30]
    assert sorted(listing.ignored) == ["t-shirt-top/notes.txt", "trouser/.DS_Store"]
    pairs = zip(listing.files, listing.labels, strict=True)
    assert all(name.split("/")[0] == listing.class_names[label] for name, label in pairs)


def test_the_held_out_test_files_are_stratified_fixed_and_never_in_the_train_part(photos: Path) -> None:
    parts = folder_parts(folder_objective(photos, test_fraction=0.2).data)
    again = folder_parts(folder_objective(photos, test_fraction=0.2).data)
    assert parts.held_out and parts.test.files == again.test.files
    assert not set(parts.test.files) & set(parts.train.files)
    assert len(parts.test) == 18 and np.bincount(parts.test.labels).tolist() == [6, 6, 6]
    seeded = dataclasses.replace(folder_objective(photos, test_fraction=0.2), seed=7)
    assert load_search_data(seeded).details["held_out_files"] == list(parts.test.files)  # not the search's seed


def test_colour_is_rgb_when_any_image_is_and_the_size_defaults_to_the_median(photos: Path, tmp_path: Path) -> None:
    parts = folder_parts(folder_objective(photos).data)
    assert parts.image_format.channels == 3 and parts.modes["colour"] and parts.modes["grayscale"]
    assert parts.image_format.size == (36, 40)  # the median of heights 28, 32, 36, 48, 56 and of widths 24 ... 64
    gray = tmp_path / "gray"
    write_folder(gray, per_class=4, classes=2, colour=False, mixed_sizes=False, extras=False)
    assert folder_parts(folder_objective(gray).data).image_format.shape == (28, 28, 1)
    assert folder_parts(folder_objective(photos, color="grayscale").data).image_format.channels == 1


def test_every_mode_and_format_decodes_to_the_shape_asked_for(tmp_path: Path) -> None:
    x, _ = fashion_images()
    gray = Image.fromarray(x[0], mode="L")
    rgb = Image.merge("RGB", (gray, gray.point(lambda v: v // 2), gray.point(lambda v: 255 - v)))
    files = {
        "gray.png": gray,
        "rgb.jpg": rgb,
        "rgba.png": rgb.convert("RGBA"),
        "palette.png": rgb.convert("P"),
        "la.png": gray.convert("LA"),
        "bitmap.bmp": rgb,
        "deep.png": Image.fromarray(x[0].astype(np.uint16) * 257),
        "cmyk.jpg": rgb.convert("CMYK"),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    frames = [rgb, Image.new("RGB", rgb.size, (255, 0, 0))]
    frames[0].save(tmp_path / "animated.gif", save_all=True, append_images=frames[1:])
    for name in [*files, "animated.gif"]:
        for channels in (1, 3):
            pixels = decode_image(tmp_path / name, ImageFormat((56, 56), channels, "stretch"))
            assert pixels.shape == (56, 56, channels) and pixels.dtype == np.uint8, name
    first = decode_image(tmp_path / "animated.gif", ImageFormat((28, 28), 3, "stretch"))
    assert first[..., 0].mean() < 200  # the first frame, not the red one
    deep = decode_image(tmp_path / "deep.png", ImageFormat((28, 28), 1, "stretch"))
    assert np.abs(deep[..., 0].astype(int) - x[0]).max() <= 1  # 16 bits brought back to 8


def test_pad_keeps_the_whole_image_crop_its_centre_and_stretch_neither(tmp_path: Path) -> None:
    wide = Image.fromarray(np.full((20, 60), 200, dtype=np.uint8), mode="L")
    wide.save(tmp_path / "wide.png")
    padded = decode_image(tmp_path / "wide.png", ImageFormat((30, 30), 1, "pad"))[..., 0]
    cropped = decode_image(tmp_path / "wide.png", ImageFormat((30, 30), 1, "crop"))[..., 0]
    stretched = decode_image(tmp_path / "wide.png", ImageFormat((30, 30), 1, "stretch"))[..., 0]
    assert padded[0].max() == 0 and padded[15].min() == 200  # black bars above and below, the image between
    assert cropped.min() == 200 and stretched.min() == 200


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda root: None, "no such folder; fix data.train"),
        (lambda root: root.write_text("x"), "is a file, not a folder"),
        (lambda root: write_folder(root, per_class=3, classes=1, extras=False), "a single class folder (t-shirt-top)"),
        (lambda root: (root / "a").mkdir(parents=True) or (root / "b").mkdir(), "an empty class folder"),
    ],
    ids=["missing", "a-file", "one-class", "empty-class"],
)
def test_a_tree_that_cannot_train_a_classifier_is_one_line(tmp_path: Path, make, problem: str) -> None:
    root = tmp_path / "photos"
    make(root)
    with pytest.raises(SetupError) as error:
        load_search_data(folder_objective(root))
    one_line(error, problem)


def test_a_test_folder_with_other_classes_is_refused(photos: Path, tmp_path: Path) -> None:
    other = tmp_path / "test"
    write_folder(other, per_class=2, classes=2, extras=False, offset=40)
    read, _ = reader(folder_objective(photos, test=other).data)
    with pytest.raises(SetupError) as error:
        read("test")
    one_line(error, "class folders t-shirt-top, trouser differ from the train folder's pullover, t-shirt-top, trouser")


def test_an_image_that_does_not_decode_is_one_line_or_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_folder(root, per_class=6, classes=2, unreadable=True)
    cache = tmp_path / "store" / "image-cache"
    with pytest.raises(SetupError) as error:
        load_search_data(folder_objective(root, test_fraction=0.3), cache_root=cache)
    one_line(error, "broken.jpg: cannot decode this image", "skip_unreadable = true in the objective's [data]")
    assert not (tmp_path / "store").exists()  # nothing written
    skipping = folder_objective(root, test_fraction=0.3, skip_unreadable=True)
    data = load_search_data(skipping, cache_root=cache)
    assert data.details["skipped"] == ["t-shirt-top/broken.jpg"] and len(data.train) + len(data.val) == 8


def test_streamed_and_in_memory_data_have_the_same_splits_and_pixels(photos: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    memory = load_search_data(folder_objective(photos, subsample=40), cache_root=cache)
    streamed = load_search_data(folder_objective(photos, subsample=40, load="stream"), cache_root=cache)
    forced = load_search_data(folder_objective(photos, subsample=40, memory_limit=1000), cache_root=cache)
    assert isinstance(memory.train, Images) and isinstance(streamed.train, CachedImages)
    assert isinstance(forced.train, CachedImages)  # load = "auto" over its memory limit
    for part in ("train", "val"):
        kept, read = getattr(memory, part), getattr(streamed, part)
        assert np.array_equal(kept.y, read.y) and np.array_equal(kept.x, read.arrays())
        batched = np.concatenate([x for x, _ in read.batches(16, shuffle=False).as_numpy_iterator()])
        assert np.array_equal(batched, kept.x)
        mirrored = np.concatenate([x for x, _ in read.batches(16, shuffle=False, mirror=True).as_numpy_iterator()])
        assert np.array_equal(mirrored, kept.x[:, :, ::-1])
    epochs = [np.concatenate([y for _, y in streamed.train.batches(16, shuffle=True).as_numpy_iterator()])] * 1
    assert sorted(epochs[0].tolist()) == sorted(memory.train.y.tolist())


def test_the_cache_is_decoded_once_and_a_streamed_plan_pickles_no_images(photos: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    streamed = load_search_data(folder_objective(photos, load="stream"), cache_root=cache)
    records = Path(streamed.details["cache"]) / "images.u8"
    written = records.stat().st_mtime_ns
    load_search_data(folder_objective(photos, load="memory"), cache_root=cache)
    assert records.stat().st_mtime_ns == written and len(list(cache.iterdir())) == 1
    decoded = records.stat().st_size
    assert len(pickle.dumps(streamed)) < decoded / 5  # indices and labels travel to workers, not pixels


def test_the_images_objective_is_named_after_its_folder(photos: Path) -> None:
    objective = images_objective(photos)
    assert objective.name == "images-photos" and objective.data.source == "folder" and objective.data.train == photos
