"""Issue 4's table of bad inputs, each run through the whole command line in an empty working folder.

Every case must end with one line on stderr that names the problem and the fix, exit status 2,
no traceback, and nothing written: the folder (mlruns/ above all) is exactly as the case left it.
Case ids start with their category, so `pytest -q` counts what was tried and passed per category.
No case may reach the search loop: `search.engine.study.optimize` is replaced by a tripwire.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import search.engine.study
from search.data import IDX_FILES, IDX_PLACES, read_idx_pair

FASHION = IDX_PLACES[0]
TRAIN_IMAGES, TRAIN_LABELS = IDX_FILES["train"]
TEST_IMAGES, TEST_LABELS = IDX_FILES["test"]
IMAGES_MAGIC, LABELS_MAGIC = 0x803, 0x801
PG_CLOSED = "postgresql://atelier:secret@127.0.0.1:1/nowhere"  # port 1: nothing listens
DIGITS = ("run", "--objective", "digits")
DIR = object()  # a files entry that makes an empty folder

Content = str | bytes | Callable[[], bytes] | object


# Files a case writes


@functools.cache
def real(name: str) -> bytes:
    """A real Fashion-MNIST gz file, read once."""
    return (FASHION / name).read_bytes()


@functools.cache
def raw(name: str) -> bytes:
    """A real Fashion-MNIST file, decompressed, read once."""
    return gzip.decompress(real(name))


def idx(magic: int, dims: tuple[int, ...], body: bytes | None = None) -> bytes:
    """A gz IDX file: magic, dimensions, then `body` (zeros of the right size by default)."""
    size = 1
    for dim in dims:
        size *= dim
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    return gzip.compress(header + (bytes(size) if body is None else body), compresslevel=1)


def fashion(
    images: Callable[[], bytes] | None = None, labels: Callable[[], bytes] | None = None, folder: str = "fm"
) -> dict[str, Content]:
    """A data folder holding the real 10,000-image test part under the training part's names, one file spoilt."""
    return {
        f"{folder}/{TRAIN_IMAGES}": images or (lambda: real(TEST_IMAGES)),
        f"{folder}/{TRAIN_LABELS}": labels or (lambda: real(TEST_LABELS)),
    }


def truncated_gz(name: str, keep: int) -> Callable[[], bytes]:
    """The first `keep` bytes of a real gz file: the gzip stream ends early."""
    return lambda: real(name)[:keep]


def relabelled(count: int) -> Callable[[], bytes]:
    """The real test labels with a header and body for `count` labels."""
    return lambda: gzip.compress(struct.pack(">II", LABELS_MAGIC, count) + raw(TEST_LABELS)[8 : 8 + count])


def csv_text(
    rows: int = 20,
    labels: list[object] | None = None,
    cells: dict[tuple[int, str], object] | None = None,
    header: list[str] | None = None,
) -> str:
    """A Kaggle-layout CSV (label,pixel1,...,pixel784) of `rows` small images, labels 0..9 in turn."""
    header = header or ["label"] + [f"pixel{i}" for i in range(1, 785)]
    labels = labels or [row % 10 for row in range(rows)]
    lines = [",".join(header)]
    for row in range(rows):
        values: dict[str, object] = {"label": labels[row]}
        values |= {column: (row * 7 + i) % 256 for i, column in enumerate(header) if column != "label"}
        values |= {column: value for (r, column), value in (cells or {}).items() if r == row}
        lines.append(",".join(str(values[column]) for column in header))
    return "\n".join(lines) + "\n"


def csv_objective(extra: str = "") -> str:
    """An objective that searches train.csv next to it."""
    return f'[data]\nsource = "csv"\ntrain = "train.csv"\n{extra}'


def objective_with(search: str = "", data: str = 'source = "digits"\n') -> str:
    """A digits objective with extra lines in [data] or [search]."""
    return f"[data]\n{data}" + (f"[search]\n{search}" if search else "")


def csv_case(text: str, extra: str = "") -> dict[str, Content]:
    return {"o.toml": csv_objective(extra), "train.csv": text}


PIXELS = [f"pixel{i}" for i in range(1, 785)]


@functools.cache
def fashion_test_part() -> tuple[np.ndarray, np.ndarray]:
    """The real Fashion-MNIST test images (28x28) and their labels, read once."""
    images = read_idx_pair(FASHION, "test")
    return images.x[..., 0], images.y


def photo(label: int, nth: int = 0, keep: int | None = None) -> Callable[[], bytes]:
    """The `nth` real image of a Fashion-MNIST class as a user's file: PNG for even `nth`, JPEG for odd, one in
    three tinted RGB, sizes varying; `keep` cuts the file to its first bytes (the header decodes, the rest not)."""

    def make() -> bytes:
        x, y = fashion_test_part()
        pixels = x[int(np.flatnonzero(y == label)[nth])]
        image = Image.fromarray(pixels, mode="L")
        if nth % 3 == 1:
            image = Image.fromarray((pixels[..., None] * np.array([0.9, 0.6, 0.3])).astype(np.uint8), mode="RGB")
        image = image.resize(((28, 28), (40, 32), (56, 56))[nth % 3], Image.Resampling.BILINEAR)
        out = io.BytesIO()
        image.save(out, format="JPEG" if nth % 2 else "PNG", quality=95)
        return out.getvalue()[:keep]

    return make


def photos(root: str = "photos", classes: dict[str, int] | None = None, per_class: int = 4) -> dict[str, Content]:
    """A class-per-folder tree of real images: `per_class` files for each folder name -> Fashion-MNIST label."""
    return {
        f"{root}/{name}/{name}_{nth:03d}.{'jpg' if nth % 2 else 'png'}": photo(label, nth)
        for name, label in (classes or {"shirt": 6, "trouser": 1}).items()
        for nth in range(per_class)
    }


def folder_objective(extra: str = "", train: str = 'train = "photos"\n') -> dict[str, Content]:
    """An objective searching the class folders of photos/ next to it, with the tree itself."""
    return {"o.toml": f'[data]\nsource = "folder"\n{train}{extra}'} | photos()


# The table


def case(
    case_id: str,
    *args: str,
    files: dict[str, Content] | None = None,
    problem: str | tuple[str, ...],
    fix: str | None = None,
    absent: tuple[str, ...] = (),
    xfail: str | None = None,
):
    """One bad input: arguments, files written first, what the error line must name (problem, fix) and not show."""
    problems = (problem,) if isinstance(problem, str) else problem
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(list(args), files or {}, problems, fix, absent, id=case_id, marks=marks)


