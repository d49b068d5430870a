"""The data report and `atelier data` on real images: scikit-learn's digits and a quarter of Fashion-MNIST."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from search.config.objectives import load_objective
from search.data import Images, SearchData, load_search_data
from search.reports.data import (
    class_counts,
    mean_images_figure,
    pixel_histogram,
    sample_indices,
    samples_figure,
    summary,
    write_data_report,
)

REPORT_FILES = [
    "class_counts.png",
    "samples.png",
    "mean_images.png",
    "pixel_histogram.png",
    "class_counts.csv",
    "summary.json",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits() -> SearchData:
    """scikit-learn's 8x8 digits as the digits objective splits them."""
    return load_search_data(load_objective("digits"))


@pytest.fixture(scope="module")
def fashion(fashion_dir: Path) -> SearchData:
    """The fashion-mnist-quick objective's stratified quarter of Fashion-MNIST (13,500 + 1,500 images)."""
    return load_search_data(load_objective("fashion-mnist-quick"), fashion_dir)


@pytest.fixture(params=["digits", "fashion"])
def data(request: pytest.FixtureRequest) -> SearchData:
    return request.getfixturevalue(request.param)


def relabelled(data: SearchData, n_classes: int) -> SearchData:
    """Real images split into `n_classes` classes (each real class cut into n_classes / 10 by position)."""
    per_class = n_classes // data.n_classes

    def split(images: Images) -> Images:
        return Images(images.x, images.y * per_class + np.arange(len(images)) % per_class)

    names = tuple(f"{name} {part}" for name in data.class_names for part in range(per_class))
    return SearchData(f"{data.name}-{n_classes}", data.source, split(data.train), split(data.val), names)


