"""search.data on real files: Debian's Fashion-MNIST IDX gz, Kaggle CSVs written from it, digits, user loaders."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.config.data_table import DataConfig
from search.config.objectives import Objective, load_objective
from search.data import IDX_FILES, Images, SearchData, load_search_data, read_idx_pair, read_kaggle_csv, reader
from search.errors import SetupError

FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
TEST_IMAGES, TEST_LABELS = IDX_FILES["test"]
TRAIN_IMAGES, TRAIN_LABELS = IDX_FILES["train"]


def rows(x: np.ndarray) -> set[bytes]:
    """Each image's bytes, to compare images across arrays."""
    return {row.tobytes() for row in x}


def one_line(error: pytest.ExceptionInfo[SetupError], *parts: str) -> str:
    """The error's message, checked to be one line holding every part."""
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def subsampled(objective: Objective, subsample: float | int) -> Objective:
    """The objective with data.subsample replaced."""
    return dataclasses.replace(objective, data=dataclasses.replace(objective.data, subsample=subsample))


@pytest.fixture(scope="module")
def fashion_train(fashion_dir: Path) -> Images:
    """The real training part, read once."""
    return read_idx_pair(fashion_dir, "train")


@pytest.fixture(scope="module")
def fashion_test(fashion_dir: Path) -> Images:
    """The real test part, read once."""
    return read_idx_pair(fashion_dir, "test")


@pytest.fixture(scope="module")
def raw_test_part(fashion_dir: Path) -> dict[str, bytes]:
    """The decompressed bytes of the real test-part files."""
    return {name: gzip.decompress((fashion_dir / name).read_bytes()) for name in (TEST_IMAGES, TEST_LABELS)}


@pytest.fixture(scope="module")
def objective() -> Objective:
    """The shipped fashion-mnist objective."""
    return load_objective("fashion-mnist")


@pytest.fixture(scope="module")
def search_data(objective: Objective, fashion_dir: Path) -> SearchData:
    """The shipped objective's search data from the real folder, loaded once."""
    return load_search_data(objective, data_dir=fashion_dir)


@pytest.fixture
def small_npz(tmp_path: Path, fashion_train: Images) -> Path:
    """20 real training images of each class, as (N, 28, 28) images and labels in an .npz."""
    picks = np.concatenate([np.flatnonzero(fashion_train.y == label)[:20] for label in range(10)])
    path = tmp_path / "small.npz"
    np.savez(path, x=fashion_train.x[picks, ..., 0], y=fashion_train.y[picks])
    return path


@pytest.fixture
def write_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Write `NAME.py` importable from tmp_path; the modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)

    yield write
    for name in written:
        sys.modules.pop(name, None)


def write_objective(path: Path, data_lines: str) -> Objective:
    """An objective TOML with the given [data] lines, loaded."""
    path.write_text(f"[data]\n{data_lines}\n")
    return load_objective(str(path))


def write_kaggle_csv(path: Path, images: Images, labelled: bool = True) -> Path:
    """Images as a Kaggle-layout CSV: label,pixel1,...,pixel784."""
    frame = pd.DataFrame(
        images.x.reshape(len(images), -1), columns=[f"pixel{i}" for i in range(1, images.x[0].size + 1)]
    )
    if labelled:
        frame.insert(0, "label", images.y)
    frame.to_csv(path, index=False)
    return path


# Real IDX files


def test_train_part_is_60000_balanced_uint8_images(fashion_train: Images) -> None:
    """The training part: 60,000 28x28x1 uint8 images, int64 labels 0..9, 6,000 of each."""
    assert fashion_train.x.shape == (60000, 28, 28, 1)
    assert fashion_train.x.dtype == np.uint8
    assert fashion_train.y.shape == (60000,)
    assert fashion_train.y.dtype == np.int64
    assert fashion_train.y.min() == 0 and fashion_train.y.max() == 9
    assert np.bincount(fashion_train.y).tolist() == [6000] * 10
    assert fashion_train.x.max() == 255