CASES = [
    # unknown space or objective
    case(
        "unknown-space-name",
        *DIGITS,
        "--space",
        "nosuch",
        problem="unknown space 'nosuch'",
        fix="choose one of: cnn, cnn-best, cnn-fast, cnn-quick, dense",
    ),
    case(
        "unknown-objective-name",
        "run",
        "--objective",
        "mnist",
        problem="unknown objective 'mnist'",
        fix="choose one of: digits, fashion-mnist",
    ),
    case(
        "unknown-space-path",
        *DIGITS,
        "--space",
        "spaces/mine.toml",
        problem="space file spaces/mine.toml does not exist",
        fix="check the path",
    ),
    case(
        "unknown-objective-path",
        "run",
        "--objective",
        "../nowhere.toml",
        problem="objective file ../nowhere.toml does not exist",
        fix="check the path",
    ),
    case(
        "unknown-space-named-by-objective",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with('space = "cnnx"\n')},
        problem="unknown space 'cnnx' (did you mean 'cnn'?)",
        fix="choose one of:",
    ),
    case(
        "unknown-objective-is-a-space-file",
        "run",
        "--objective",
        "s.toml",
        files={"s.toml": "[params]\ndense_units = 64\n"},
        problem="s.toml: params: unknown key",
        fix="known: description, data, search, promotion",
    ),
    # malformed TOML
    case(
        "malformed-space-unclosed-table",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndense_layers = {low = 1, high = 3\n"},
        problem="s.toml: malformed TOML",
        fix="fix the syntax",
    ),
    case(
        "malformed-objective-unclosed-header",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": '[data\nsource = "digits"\n'},
        problem=("o.toml: malformed TOML", "line 1"),
        fix="fix the syntax",
    ),
    case(
        "malformed-space-duplicate-key",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndense_units = 32\ndense_units = 64\n"},
        problem=("malformed TOML", "line 3"),
        fix="fix the syntax",
    ),
    case(
        "malformed-space-not-utf8",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": b"\xff\xfe[params]\n"},
        problem="s.toml: not UTF-8 text",
        fix="save it as UTF-8",
    ),
    case(
        "malformed-objective-empty",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": ""},
        problem="o.toml: data: missing [data] table",
        fix='at least source = "idx"',
    ),
    # a space with nothing to search
    case(
        "empty-space-file",
        *DIGITS,
        "--space",
        "x",
        files={"spaces/x.toml": ""},
        problem="spaces/x.toml: no [params] table and no hypermodel: nothing to search",
        fix='add [params] with at least one parameter, or hypermodel = "package.module:build"',
    ),
    case(
        "empty-space-description-only",
        *DIGITS,
        "--space",
        "spaces/x.toml",
        files={"spaces/x.toml": 'description = "mine"\n'},
        problem="spaces/x.toml: no [params] table and no hypermodel",
        fix="add [params] with at least one parameter",
    ),
    case(
        "empty-space-params-table",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": 'description = "mine"\n[params]\n'},
        problem="s.toml: params: the table is empty: nothing to search",
        fix="add at least one parameter",
    ),
    case(
        "empty-space-bench",
        "bench",
        "--objective",
        "digits",
        "--space",
        "s.toml",
        files={"s.toml": ""},
        problem="s.toml: no [params] table and no hypermodel",
        fix="add [params] with at least one parameter",
    ),
    # unknown keys
    case(
        "unknown-key-space-top-level",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[param]\ndense_units = 64\n"},
        problem="s.toml: param: unknown key (did you mean 'params'?)",
        fix="known: description, params",
    ),
    case(
        "unknown-key-space-parameter",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndropout = 0.2\n"},
        problem="params.dropout: unknown parameter (did you mean 'conv_dropout'?)",
        fix="known: conv_blocks",
    ),
    case(
        "unknown-key-objective-search",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with("epochs = 3\n")},
        problem="search.epochs: unknown key (did you mean 'max_epochs'?)",
        fix="known: space, metric",
    ),
    case(
        "unknown-key-objective-data",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with(data='source = "idx"\nfolder = "fm"\n')},
        problem="data.folder: unknown key",
        fix="known: source, dir",
    ),
    # wrong types
    case(
        "wrong-type-space-int-as-str",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": '[params]\nbatch_size = "64"\n'},
        problem="params.batch_size: expected int, got str '64'",
        fix="fix the value",
    ),
    case(
        "wrong-type-space-choices-not-list",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndense_units = {choices = 32}\n"},
        problem="choices must be a list",
        fix="e.g. {choices = [32, 64]}",
    ),
    case(
        "wrong-type-objective-trials-float",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with("trials = 10.5\n")},
        problem="search.trials: expected int, got float 10.5",
        fix="fix the value",
    ),
    case(
        "wrong-type-objective-fraction-str",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with(data='source = "digits"\nvalidation_fraction = "10%"\n')},
        problem="data.validation_fraction: expected float, got str '10%'",
        fix="fix the value",
    ),
    case(
        "wrong-type-objective-class-names",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with(data='source = "digits"\nclass_names = [1, 2]\n')},
        problem="data.class_names",
        fix="must list at least two names as strings",
    ),
    case(
        "wrong-type-objective-search-not-table",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": 'search = 3\n[data]\nsource = "digits"\n'},
        problem="o.toml: search",
        fix="must be a table: [search]",
    ),
    # low above high
    case(
        "low-above-high-int",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndense_units = {low = 256, high = 32}\n"},
        problem="params.dense_units: low 256 is above high 32",
        fix="swap them",
    ),
    case(
        "low-above-high-log",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\nlearning_rate = {low = 1e-2, high = 1e-4, log = true}\n"},
        problem="params.learning_rate: low 0.01 is above high 0.0001",
        fix="swap them",
    ),
    case(
        "low-above-high-step",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndense_dropout = {low = 0.5, high = 0.1, step = 0.1}\n"},
        problem="params.dense_dropout: low 0.5 is above high 0.1",
        fix="swap them",
    ),
    # empty choices
    case(
        "empty-choices-int",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\ndense_units = {choices = []}\n"},
        problem="params.dense_units: choices is empty",
        fix="list at least one value",
    ),
    case(
        "empty-choices-str",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "[params]\noptimizer = {choices = []}\n"},
        problem="params.optimizer: choices is empty",
        fix="list at least one value",
    ),
    # a monitor metric training does not produce
    case(
        "metric-f1",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with('metric = "f1_score"\n')},
        problem="search.metric: training does not produce 'f1_score'",
        fix="monitor one of loss, accuracy, val_loss, val_accuracy",
    ),
    case(
        "metric-abbreviated",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with('metric = "val_acc"\n')},
        problem="training does not produce 'val_acc'",
        fix="monitor one of",
    ),
    case(
        "metric-test-split",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with('metric = "test_accuracy"\n')},
        problem="training does not produce 'test_accuracy'",
        fix="monitor one of",
    ),
    # data folders with missing files
    case(
        "missing-files-labels",
        "run",
        "--data-dir",
        "fm",
        files={f"fm/{TRAIN_IMAGES}": lambda: real(TEST_IMAGES)},
        problem=("fm: no Fashion-MNIST files there", TRAIN_LABELS),
        fix="fix --data-dir or data.dir",
    ),
    case(
        "missing-files-only-test-part",
        "run",
        "--data-dir",
        "fm",
        files={f"fm/{TEST_IMAGES}": lambda: real(TEST_IMAGES), f"fm/{TEST_LABELS}": lambda: real(TEST_LABELS)},
        problem=("no Fashion-MNIST files there", TRAIN_IMAGES),
        fix="fix --data-dir or data.dir",
    ),
    case(
        "missing-files-no-folder",
        "run",
        "--data-dir",
        "nowhere",
        problem="nowhere: no Fashion-MNIST files there",
        fix="drop it to use Debian's dataset-fashion-mnist",
    ),
    case(
        "missing-files-folder-is-a-file",
        "run",
        "--data-dir",
        "fm",
        files={"fm": "not a folder\n"},
        problem="fm: no Fashion-MNIST files there",
        fix="fix --data-dir or data.dir",
    ),
    case(
        "missing-files-objective-dir",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with(data='source = "idx"\ndir = "fm"\n'), "fm": DIR},
        problem="fm: no Fashion-MNIST files there",
        fix="fix --data-dir or data.dir",
    ),
    # a truncated gz
    case(
        "truncated-gz-images",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=truncated_gz(TEST_IMAGES, 1_000_000)),
        problem=(f"fm/{TRAIN_IMAGES}: cannot read as gzip",),
        fix="fetch the file again",
    ),
    case(
        "truncated-gz-labels",
        "run",
        "--data-dir",
        "fm",
        files=fashion(labels=truncated_gz(TEST_LABELS, 3_000)),
        problem=(f"fm/{TRAIN_LABELS}: cannot read as gzip",),
        fix="fetch the file again",
    ),
    case(
        "truncated-gz-content",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=lambda: gzip.compress(raw(TEST_IMAGES)[:500_000], compresslevel=1)),
        problem="its header promises 7840000",
        fix="fetch it again",
    ),
    case(
        "truncated-gz-not-gzip",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=lambda: raw(TEST_IMAGES)[:100_000]),
        problem="cannot read as gzip",
        fix="fetch the file again",
    ),
    # a wrong IDX magic number
    case(
        "wrong-magic-swapped",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=lambda: real(TEST_LABELS), labels=lambda: real(TEST_IMAGES)),
        problem=(f"fm/{TRAIN_IMAGES}: not an IDX file of this kind", "magic 0x0801, expected 0x0803"),
        fix="check that it is the right file",
    ),
    case(
        "wrong-magic-labels-are-images",
        "run",
        "--data-dir",
        "fm",
        files=fashion(labels=lambda: real(TEST_IMAGES)),
        problem=(f"fm/{TRAIN_LABELS}: not an IDX file", "magic 0x0803, expected 0x0801"),
        fix="check that it is the right file",
    ),
    case(
        "wrong-magic-text",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=lambda: gzip.compress(b"hello, world\n")),
        problem="magic 0x68656c6c, expected 0x0803",
        fix="check that it is the right file",
    ),
    case(
        "wrong-magic-empty-file",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=lambda: gzip.compress(b"")),
        problem="magic missing, expected 0x0803",
        fix="check that it is the right file",
    ),
    # images and labels of different counts
    case(
        "counts-train-labels-for-test-images",
        "run",
        "--data-dir",
        "fm",
        files=fashion(labels=lambda: real(TRAIN_LABELS)),
        problem="10000 images but 60000 labels in the train part",
        fix="fetch them again",
    ),
    case(
        "counts-one-label-short",
        "run",
        "--data-dir",
        "fm",
        files=fashion(labels=relabelled(9999)),
        problem="10000 images but 9999 labels",
        fix="fetch them again",
    ),
    case(
        "counts-none",
        "run",
        "--data-dir",
        "fm",
        files=fashion(images=lambda: idx(IMAGES_MAGIC, (0, 28, 28)), labels=lambda: idx(LABELS_MAGIC, (0,))),
        problem="fm: no images in the train part",
        fix="fetch the files again",
    ),
    case(
        "counts-idx-label-out-of-range",
        "run",
        "--data-dir",
        "fm",
        files=fashion(
            images=lambda: idx(IMAGES_MAGIC, (20, 28, 28)),
            labels=lambda: idx(LABELS_MAGIC, (20,), bytes(range(11)) + bytes(9)),
        ),
        problem="labels must lie in 0..9 (found 0 to 10)",
        fix="fix the labels or data.class_names",
    ),
    # CSVs: wrong columns
    case(
        "csv-columns-no-label",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(header=PIXELS)),
        problem="columns must be label,pixel1,...,pixelN",
        fix="use Kaggle's layout",
    ),
    case(
        "csv-columns-not-square",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(header=["label"] + PIXELS[:-1])),
        problem="got 784 columns",
        fix="use Kaggle's layout",
    ),
    case(
        "csv-columns-extra",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(header=["label"] + PIXELS + ["id"])),
        problem="got 786 columns",
        fix="use Kaggle's layout",
    ),
    case(
        "csv-columns-empty-file",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(""),
        problem="train.csv: cannot read as CSV",
        fix="give a Kaggle-layout CSV",
    ),
    case(
        "csv-columns-missing-file",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": csv_objective()},
        problem="train.csv: no such CSV file",
        fix="fix data.train",
    ),
    # CSVs: non-numeric cells
    case(
        "csv-cell-word",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(3, "pixel10"): "dark"})),
        problem="row 5 column pixel10 is not a number ('dark')",
        fix="every cell must be numeric",
    ),
    case(
        "csv-cell-empty",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(0, "pixel784"): ""})),
        problem="row 2 column pixel784 is not a number",
        fix="every cell must be numeric",
    ),
    case(
        "csv-cell-label-name",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(7, "label"): "Shirt"})),
        problem="row 9 column label is not a number ('Shirt')",
        fix="every cell must be numeric",
    ),
    # CSVs: labels out of range
    case(
        "csv-label-10",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(4, "label"): 10})),
        problem="labels must lie in 0..9 (found 0 to 10)",
        fix="fix the labels or data.class_names",
    ),
    case(
        "csv-label-negative",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(4, "label"): -1})),
        problem="labels must lie in 0..9 (found -1 to 9)",
        fix="fix the labels",
    ),
    case(
        "csv-label-beyond-class-names",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(), 'class_names = ["top", "trouser"]\n'),
        problem="labels must lie in 0..1 (found 0 to 9)",
        fix="fix the labels or data.class_names",
    ),
    case(
        "csv-label-fractional",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(2, "label"): 2.5})),
        problem="row 4 has label 2.5, not a class number",
        fix="labels must be whole numbers 0..9",
    ),
    # CSVs: pixels above 255
    case(
        "csv-pixel-256",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(1, "pixel300"): 256})),
        problem="pixel values must be whole numbers from 0 to 255 (found 0 to 256)",
        fix="rescale to raw 0-255 pixels",
    ),
    case(
        "csv-pixel-negative",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(1, "pixel1"): -3})),
        problem="found -3 to 255",
        fix="rescale to raw 0-255 pixels",
    ),
    case(
        "csv-pixel-scaled-to-one",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(cells={(1, "pixel5"): 0.5})),
        problem="pixel values must be whole numbers",
        fix="rescale to raw 0-255 pixels",
    ),
    # a storage URL that cannot be reached
    case(
        "storage-postgres-closed-port",
        *DIGITS,
        "--storage",
        PG_CLOSED,
        problem="cannot open Optuna storage postgresql://***@127.0.0.1:1/nowhere",
        fix="check that the database server runs",
        absent=("secret", "ImportError"),
    ),
    case(
        "storage-postgres-show",
        "show",
        "--storage",
        PG_CLOSED,
        problem="cannot open Optuna storage",
        fix="check that the database server runs",
        absent=("secret",),
    ),
    case(
        "storage-postgres-promote",
        "promote",
        "--storage",
        PG_CLOSED,
        "--tracking-uri",
        PG_CLOSED,
        problem="the MLflow tracking store",
        fix="check that the server runs",
        absent=("secret",),
    ),
    case(
        "storage-sqlite-missing-folder",
        *DIGITS,
        "--storage",
        "sqlite:////nonexistent-atelier/optuna.db",
        problem="cannot open Optuna storage sqlite:////nonexistent-atelier/optuna.db",
        fix="check that the database server runs and the URL is right",
    ),
    case(
        "storage-unknown-scheme",
        *DIGITS,
        "--storage",
        "redis://atelier:secret@127.0.0.1:1/0",
        problem="storage 'redis://***@127.0.0.1:1/0' is not one Optuna can use",
        fix="give a journal file path, sqlite:///path.db",
        absent=("secret",),
    ),
    case(
        "storage-store-is-a-file",
        *DIGITS,
        "--store",
        "records",
        files={"records": "a file\n"},
        problem="records",
        fix="--store",
    ),
    case(
        "storage-journal-under-a-file",
        *DIGITS,
        "--storage",
        "records/optuna.journal",
        files={"records": "a file\n"},
        problem="records",
        fix="--storage",
    ),
    # a tracking URI that is not one
    case(
        "tracking-not-a-uri",
        *DIGITS,
        "--tracking-uri",
        "notauri",
        problem="tracking URI 'notauri' is not one MLflow can use",
        fix="give sqlite:///path/mlflow.db",
    ),
    case(
        "tracking-ftp",
        *DIGITS,
        "--tracking-uri",
        "ftp://x",
        problem="tracking URI 'ftp://x' is not one MLflow can use",
        fix="give sqlite:///path/mlflow.db, postgresql://host/db or http://host:5000",
    ),
    case(
        "tracking-a-path",
        *DIGITS,
        "--tracking-uri",
        "mlruns/mlflow.db",
        problem="tracking URI 'mlruns/mlflow.db' is not one",
        fix="give sqlite:///path/mlflow.db",
    ),
    case(
        "tracking-password-hidden",
        *DIGITS,
        "--tracking-uri",
        "redis://atelier:secret@127.0.0.1:1/0",
        problem="tracking URI 'redis://***@127.0.0.1:1/0'",
        fix="give sqlite:///",
        absent=("secret",),
    ),
    case(
        "tracking-show",
        "show",
        "--tracking-uri",
        "notauri",
        problem="tracking URI 'notauri' is not one",
        fix="give sqlite:///",
    ),
    case(
        "tracking-promote",
        "promote",
        "--tracking-uri",
        "notauri",
        problem="tracking URI 'notauri' is not one",
        fix="give sqlite:///",
    ),
    case(
        "tracking-predict",
        "predict",
        "--input",
        "x.npy",
        "--tracking-uri",
        "notauri",
        problem="tracking URI 'notauri' is not one",
        fix="give sqlite:///",
    ),
    case(
        "tracking-http-without-host",
        *DIGITS,
        "--tracking-uri",
        "http://",
        problem="tracking URI 'http://'",
        fix="http://host:5000",
    ),
    case(
        "tracking-postgres-closed-port",
        *DIGITS,
        "--tracking-uri",
        PG_CLOSED,
        problem="127.0.0.1:1",
        fix="check that the server runs",
        absent=("secret",),
    ),
    # atelier data: its report folder, objective and data
    case(
        "data-output-is-a-file",
        "data",
        "--objective",
        "digits",
        "--output",
        "out",
        files={"out": "a file\n"},
        problem="report folder out: out is a file, not a folder",
        fix="pass --output with a folder",
    ),
    case(
        "data-output-under-a-file",
        "data",
        "--objective",
        "digits",
        "--output",
        "out/digits",
        files={"out": "a file\n"},
        problem="report folder out/digits: out is a file",
        fix="pass --output",
    ),
    case(
        "data-default-folder-under-a-file",
        "data",
        "--objective",
        "digits",
        files={"data-report": "a file\n"},
        problem="report folder data-report/digits: data-report is a file",
        fix="pass --output with a folder",
    ),
    case(
        "data-unknown-objective",
        "data",
        "--objective",
        "mnist",
        problem="unknown objective 'mnist'",
        fix="choose one of: digits, fashion-mnist",
    ),
    case(
        "data-data-dir-with-digits",
        "data",
        "--objective",
        "digits",
        "--data-dir",
        "fm",
        files=fashion(),
        problem=("--data-dir fm", 'source = "digits"'),
        fix="drop --data-dir",
    ),
    case(
        "data-missing-files",
        "data",
        "--data-dir",
        "nowhere",
        problem="nowhere: no Fashion-MNIST files there",
        fix="fix --data-dir or data.dir",
    ),
    # a KerasTuner hypermodel that cannot be searched
    case(
        "hypermodel-unknown-module",
        *DIGITS,
        "--hypermodel",
        "nosuchmodels:build",
        problem="hypermodel 'nosuchmodels:build': no module nosuchmodels in",
        fix="run atelier in the folder",
    ),
    case(
        "hypermodel-missing-attribute",
        *DIGITS,
        "--hypermodel",
        "hm_row_attr:build",
        files={"hm_row_attr.py": "def build_model(hp):\n    return None\n"},
        problem=("module hm_row_attr", "has no 'build' (did you mean 'build_model'?)"),
        fix="name a build(hp) function or a keras_tuner.HyperModel",
    ),
    case(
        "hypermodel-not-callable",
        *DIGITS,
        "--hypermodel",
        "hm_row_value:build",
        files={"hm_row_value.py": "build = 3\n"},
        problem="hypermodel 'hm_row_value:build' names int 3,",
        fix="not a build(hp) function or a keras_tuner.HyperModel",
    ),
    case(
        "hypermodel-not-a-reference",
        *DIGITS,
        "--hypermodel",
        "build_model",
        problem="--hypermodel 'build_model' is not package.module:attribute",
        fix='e.g. "mymodels:build_model"',
    ),
    case(
        "hypermodel-and-space-flag",
        *DIGITS,
        "--space",
        "dense",
        "--hypermodel",
        "mymodels:build",
        problem="--space dense and --hypermodel mymodels:build both say what to search",
        fix="give one of them",
    ),
    case(
        "hypermodel-and-params-in-space",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": 'hypermodel = "mymodels:build"\n[params]\ndense_units = 64\n'},
        problem="s.toml: hypermodel: give either hypermodel or [params], not both",
    ),
    case(
        "hypermodel-space-not-a-reference",
        *DIGITS,
        "--space",
        "s.toml",
        files={"s.toml": "hypermodel = 3\n"},
        problem="s.toml: hypermodel: 3 is not package.module:attribute",
        fix="name a build(hp) function",
    ),
    case(
        "hypermodel-returns-no-model",
        *DIGITS,
        "--hypermodel",
        "hm_row_none:build",
        files={"hm_row_none.py": "def build(hp):\n    hp.Int('units', 8, 64)\n"},
        problem="hypermodel 'hm_row_none:build' returned NoneType, not a keras.Model",
        fix="build(hp) must return the model",
    ),
    case(
        "hypermodel-wrong-input-shape",
        *DIGITS,
        "--hypermodel",
        "hm_row_shape:build",
        files={
            "hm_row_shape.py": "import keras\n\ndef build(hp):\n    return keras.Sequential(["
            "keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation='softmax')])\n"
        },
        problem="hypermodel 'hm_row_shape:build' fails with KerasTuner's default values on (8, 8, 1) images",
        fix="fix it so that build(keras_tuner.HyperParameters()) makes a model of them",
    ),
    case(
        "hypermodel-wrong-class-count",
        *DIGITS,
        "--hypermodel",
        "hm_row_classes:build",
        files={
            "hm_row_classes.py": "import keras\n\ndef build(hp):\n    return keras.Sequential(["
            "keras.layers.Flatten(), keras.layers.Dense(hp.Int('classes', 3, 5), activation='softmax')])\n"
        },
        problem="outputs (3,) per image, but the objective has 10 classes",
        fix='end the model with Dense(10, activation="softmax")',
    ),
    case(
        "hypermodel-overrides-fit",
        *DIGITS,
        "--hypermodel",
        "hm_row_fit:Tuned",
        files={
            "hm_row_fit.py": "import keras_tuner\n\nclass Tuned(keras_tuner.HyperModel):\n"
            "    def build(self, hp):\n        return None\n\n    def fit(self, hp, model, *args, **kwargs):\n"
            "        return model.fit(*args, batch_size=hp.Choice('batch_size', [16, 32]), **kwargs)\n"
        },
        problem="hypermodel 'hm_row_fit:Tuned' overrides HyperModel.fit",
        fix='hp.Choice("batch_size", [32, 64])',
    ),
    # atelier bench: strategies, budget, seeds, target, output
    case(
        "bench-strategy-flag-with-pipelines",
        "bench",
        "--pipelines",
        "--seeds",
        "3",
        problem="--seeds does not apply with --pipelines",
        fix="drop it",
    ),
    case(
        "bench-pipeline-flag-without-pipelines",
        "bench",
        "--objective",
        "digits",
        "--runs",
        "2",
        problem="--runs does not apply without --pipelines",
        fix="drop it",
    ),
    case(
        "bench-unknown-strategy",
        "bench",
        "--objective",
        "digits",
        "--strategies",
        "atelier",
        "kt-random",
        problem="unknown strategy 'kt-random'",
        fix="choose from atelier, optuna-tpe, optuna-random",
    ),
    case(
        "bench-budget-zero",
        "bench",
        "--objective",
        "digits",
        "--budget-epochs",
        "0",
        problem="--budget-epochs 0 leaves nothing to train",
        fix="give at least 1",
    ),
    case(
        "bench-budget-negative",
        "bench",
        "--objective",
        "digits",
        "--budget-epochs",
        "-20",
        problem="--budget-epochs -20",
        fix="give at least 1",
    ),
    case(
        "bench-seeds-zero",
        "bench",
        "--objective",
        "digits",
        "--seeds",
        "0",
        problem="--seeds 0 runs nothing",
        fix="give at least 1",
    ),
    case(
        "bench-pair-seeds-below-seeds",
        "bench",
        "--objective",
        "digits",
        "--seeds",
        "3",
        "--pair-seeds",
        "2",
        problem="--pair-seeds 2 is below --seeds 3",
        fix="give at least as many",
    ),
    case(
        "run-warm-start-without-a-store",
        "run",
        "--objective",
        "digits",
        "--warm-start",
        "earlier",
        problem="no studies in mlruns",
        fix="run `atelier run` first",
    ),
    case(
        "bench-target-above-one",
        "bench",
        "--objective",
        "digits",
        "--target-accuracy",
        "88",
        problem="--target-accuracy 88.0 is not an accuracy",
        fix="give a share in (0, 1]",
    ),
    case(
        "bench-memory-trials-zero",
        "bench",
        "--objective",
        "digits",
        "--memory-trials",
        "0",
        "30",
        problem="--memory-trials 0 30",
        fix="give none to skip",
    ),
    case(
        "bench-output-is-a-file",
        "bench",
        "--objective",
        "digits",
        "--output",
        "out",
        files={"out": "a file\n"},
        problem="report folder out: out is a file",
        fix="pass --output with a folder",
    ),
    case(
        "bench-unknown-space",
        "bench",
        "--objective",
        "digits",
        "--space",
        "nosuch",
        problem="unknown space 'nosuch'",
        fix="choose one of:",
    ),
    case(
        "bench-hypermodel-space",
        "bench",
        "--objective",
        "digits",
        "--space",
        "s.toml",
        files={"s.toml": 'hypermodel = "mymodels:build"\n'},
        problem="space s names a KerasTuner hypermodel",
        fix="give --space a space file with [params]",
    ),
    case(
        "bench-tracking-not-a-uri",
        "bench",
        "--objective",
        "digits",
        "--tracking-uri",
        "notauri",
        problem="tracking URI 'notauri' is not one",
        fix="give sqlite:///",
    ),
    case(
        "usage-bench-budget-fraction",
        "bench",
        "--budget-epochs",
        "1.5",
        problem="--budget-epochs: invalid int value: '1.5'",
        fix="give a whole number (see atelier bench --help)",
    ),
    # image folders: --images DIR, an objective's source = "folder" and its keys
    case(
        "folder-images-missing",
        "run",
        "--images",
        "photos",
        problem="--images photos: no such folder",
        fix="give --images a folder with one subfolder of images per class",
    ),
    case(
        "folder-images-is-a-file",
        "run",
        "--images",
        "photos",
        files={"photos": photo(0)},
        problem="--images photos: is a file, not a folder",
        fix="give --images a folder with one subfolder of images per class",
    ),
    case(
        "folder-images-single-class",
        "run",
        "--images",
        "photos",
        files=photos(classes={"sandal": 5}),
        problem="photos: a single class folder (sandal)",
        fix="a classifier needs two or more: put the images in one subfolder per class",
    ),
    case(
        "folder-images-empty-class",
        "run",
        "--images",
        "photos",
        files=photos() | {"photos/bag": DIR},
        problem="photos/bag: an empty class folder",
        fix="add images or remove it",
    ),
    case(
        "folder-images-class-of-notes-only",
        "run",
        "--images",
        "photos",
        files=photos() | {"photos/bag/notes.txt": "to photograph\n", "photos/bag/.DS_Store": b"\0\1\2"},
        problem="photos/bag: an empty class folder (no .jpg, .png",
        fix="add images or remove it",
    ),
    case(
        "folder-images-undecodable",
        "run",
        "--images",
        "photos",
        files=photos() | {"photos/shirt/broken.jpg": "this is not a JPEG\n"},
        problem="photos/shirt/broken.jpg: cannot decode this image",
        fix="replace or remove the file, or set skip_unreadable = true in the objective's [data]",
    ),
    case(
        "folder-images-truncated",  # its header reads: it fails while decoding into mlruns/image-cache
        "run",
        "--images",
        "photos",
        files=photos() | {"photos/trouser/cut.png": photo(1, 8, keep=200)},
        problem="photos/trouser/cut.png: cannot decode this image",
        fix="set skip_unreadable = true in the objective's [data]",
    ),
    case(
        "folder-images-no-class-folders",
        "run",
        "--images",
        "photos",
        files={f"photos/shirt_{nth}.png": photo(6, nth * 2) for nth in range(4)},
        problem="photos: no class folders",
        fix="put the images in one subfolder per class (train/cat/*.jpg",
    ),
    case(
        "folder-images-too-few-to-hold-out",
        "run",
        "--images",
        "photos",
        files=photos(per_class=2),
        problem="photos/shirt: 2 images, and holding out a test part and a validation split needs at least 3",
        fix="add images or give data.test a test folder",
    ),
    case(
        "folder-images-with-objective",
        "run",
        "--images",
        "photos",
        "--objective",
        "digits",
        files=photos(),
        problem="--objective: not allowed with argument --images",
        fix="give one of the two (see atelier run --help)",
    ),
    case(
        "folder-data-images-missing",
        "data",
        "--images",
        "missing",
        problem="--images missing: no such folder",
        fix="give --images a folder",
    ),
    case(
        "folder-data-images-undecodable",
        "data",
        "--images",
        "photos",
        files=photos() | {"photos/trouser/broken.png": b"\x89PNG\r\n\x1a\n but no more"},
        problem="photos/trouser/broken.png: cannot decode this image",
        fix="set skip_unreadable = true in the objective's [data]",
    ),
    case(
        "folder-best-images-missing",
        "best",
        "--images",
        "missing",
        "--budget",
        "1m",
        problem="--images missing: no such folder",
        fix="give --images a folder",
    ),
    case(
        "folder-best-images-with-objective",
        "best",
        "--objective",
        "digits",
        "--images",
        "photos",
        "--budget",
        "1m",
        files=photos(),
        problem="--images: not allowed with argument --objective",
        fix="give one of the two (see atelier best --help)",
    ),
    case(
        "folder-test-other-classes",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('test = "held"\n') | photos("held", {"shirt": 6, "sandal": 5}, per_class=2),
        problem="held: class folders sandal, shirt differ from the train folder's shirt, trouser",
        fix="give the test folder the same class folders",
    ),
    case(
        "folder-test-missing",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('test = "held"\n'),
        problem="held: no such folder",
        fix="fix data.test",
    ),
    case(
        "folder-train-missing",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective(train='train = "pictures"\n'),
        problem="pictures: no such folder",
        fix="fix data.train",
    ),
    case(
        "folder-test-given-train-class-single-image",  # refused after decoding: the cache must go too
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": '[data]\nsource = "folder"\ntrain = "photos"\ntest = "held"\n'}
        | photos(classes={"shirt": 6})
        | photos(classes={"trouser": 1}, per_class=1)
        | photos("held", per_class=2),
        problem="photos: class 1 (trouser) has a single image",
        fix="add images of that class",
    ),
    case(
        "folder-every-image-of-a-class-unreadable",  # skipped one by one, refused once decoded: the cache goes
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("skip_unreadable = true\n")
        | {f"photos/sandal/sandal_{nth}.jpg": "not a JPEG\n" for nth in range(3)},
        problem="photos/sandal: none of its images decode",
        fix="replace them or remove the folder",
    ),
    case(
        "folder-key-color",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('color = "colour"\n'),
        problem="o.toml: data.color: unknown value 'colour'",
        fix="use one of auto, grayscale, rgb",
    ),
    case(
        "folder-key-resize",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('resize = "fit"\n'),
        problem="o.toml: data.resize: unknown value 'fit'",
        fix="use one of pad, crop, stretch",
    ),
    case(
        "folder-key-load",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('load = "disk"\n'),
        problem="o.toml: data.load: unknown value 'disk'",
        fix="use one of auto, memory, stream",
    ),
    case(
        "folder-key-image-size-one-side",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("image_size = [64]\n"),
        problem="o.toml: data.image_size: must be [height, width] in pixels",
        fix="each 8 to 1024, e.g. [64, 64]",
    ),
    case(
        "folder-key-image-size-too-small",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("image_size = [4, 64]\n"),
        problem="o.toml: data.image_size: must be [height, width] in pixels",
        fix="each 8 to 1024, e.g. [64, 64]",
    ),
    case(
        "folder-key-image-size-too-large",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("image_size = [64, 2000]\n"),
        problem="o.toml: data.image_size: must be [height, width] in pixels",
        fix="each 8 to 1024, e.g. [64, 64]",
    ),
    case(
        "folder-key-image-size-fractional",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("image_size = [64.5, 64]\n"),
        problem="o.toml: data.image_size: must be [height, width] in pixels",
        fix="each 8 to 1024, e.g. [64, 64]",
    ),
    case(
        "folder-key-image-size-string",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('image_size = "64x64"\n'),
        problem="o.toml: data.image_size: expected list, got str '64x64'",
        fix="fix the value",
    ),
    case(
        "folder-key-memory-limit-words",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('memory_limit = "a lot"\n'),
        problem="o.toml: data.memory_limit: must be a size",
        fix='such as "512MB" or "2GB"',
    ),
    case(
        "folder-key-memory-limit-no-unit",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('memory_limit = "512"\n'),
        problem="o.toml: data.memory_limit: must be a size",
        fix='such as "512MB" or "2GB"',
    ),
    case(
        "folder-key-memory-limit-zero",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('memory_limit = "0MB"\n'),
        problem="o.toml: data.memory_limit: must be a size",
        fix='such as "512MB" or "2GB"',
    ),
    case(
        "folder-key-test-fraction-zero",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("test_fraction = 0\n"),
        problem="o.toml: data.test_fraction: must be between 0 and 1",
        fix="e.g. 0.1",
    ),
    case(
        "folder-key-test-fraction-one",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective("test_fraction = 1.0\n"),
        problem="o.toml: data.test_fraction: must be between 0 and 1",
        fix="e.g. 0.1",
    ),
    case(
        "folder-key-skip-unreadable-string",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective('skip_unreadable = "yes"\n'),
        problem="o.toml: data.skip_unreadable: expected bool, got str 'yes'",
        fix="fix the value",
    ),
    case(
        "folder-key-color-on-idx",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": '[data]\nsource = "idx"\ncolor = "rgb"\n'},
        problem="o.toml: data.color: applies to",
        fix='source = "folder" only',
    ),
    case(
        "folder-key-skip-unreadable-on-idx",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": '[data]\nsource = "idx"\nskip_unreadable = true\n'},
        problem="o.toml: data.skip_unreadable: applies to",
        fix='source = "folder" only',
    ),
    case(
        "folder-key-without-train",
        "run",
        "--objective",
        "o.toml",
        files=folder_objective(train=""),
        problem="o.toml: data.train: a folder source needs",
        fix='train = "path/to/images" (one folder per class)',
    ),
    # contradictory or impossible flags
    case("flags-trials-negative", *DIGITS, "--trials", "-3", problem="search.trials: must be at least 1"),
    case("flags-max-epochs-zero", *DIGITS, "--max-epochs", "0", problem="search.max_epochs: must be at least 1"),
    case(
        "flags-timeout-negative",
        *DIGITS,
        "--timeout",
        "-5",
        problem="search.timeout",
        fix="must be a positive number of seconds",
    ),
    case(
        "flags-timeout-infinite",
        *DIGITS,
        "--timeout",
        "inf",
        problem="search.timeout",
        fix="must be a positive number of seconds",
    ),
    case(
        "flags-seed-negative",
        *DIGITS,
        "--seed",
        "-1",
        problem="search.seed",
        fix="must be a whole number from 0 to 4294967295",
    ),
    case(
        "flags-sampler-capitalised",
        *DIGITS,
        "--sampler",
        "TPE",
        problem="unknown sampler 'TPE'",
        fix="use one of tpe, random, cmaes, gp",
    ),
    case(
        "flags-workers-zero",
        *DIGITS,
        "--workers",
        "0",
        problem="--workers 0 is not a count of processes",
        fix="give 1 to",
    ),
    case(
        "flags-data-dir-with-digits",
        *DIGITS,
        "--data-dir",
        "fm",
        files=fashion(),
        problem=("--data-dir fm", 'source = "digits"'),
        fix="drop --data-dir",
    ),
    case(
        "flags-data-dir-with-csv",
        "run",
        "--objective",
        "o.toml",
        "--data-dir",
        "fm",
        files=csv_case(csv_text()) | fashion(),
        problem='source = "csv"',
        fix="drop --data-dir",
    ),
    case(
        "flags-subsample-below-classes",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with(data='source = "digits"\nsubsample = 5\n')},
        problem="data.subsample 5 cannot pick 5 of 1293 images",
        fix="choose a data.subsample",
    ),
    case(
        "flags-validation-leaves-nothing",
        "run",
        "--objective",
        "o.toml",
        files={"o.toml": objective_with(data='source = "digits"\nvalidation_fraction = 0.999\n')},
        problem="cannot keep 1436 of 1437 images for validation",
        fix="lower data.validation_fraction",
    ),
    case(
        "flags-csv-class-of-one-image",
        "run",
        "--objective",
        "o.toml",
        files=csv_case(csv_text(rows=19)),
        problem="class 9 (Ankle boot) has a single image",
        fix="add images of that class",
    ),
    case("flags-promote-without-store", "promote", problem="no MLflow store at", fix="run `atelier run` first"),
    case(
        "flags-promote-refit-seconds-negative",
        "promote",
        "--refit-seconds",
        "-5",
        problem="--refit-seconds -5.0 must be a positive number of seconds",
        fix="e.g. 240",
    ),
    case(
        "flags-show-without-store",
        "show",
        "--study",
        "digits-dense",
        "--store",
        "elsewhere",
        problem="no studies in elsewhere",
        fix="run `atelier run` first",
    ),
    case("flags-ui-without-store", "ui", problem="no MLflow store at", fix="run `atelier run` first"),
    case("flags-report-without-store", "report", problem="no studies in mlruns", fix="run `atelier run` first"),
    case(
        "flags-report-output-is-a-file",
        "report",
        "--output",
        "r.txt",
        files={"r.txt": "notes"},
        problem="r.txt is a file, not a folder",
        fix="pass --output with a folder",
    ),
    case(
        "flags-predict-without-store",
        "predict",
        "--input",
        "x.npy",
        files={"x.npy": b"\x93NUMPY"},
        problem="no MLflow store at",
        fix="or pass --store or --tracking-uri",
    ),
    case(
        "flags-predict-model-missing",
        "predict",
        "--model",
        "./nomodel",
        "--input",
        "x.npy",
        files={"x.npy": b"\x93NUMPY"},
        problem="model './nomodel' does not resolve",
        fix="give a registered model",
    ),
    case(
        "names-study-escapes-the-store",
        *DIGITS,
        "--study",
        "../../escape",
        problem="--study '../../escape' holds",
        fix="give a name of letters, digits",
    ),
    case("names-study-with-separator", *DIGITS, "--study", "a/b", problem="holds a path separator", fix="give a name"),
    case("names-study-dot-dot", *DIGITS, "--study", "..", problem="--study '..' holds '..'", fix="give a name"),
    case(
        "names-study-control-character",
        *DIGITS,
        "--study",
        "bad\x1bname",
        problem="holds control characters",
        fix="give a name",
    ),
    case("names-study-too-long", *DIGITS, "--study", "s" * 101, problem="is 101 characters long", fix="give a name"),
    case("names-study-empty", *DIGITS, "--study", " ", problem="is empty", fix="give a name"),
    case("names-show-study", "show", "--study", "../x", problem="--study '../x' holds", fix="give a name"),
    case("names-report-study", "report", "--study", "x/..", problem="--study 'x/..' holds", fix="give a name"),
    case("names-promote-study", "promote", "--study", "../x", problem="--study '../x' holds", fix="give a name"),
    case(
        "names-promote-model-name", "promote", "--model-name", "../../models", problem="--model-name", fix="give a name"
    ),
    case(
        "names-data-output-control",
        "data",
        "--objective",
        "digits",
        "--output",
        "out\nput",
        problem="--output 'out\\nput' holds control characters",
        fix="give a plain path",
    ),
    case(
        "names-report-output-long-part",
        "report",
        "--output",
        "o" * 300,
        problem="a part over 255 characters",
        fix="give a plain path",
    ),
    case(
        "names-bench-output-control",
        "bench",
        "--output",
        "b\x07",
        problem="holds control characters",
        fix="give a plain path",
    ),
    # flags argparse refuses: one line naming the flag, the fix and the command's help, not the usage
    case(
        "usage-trials-not-int",
        *DIGITS,
        "--trials",
        "ten",
        problem="--trials: invalid int value: 'ten'",
        fix="give a whole number (see atelier run --help)",
    ),
    case(
        "usage-max-epochs-fraction",
        *DIGITS,
        "--max-epochs",
        "1.5",
        problem="--max-epochs: invalid int value: '1.5'",
        fix="give a whole number",
    ),
    case(
        "usage-seed-fraction",
        *DIGITS,
        "--seed",
        "1.5",
        problem="--seed: invalid int value: '1.5'",
        fix="give a whole number (see atelier run --help)",
    ),
    case(
        "usage-timeout-not-a-number",
        *DIGITS,
        "--timeout",
        "soon",
        problem="--timeout: invalid float value: 'soon'",
        fix="give a number (see atelier run --help)",
    ),
    case(
        "usage-seed-without-value",
        *DIGITS,
        "--seed",
        problem="--seed: expected one argument",
        fix="give it a value (see atelier run --help)",
    ),
    case(
        "usage-unknown-flag",
        *DIGITS,
        "--sed",
        "3",
        problem="--sed: unknown flag",
        fix="check its spelling (see atelier run --help)",
    ),
    case(
        "usage-unknown-flag-before-command",
        "--verbose",
        "run",
        problem="--verbose: unknown flag",
        fix="check its spelling (see atelier --help)",
    ),
    case(
        "usage-unexpected-argument",
        "show",
        "digits-dense",
        problem="unexpected argument 'digits-dense'",
        fix="give every value after its flag (see atelier show --help)",
    ),
    case(
        "usage-switch-with-value",
        *DIGITS,
        "--quiet=yes",
        problem="--quiet: ignored explicit argument 'yes'",
        fix="give it no value (see atelier run --help)",
    ),
    case(
        "usage-ambiguous-flag",
        *DIGITS,
        "--s",
        "3",
        problem="ambiguous option: --s could match --space, --study, --seed",
        fix="spell the flag out (see atelier run --help)",
    ),
    case(
        "usage-show-format",
        "show",
        "--format",
        "xml",
        problem="--format: invalid choice: 'xml'",
        fix="choose one of table, csv, json, markdown (see atelier show --help)",
    ),
    case(
        "usage-data-format",
        "data",
        "--format",
        "xml",
        problem="--format: invalid choice: 'xml'",
        fix="choose one of table, csv, json, markdown (see atelier data --help)",
    ),
    case(
        "usage-promote-trial",
        "promote",
        "--trial",
        "best",
        problem="--trial: invalid int value: 'best'",
        fix="give a whole number (see atelier promote --help)",
    ),
    case(
        "usage-predict-no-input",
        "predict",
        problem="the following arguments are required: --input",
        fix="add them (see atelier predict --help)",
    ),
    case(
        "usage-bench-strategies-without-value",
        "bench",
        "--strategies",
        problem="--strategies: expected at least one argument",
        fix="give it one value or more (see atelier bench --help)",
    ),
    case(
        "usage-no-command",
        problem="the following arguments are required: COMMAND",
        fix="add them (see atelier --help)",
    ),
    case(
        "usage-unknown-command",
        "serch",
        problem=("COMMAND: invalid choice: 'serch'", "'run', 'best'"),
        fix="(see atelier --help)",
    ),
]