def coloured(data: SearchData) -> SearchData:
    """Real images in three channels: the gray image in red, its inverse in green, half of it in blue."""

    def colour(images: Images) -> Images:
        x = images.x[..., 0]
        return Images(np.stack([x, 255 - x, x // 2], axis=-1), images.y)

    return SearchData(f"{data.name}-rgb", data.source, colour(data.train), colour(data.val), data.class_names)


def mosaic_of(figure: Figure) -> np.ndarray:
    """The one image a grid figure draws."""
    (axes,) = figure.axes
    (image,) = axes.images
    return np.asarray(image.get_array())


# The report's parts


def test_class_counts_are_the_labels_bincount_per_split(data: SearchData) -> None:
    counts = class_counts(data)
    assert counts["class"].tolist() == list(data.class_names)
    assert counts["train"].tolist() == np.bincount(data.train.y, minlength=data.n_classes).tolist()
    assert counts["validation"].tolist() == np.bincount(data.val.y, minlength=data.n_classes).tolist()
    assert (counts["train"].sum(), counts["validation"].sum()) == (len(data.train), len(data.val))
    assert (counts["total"] == counts["train"] + counts["validation"]).all()
    assert counts["share"].sum() == pytest.approx(1.0, abs=1e-3)


def test_summary_states_sizes_shape_and_train_pixel_statistics(data: SearchData) -> None:
    facts = summary(data)
    pixels = data.train.x
    assert (facts["train_images"], facts["validation_images"]) == (len(data.train), len(data.val))
    assert facts["image_shape"] == list(pixels.shape[1:]) and facts["classes"] == data.n_classes
    assert facts["pixel_mean"] == pytest.approx(pixels.mean(), abs=1e-3)
    assert facts["pixel_std"] == pytest.approx(pixels.std(), abs=1e-3)
    assert (facts["pixel_min"], facts["pixel_max"]) == (pixels.min(), pixels.max())
    json.dumps(facts)


def test_pixel_histogram_counts_every_pixel_per_channel(digits: SearchData) -> None:
    rgb = coloured(digits).train.x
    counts = pixel_histogram(rgb)
    assert counts.shape == (3, 256)
    for channel in range(3):
        assert counts[channel].tolist() == np.bincount(rgb[..., channel].ravel(), minlength=256).tolist()


def test_samples_are_seeded_and_of_their_class(fashion: SearchData) -> None:
    chosen = sample_indices(fashion.train.y, fashion.n_classes)
    again = sample_indices(fashion.train.y, fashion.n_classes)
    assert [indices.tolist() for indices in chosen] == [indices.tolist() for indices in again]
    for label, indices in enumerate(chosen):
        assert len(set(indices.tolist())) == 10 and (fashion.train.y[indices] == label).all()


def test_samples_grid_has_one_row_per_class_named_and_drawn_from_it(fashion: SearchData) -> None:
    figure = samples_figure(fashion.train.x, fashion.train.y, fashion.class_names, "samples")
    mosaic = mosaic_of(figure)
    side = fashion.input_shape[0]
    assert mosaic.shape == (fashion.n_classes * (side + 1), 10 * (side + 1))
    assert [label.get_text() for label in figure.axes[0].get_yticklabels()] == list(fashion.class_names)
    for label, indices in enumerate(sample_indices(fashion.train.y, fashion.n_classes)):
        top = label * (side + 1)
        first = mosaic[top : top + side, :side]
        assert (first == fashion.train.x[indices[0], ..., 0]).all()


def test_mean_images_are_titled_with_class_names_and_show_the_class_means(digits: SearchData) -> None:
    figure = mean_images_figure(digits.train.x, digits.train.y, digits.class_names, "means")
    assert [text.get_text() for text in figure.axes[0].texts] == list(digits.class_names)
    mosaic = mosaic_of(figure)
    zeros = digits.train.x[digits.train.y == 0].mean(axis=0)[..., 0]
    band = mosaic.shape[0] - 8 - 1
    assert (mosaic[band : band + 8, :8] == np.round(zeros)).all()


def test_report_writes_its_figures_table_and_summary(data: SearchData, tmp_path: Path) -> None:
    paths = write_data_report(data, tmp_path / "report")
    assert [path.name for path in paths] == REPORT_FILES
    assert all(path.parent == tmp_path / "report" for path in paths)
    for path in paths[:4]:
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5_000, path
    assert pd.read_csv(paths[4], dtype={"class": str}).to_dict("list") == class_counts(data).to_dict("list")
    assert json.loads(paths[5].read_text()) == summary(data)


@pytest.mark.parametrize(
    "variant", [coloured, lambda data: relabelled(data, 100)], ids=["three-channels", "100-classes"]
)
def test_report_draws_colour_images_and_many_classes(variant, digits: SearchData, tmp_path: Path) -> None:
    data = variant(digits)
    paths = write_data_report(data, tmp_path)
    assert all(path.stat().st_size > 0 for path in paths)
    assert len(pd.read_csv(paths[4])) == data.n_classes
    samples = samples_figure(data.train.x, data.train.y, data.class_names, "samples")
    assert mosaic_of(samples).shape[:2] == (data.n_classes * 9, 10 * 9)


# atelier data


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_data_command_prints_counts_in_each_format_and_writes_the_report(
    fmt: str, workdir: Path, atelier, digits: SearchData
) -> None:
    status, out, err = atelier("data", "--objective", "digits", "--format", fmt)
    assert status == 0, err
    expected = class_counts(digits)
    if fmt == "csv":
        assert pd.read_csv(io.StringIO(out), dtype={"class": str}).to_dict("list") == expected.to_dict("list")
    elif fmt == "json":
        assert [row["train"] for row in json.loads(out)] == expected["train"].tolist()
    elif fmt == "markdown":
        assert "| label | class | train | validation | total | share |" in out.splitlines()
    else:
        assert "1150 train and 287 validation images (8, 8, 1), 10 classes" in out
        assert "train pixels: mean" in out
    where = out if fmt in ("table", "markdown") else err
    assert "report in data-report/digits: class_counts.png" in where
    assert sorted(path.name for path in (workdir / "data-report" / "digits").iterdir()) == sorted(REPORT_FILES)


def test_data_command_reports_fashion_mnist_into_output(workdir: Path, atelier, fashion_dir: Path) -> None:
    status, out, err = atelier(
        "data", "--objective", "fashion-mnist-quick", "--data-dir", fashion_dir, "--output", "reports/fm"
    )
    assert status == 0, err
    assert "13500 train and 6000 validation images (28, 28, 1), 10 classes" in out
    assert "Ankle boot" in out and "report in reports/fm:" in out
    assert sorted(path.name for path in (workdir / "reports" / "fm").iterdir()) == sorted(REPORT_FILES)
    assert not (workdir / "data-report").exists() and not (workdir / "mlruns").exists()