def test_test_part_is_10000_images_in_file_order(fashion_test: Images, raw_test_part: dict[str, bytes]) -> None:
    """The test part: 10,000 images and labels, exactly the files' bytes after their headers."""
    assert fashion_test.x.shape == (10000, 28, 28, 1)
    assert len(fashion_test) == 10000
    assert np.bincount(fashion_test.y).tolist() == [1000] * 10
    assert fashion_test.x.tobytes() == raw_test_part[TEST_IMAGES][16:]
    assert fashion_test.y.astype(np.uint8).tobytes() == raw_test_part[TEST_LABELS][8:]


# The search data of the shipped objective


def test_search_data_splits_54000_and_6000_stratified(search_data: SearchData, fashion_dir: Path) -> None:
    """A tenth is kept for validation, 600 images of each class; the class names are Fashion-MNIST's."""
    assert len(search_data.train) == 54000
    assert len(search_data.val) == 6000
    assert np.bincount(search_data.val.y, minlength=10).tolist() == [600] * 10
    assert np.bincount(search_data.train.y, minlength=10).tolist() == [5400] * 10
    assert search_data.class_names == FASHION_NAMES
    assert search_data.n_classes == 10
    assert search_data.input_shape == (28, 28, 1)
    assert search_data.train.x.dtype == np.uint8
    assert search_data.source == str(fashion_dir)


def test_train_and_validation_partition_the_training_part(search_data: SearchData, fashion_train: Images) -> None:
    """No image is in both train and validation, and together they are the whole training part."""
    train_rows, val_rows = rows(search_data.train.x), rows(search_data.val.x)
    assert not train_rows & val_rows
    assert train_rows | val_rows == rows(fashion_train.x)


def test_same_seed_gives_the_same_split(search_data: SearchData, objective: Objective, fashion_dir: Path) -> None:
    """Loading again with the same seed gives identical arrays."""
    again = load_search_data(objective, data_dir=fashion_dir)
    assert np.array_equal(again.val.x, search_data.val.x)
    assert np.array_equal(again.val.y, search_data.val.y)
    assert np.array_equal(again.train.y, search_data.train.y)


def test_another_seed_gives_another_stratified_split(
    search_data: SearchData, objective: Objective, fashion_dir: Path
) -> None:
    """seed = 1 picks other validation images, still 600 of each class."""
    other = load_search_data(dataclasses.replace(objective, seed=1), data_dir=fashion_dir)
    assert len(other.val) == 6000
    assert np.bincount(other.val.y, minlength=10).tolist() == [600] * 10
    assert rows(other.val.x) != rows(search_data.val.x)