def _never_search(*args: object, **kwargs: object) -> None:
    raise AssertionError("a bad input reached search.engine.study.optimize: it would have trained")


@pytest.fixture(autouse=True)
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """No case may train: the search loop is a tripwire (it also keeps an accepted bad URI from hanging)."""
    monkeypatch.setattr(search.engine.study, "optimize", _never_search)


def write(folder: Path, files: dict[str, Content]) -> None:
    """Write a case's files (text, bytes, bytes made on demand, or empty folders) under `folder`."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is DIR:
            path.mkdir()
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content if isinstance(content, bytes) else content())


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with a digest of its content ('folder' for folders)."""
    return {
        str(path.relative_to(folder)): "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(("args", "files", "problems", "fix", "absent"), CASES)
def test_bad_input(
    args: list[str],
    files: dict[str, Content],
    problems: tuple[str, ...],
    fix: str | None,
    absent: tuple[str, ...],
    workdir: Path,
    fashion_dir: Path,
    atelier,
) -> None:
    """One line naming the problem and the fix, exit status 2, no traceback, nothing written."""
    write(workdir, files)
    before = snapshot(workdir)
    status, out, err = atelier(*args)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert status == 2, err
    assert len(lines) == 1 and err.endswith("\n") and lines[0].startswith("atelier: error: "), err
    for part in problems + ((fix,) if fix else ()):
        assert part in lines[-1], f"{part!r} not in {lines[-1]!r}"
    for part in absent:
        assert part not in out + err
    assert not (workdir / "mlruns").exists(), f"wrote {sorted(p.name for p in (workdir / 'mlruns').rglob('*'))}"
    assert snapshot(workdir) == before


def test_debug_shows_the_traceback_then_the_one_line(workdir: Path, atelier) -> None:
    """--debug prints the traceback first and still ends with the error line and exit status 2."""
    status, _, err = atelier("run", "--objective", "digits", "--space", "nosuch", "--debug")
    assert status == 2
    assert "Traceback (most recent call last):" in err and "SetupError" in err
    assert err.splitlines()[-1].startswith("atelier: error: unknown space 'nosuch'")
    assert not (workdir / "mlruns").exists()