@pytest.mark.parametrize(("subsample", "trained"), [(0.1, 5400), (2000, 2000)], ids=["fraction", "count"])
def test_subsample_thins_the_train_split_alone(
    objective: Objective,
    fashion_dir: Path,
    fashion_train: Images,
    search_data: SearchData,
    subsample: float | int,
    trained: int,
) -> None:
    """A fraction or a count of the train split, equally many of each class; validation keeps all its 6,000."""
    data = load_search_data(subsampled(objective, subsample), data_dir=fashion_dir)
    assert len(data.train) == trained
    assert np.bincount(data.train.y, minlength=10).tolist() == [trained // 10] * 10
    assert rows(data.val.x) == rows(search_data.val.x)  # the same validation images whatever the subsample
    assert rows(data.train.x) <= rows(search_data.train.x) and not rows(data.train.x) & rows(data.val.x)
    assert rows(data.train.x) | rows(data.val.x) <= rows(fashion_train.x)


def test_search_reads_only_the_train_part(
    tmp_path: Path, small_npz: Path, write_loader: Callable[[str, str], None]
) -> None:
    """load_search_data asks a loader for the train part alone, never the test part."""
    write_loader(
        "recording_loader",
        (
            "import numpy as np\n"
            "requested = []\n"
            "def load(part):\n"
            "    requested.append(part)\n"
            f"    data = np.load({str(small_npz)!r})\n"
            "    return data['x'], data['y']\n"
        ),
    )
    objective = write_objective(tmp_path / "recorded.toml", 'source = "loader"\nloader = "recording_loader:load"')
    data = load_search_data(objective)
    assert sys.modules["recording_loader"].requested == ["train"]
    assert len(data.train) + len(data.val) == 200
    assert data.input_shape == (28, 28, 1)
    assert data.class_names == tuple(str(label) for label in range(10))
    assert rows(data.train.x) | rows(data.val.x) == rows(np.load(small_npz)["x"][..., np.newaxis])


# Kaggle CSV


def test_kaggle_csv_round_trips_real_images(tmp_path: Path, fashion_train: Images) -> None:
    """500 real images written as a Kaggle CSV read back exactly."""
    first = Images(fashion_train.x[:500], fashion_train.y[:500])
    read = read_kaggle_csv(write_kaggle_csv(tmp_path / "train.csv", first))
    assert read.x.dtype == np.uint8 and read.y.dtype == np.int64
    assert np.array_equal(read.x, first.x)
    assert np.array_equal(read.y, first.y)


def test_csv_objective_searches_the_csv_images(tmp_path: Path, fashion_train: Images) -> None:
    """An objective with source = "csv" splits exactly the CSV's images, under Fashion-MNIST's names."""
    first = Images(fashion_train.x[:500], fashion_train.y[:500])
    path = write_kaggle_csv(tmp_path / "train.csv", first)
    data = load_search_data(write_objective(tmp_path / "csv.toml", f"source = \"csv\"\ntrain = '{path}'"))
    assert (len(data.train), len(data.val)) == (450, 50)
    assert data.class_names == FASHION_NAMES
    assert data.source == str(path)
    split = sorted(
        zip(
            map(bytes, np.concatenate([data.train.x, data.val.x])),
            np.concatenate([data.train.y, data.val.y]).tolist(),
            strict=False,
        )
    )
    assert split == sorted(zip(map(bytes, first.x), first.y.tolist(), strict=False))


def test_unlabelled_csv_reads_with_labels_minus_one(tmp_path: Path, fashion_test: Images) -> None:
    """A CSV without a label column, read as unlabelled, gives its images and labels -1."""
    first = Images(fashion_test.x[:10], fashion_test.y[:10])
    read = read_kaggle_csv(write_kaggle_csv(tmp_path / "test.csv", first, labelled=False), labelled=False)
    assert np.array_equal(read.x, first.x)
    assert read.y.tolist() == [-1] * 10


def _set_cell(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype(object)
        frame.loc[row, column] = value
        return frame

    return change


CSV_DEFECTS = [
    pytest.param(lambda f: f.rename(columns={"pixel784": "pix784"}), ("Kaggle's layout",), id="misnamed-column"),
    pytest.param(lambda f: f.drop(columns="pixel784"), ("got 784 columns", "Kaggle's layout"), id="not-a-square"),
    pytest.param(lambda f: f.drop(columns="label"), ("columns must be label,", "Kaggle's layout"), id="no-label"),
    pytest.param(
        _set_cell(3, "pixel10", "dark"), ("row 5 column pixel10", "'dark'", "must be numeric"), id="non-numeric"
    ),
    pytest.param(
        _set_cell(0, "label", 10), ("labels must lie in 0..9", "found 0 to 10", "fix the labels"), id="label-10"
    ),
    pytest.param(_set_cell(7, "pixel300", 256), ("0 to 255", "found 0 to 256", "rescale"), id="pixel-256"),
    pytest.param(_set_cell(7, "pixel300", -1), ("0 to 255", "found -1 to", "rescale"), id="negative-pixel"),
    pytest.param(_set_cell(7, "pixel300", 12.5), ("whole numbers", "rescale"), id="fractional-pixel"),
    pytest.param(lambda f: f.iloc[:0], ("no rows",), id="header-only"),
]


@pytest.mark.parametrize(("defect", "fragments"), CSV_DEFECTS)
def test_malformed_csv_is_a_setup_error(
    tmp_path: Path, fashion_train: Images, defect: Callable[[pd.DataFrame], pd.DataFrame], fragments: tuple[str, ...]
) -> None:
    """A CSV derived from real images but malformed stops with one line naming the file and the fix."""
    good = write_kaggle_csv(tmp_path / "good.csv", Images(fashion_train.x[:20], fashion_train.y[:20]))
    bad = tmp_path / "bad.csv"
    defect(pd.read_csv(good)).to_csv(bad, index=False)
    with pytest.raises(SetupError) as error:
        read_kaggle_csv(bad)
    one_line(error, str(bad), *fragments)


# Corrupt IDX files


def _truncated_gz(folder: Path, raw: dict[str, bytes]) -> Path:
    path = folder / TEST_IMAGES
    path.write_bytes(path.read_bytes()[:2_000_000])
    return path


def _truncated_content(folder: Path, raw: dict[str, bytes]) -> Path:
    path = folder / TEST_IMAGES
    path.write_bytes(gzip.compress(raw[TEST_IMAGES][: len(raw[TEST_IMAGES]) // 2], compresslevel=1))
    return path


def _header_cut_short(folder: Path, raw: dict[str, bytes]) -> Path:
    path = folder / TEST_IMAGES
    path.write_bytes(gzip.compress(raw[TEST_IMAGES][:10]))
    return path


def _swapped(folder: Path, raw: dict[str, bytes]) -> Path:
    images, labels = folder / TEST_IMAGES, folder / TEST_LABELS
    image_bytes, label_bytes = images.read_bytes(), labels.read_bytes()
    images.write_bytes(label_bytes)
    labels.write_bytes(image_bytes)
    return images


def _fewer_labels(folder: Path, raw: dict[str, bytes]) -> Path:
    labels = raw[TEST_LABELS]
    (folder / TEST_LABELS).write_bytes(gzip.compress(labels[:4] + struct.pack(">I", 9999) + labels[8 : 8 + 9999]))
    return folder


def _missing_labels(folder: Path, raw: dict[str, bytes]) -> Path:
    (folder / TEST_LABELS).unlink()
    return folder / TEST_LABELS


def _not_gzip(folder: Path, raw: dict[str, bytes]) -> Path:
    path = folder / TEST_IMAGES
    path.write_bytes(raw[TEST_IMAGES])
    return path


IDX_DEFECTS = [
    pytest.param(_truncated_gz, ("cannot read as gzip", "fetch the file again"), id="truncated-gz"),
    pytest.param(_truncated_content, ("its header promises 7840000", "fetch it again"), id="truncated-content"),
    pytest.param(_header_cut_short, ("header cut short", "fetch it again"), id="header-cut-short"),
    pytest.param(_swapped, ("magic 0x0801", "expected 0x0803", "right file"), id="swapped-magic"),
    pytest.param(_fewer_labels, ("10000 images but 9999 labels", "fetch them again"), id="fewer-labels"),
    pytest.param(_missing_labels, ("No such file", "fetch the file again"), id="missing-file"),
    pytest.param(_not_gzip, ("cannot read as gzip", "fetch the file again"), id="not-gzip"),
]


@pytest.mark.parametrize(("defect", "fragments"), IDX_DEFECTS)
def test_corrupt_idx_is_a_setup_error(
    tmp_path: Path,
    fashion_dir: Path,
    raw_test_part: dict[str, bytes],
    defect: Callable[[Path, dict[str, bytes]], Path],
    fragments: tuple[str, ...],
) -> None:
    """A copy of the real test part with one file spoiled stops with one line naming it and the fix."""
    for name in (TEST_IMAGES, TEST_LABELS):
        shutil.copyfile(fashion_dir / name, tmp_path / name)
    offending = defect(tmp_path, raw_test_part)
    with pytest.raises(SetupError) as error:
        read_idx_pair(tmp_path, "test")
    one_line(error, str(offending), *fragments)


@pytest.mark.parametrize("present", [(), (TRAIN_IMAGES,)], ids=["empty", "labels-missing"])
@pytest.mark.parametrize("via", ["flag", "objective"])
def test_data_dir_without_the_files_names_folder_and_files(
    tmp_path: Path, fashion_dir: Path, objective: Objective, present: tuple[str, ...], via: str
) -> None:
    """An explicit folder lacking the training files: the error names it, the files it needs, and the fix."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name in present:
        shutil.copyfile(fashion_dir / name, folder / name)
    with pytest.raises(SetupError) as error:
        if via == "flag":
            load_search_data(objective, data_dir=folder)
        else:
            load_search_data(dataclasses.replace(objective, data=dataclasses.replace(objective.data, dir=folder)))
    one_line(error, str(folder), TRAIN_IMAGES, TRAIN_LABELS, "--data-dir", "data.dir")


# scikit-learn digits


def test_digits_objective_gives_scaled_8x8_images_apart_from_its_test_part() -> None:
    """Digits: (8, 8, 1) uint8 pixels up to 255, 10 classes, and no test image in the search data."""
    objective = load_objective("digits")
    data = load_search_data(objective)
    assert data.input_shape == (8, 8, 1)
    assert data.train.x.dtype == np.uint8
    assert int(max(data.train.x.max(), data.val.x.max())) == 255
    assert data.n_classes == 10
    assert (len(data.train), len(data.val)) == (1150, 287)
    read, where = reader(objective.data)
    assert where == "scikit-learn digits"
    test = read("test")
    assert len(test) == 360
    assert not rows(test.x) & (rows(data.train.x) | rows(data.val.x))


# User loaders


LOADER_DEFECTS = [
    pytest.param("x.reshape(len(x), -1), y", id="flat-images"),
    pytest.param("x, y[:-1]", id="fewer-labels"),
    pytest.param("x.astype(np.int64) * 2, y", id="pixels-above-255"),
    pytest.param("x.astype(np.int64) - 1, y", id="negative-pixels"),
    pytest.param("x / 255.0, y", id="pixels-scaled-to-one"),
    pytest.param("x[:0], y[:0]", id="no-images"),
]


@pytest.mark.parametrize("returned", LOADER_DEFECTS)
def test_loader_returning_bad_images_is_a_setup_error(
    small_npz: Path,
    write_loader: Callable[[str, str], None],
    objective: Objective,
    returned: str,
    request: pytest.FixtureRequest,
) -> None:
    """A loader whose images have the wrong shape, count or pixel range stops with one line naming it."""
    module = "bad_loader_" + request.node.callspec.id.replace("-", "_")
    write_loader(
        module,
        (
            "import numpy as np\n"
            "def load(part):\n"
            f"    data = np.load({str(small_npz)!r})\n"
            "    x, y = data['x'], data['y']\n"
            f"    return {returned}\n"
        ),
    )
    bad = dataclasses.replace(objective, data=DataConfig(source="loader", loader=f"{module}:load"))
    with pytest.raises(SetupError) as error:
        load_search_data(bad)
    one_line(error, f"loader '{module}:load'", "0-255 pixels")


@pytest.mark.parametrize("dotted", ["no_such_module_for_atelier:load", "search.data:no_such_loader"])
def test_loader_that_cannot_be_imported_is_named(objective: Objective, dotted: str) -> None:
    """A missing module or function is a SetupError naming the loader and its expected form."""
    bad = dataclasses.replace(objective, data=DataConfig(source="loader", loader=dotted))
    with pytest.raises(SetupError) as error:
        load_search_data(bad)
    one_line(error, f"loader '{dotted}'", "cannot be imported", "package.module:function")


def test_loader_that_fails_as_it_loads_is_named(write_loader: Callable[[str, str], None], objective: Objective) -> None:
    """A loader module that raises on import is a SetupError naming it, not a traceback."""
    write_loader("broken_loader", "raise RuntimeError('no database')\ndef load(part):\n    pass\n")
    bad = dataclasses.replace(objective, data=DataConfig(source="loader", loader="broken_loader:load"))
    with pytest.raises(SetupError) as error:
        load_search_data(bad)
    one_line(error, "loader 'broken_loader:load'", "RuntimeError: no database")
