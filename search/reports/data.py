"""The data report: what a search's images look like before any model sees them.

Class counts per split, sample images and the mean image of every class, the pixel-value
histogram, and a summary of sizes and pixel statistics. Only the train and validation splits:
the test split is read by `atelier promote` alone. Knows nothing of Keras or MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from search.data import Images, ImageSet, SearchData  # noqa: E402
from search.paths import check_output_folder  # noqa: E402

SAMPLES_PER_CLASS = 10
SAMPLE_SEED = 0
MEAN_COLUMNS = 10
CELL_INCHES = 0.6  # an image's side in the sample grid; twice that in the mean grid
TITLE_INCHES = 0.25  # above each mean image
MIN_WIDTH_INCHES = 5.0  # room for the figure's title when there are few classes
GRID_MAX_INCHES = 200.0  # very many classes shrink the cells rather than pass Agg's size limit
PIXEL_VALUES = 256
HISTOGRAM_CHUNK = 1 << 20  # pixels counted at once
FILE_LISTS = ("ignored", "skipped", "held_out_files")  # a folder's lists of files, each written to KEY.txt
FIGURE_BYTES = 64 << 20  # of streamed images read for the figures and pixel statistics: a seeded sample


def class_counts(data: SearchData) -> pd.DataFrame:
    """Images per class: one row per class with its label, name, train, validation and total counts, and share."""
    n_classes = data.n_classes
    train = np.bincount(data.train.y, minlength=n_classes)
    validation = np.bincount(data.val.y, minlength=n_classes)
    total = train + validation
    return pd.DataFrame(
        {
            "label": np.arange(n_classes),
            "class": list(data.class_names),
            "train": train,
            "validation": validation,
            "total": total,
            "share": (total / total.sum()).round(4),
        }
    )


def pixel_histogram(images: np.ndarray) -> np.ndarray:
    """How many times each value 0-255 occurs, per channel: an int array of shape (C, 256).

    Counted in chunks: np.bincount widens its input to int64, which for a whole data set is a large copy.
    """
    pixels = images.reshape(-1, images.shape[-1])
    counts = np.zeros((pixels.shape[1], PIXEL_VALUES), dtype=np.int64)
    for start in range(0, len(pixels), HISTOGRAM_CHUNK):
        chunk = pixels[start : start + HISTOGRAM_CHUNK]
        for channel in range(pixels.shape[1]):
            counts[channel] += np.bincount(chunk[:, channel], minlength=PIXEL_VALUES)
    return counts


def summary(data: SearchData) -> dict[str, object]:
    """Split sizes, image shape, class count, the train split's pixel mean, std, min and max (over all channels), and
    for a folder what was found there: sizes, colour modes, files ignored or skipped, the test part held out."""
    counts = pixel_histogram(figure_images(data.train).x).sum(axis=0)
    values = np.arange(PIXEL_VALUES)
    present = np.flatnonzero(counts)
    mean = float(values @ counts / counts.sum())
    std = float(np.sqrt(((values - mean) ** 2) @ counts / counts.sum()))
    return {
        "name": data.name,
        "source": data.source,
        "train_images": len(data.train),
        "validation_images": len(data.val),
        "image_shape": list(data.input_shape),
        "classes": data.n_classes,
        "pixel_mean": round(mean, 3),
        "pixel_std": round(std, 3),
        "pixel_min": int(present[0]),
        "pixel_max": int(present[-1]),
    } | _folder_facts(data.details)


def _folder_facts(details: Mapping[str, object]) -> dict[str, object]:
    """A folder's details for the summary: the lists of files as counts (they are written out in full)."""
    facts = {key: value for key, value in details.items() if key not in FILE_LISTS and key != "cache"}
    return facts | {key: len(details[key]) for key in FILE_LISTS if key in details}  # type: ignore[arg-type]


def figure_images(images: ImageSet) -> Images:
    """The images the figures and statistics are drawn from: all in memory, or a seeded sample of streamed ones."""
    if isinstance(images, Images):
        return images
    count = min(len(images), max(1, FIGURE_BYTES // int(np.prod(images.shape))))
    chosen = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(images), count, replace=False))
    taken = images.take(chosen)
    return Images(taken.arrays(), taken.y)


def folder_lines(data: SearchData) -> list[str]:
    """What a folder held, in a few lines for the terminal; nothing for other sources."""
    details = data.details
    if not details:
        return []
    sizes = ", ".join(f"{size} ({count})" for size, count in list(details["sizes"].items())[:5])
    more = f" and {details['distinct_sizes'] - 5} more sizes" if details["distinct_sizes"] > 5 else ""
    modes = ", ".join(f"{mode} {count}" for mode, count in details["modes"].items())
    height, width = details["image_size"]
    test = "held out of the folder" if details["test_held_out"] else "in the test folder"
    load = "streamed from the decoded cache" if details["load"] == "stream" else "held in memory"
    return [
        f"images found: {sizes}{more}; {modes}",
        f"trained at {height}x{width}x{details['channels']} ({details['resize']}), {load}; "
        f"{details['test_images']} test images {test}",
        f"files ignored: {len(details['ignored'])} (not images, or hidden); unreadable and skipped: "
        f"{len(details['skipped'])}",
    ]


def class_counts_figure(counts: pd.DataFrame, title: str) -> Figure:
    """Grouped bars of each class's train and validation counts, named on the x axis."""
    positions = np.arange(len(counts))
    figure = Figure(figsize=(max(6.0, 0.45 * len(counts) + 2), 4.5))
    axes = figure.subplots()
    width = 0.4
    for offset, split in ((-width / 2, "train"), (width / 2, "validation")):
        axes.bar(positions + offset, counts[split], width, label=split)
    axes.set_xticks(positions, counts["class"], rotation=45, ha="right")
    axes.set_ylabel("images")
    axes.set_ylim(0, 1.15 * max(1, counts[["train", "validation"]].to_numpy().max()))  # room for the legend
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper center", ncols=2)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def sample_indices(
    labels: np.ndarray, n_classes: int, per_class: int = SAMPLES_PER_CLASS, seed: int = SAMPLE_SEED
) -> list[np.ndarray]:
    """For each class, up to `per_class` of its images' indices, drawn without replacement with a fixed seed."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.choice(members, min(per_class, len(members)), replace=False))
    return chosen


def samples_figure(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], title: str, per_class: int = SAMPLES_PER_CLASS
) -> Figure:
    """A grid of sample images, one row per class labelled with its name (drawn as one mosaic, so it stays fast)."""
    rows = [images[indices] for indices in sample_indices(labels, len(class_names), per_class)]
    height = images.shape[1]
    cell = min(CELL_INCHES, GRID_MAX_INCHES / len(class_names))
    figure = Figure(figsize=(cell * per_class + 2.0, cell * len(class_names) + 0.8))
    axes = figure.subplots()
    _show(axes, _mosaic(rows, per_class, images.shape[1:]))
    _bare(axes)
    axes.set_yticks(np.arange(len(class_names)) * (height + 1) + height / 2, class_names)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def class_means(images: np.ndarray, labels: np.ndarray, n_classes: int) -> list[np.ndarray | None]:
    """The mean image (float, H x W x C) of each class, None for a class without images."""
    masks = (labels == label for label in range(n_classes))
    return [images[mask].mean(axis=0) if mask.any() else None for mask in masks]


def mean_images_figure(images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], title: str) -> Figure:
    """The mean image of every class titled with its name, on the pixels' 0-255 scale (one mosaic, so it stays fast)."""
    height, width, _ = shape = images.shape[1:]
    columns = min(MEAN_COLUMNS, len(class_names))
    n_rows = -(-len(class_names) // columns)
    cell = min(2 * CELL_INCHES, GRID_MAX_INCHES / n_rows)
    band = int(np.ceil(TITLE_INCHES / cell * height))  # white pixel rows above each image for the titles
    means = class_means(images, labels, len(class_names))
    tiles = [np.full(shape, 255, dtype=np.uint8) if mean is None else np.round(mean).astype(np.uint8) for mean in means]
    rows = [np.stack(tiles[start : start + columns]) for start in range(0, len(tiles), columns)]
    figure = Figure(figsize=(max(MIN_WIDTH_INCHES, cell * columns + 0.4), (cell + TITLE_INCHES) * n_rows + 0.5))
    axes = figure.subplots()
    _show(axes, _mosaic(rows, columns, shape, band))
    _bare(axes)
    for index, (name, mean) in enumerate(zip(class_names, means, strict=True)):
        row, column = divmod(index, columns)
        axes.text(
            column * (width + 1) + width / 2,
            row * (band + height + 1) + band - 0.5,
            f"{name} (no images)" if mean is None else name,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_title(title)
    figure.tight_layout()
    return figure


def pixel_histogram_figure(images: np.ndarray, title: str) -> Figure:
    """How often each pixel value 0-255 occurs, one line per channel, on a log scale."""
    counts = pixel_histogram(images)
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    edges = np.arange(PIXEL_VALUES + 1)
    if len(counts) == 1:
        axes.stairs(counts[0], edges, fill=True, alpha=0.8)
    else:
        for channel, name in zip(counts, _channel_names(len(counts)), strict=True):
            axes.stairs(channel, edges, label=name, color=name if len(counts) == 3 else None)
        axes.legend()
    axes.set_yscale("log")
    axes.set_xlim(0, PIXEL_VALUES)
    axes.set_xlabel("pixel value")
    axes.set_ylabel("pixels")
    axes.grid(alpha=0.3)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def write_data_report(data: SearchData, folder: Path) -> list[Path]:
    """Write the report's figures (PNG), class counts (CSV) and summary (JSON) into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = class_counts(data)
    shown = figure_images(data.train)
    x, y, name = shown.x, shown.y, data.name
    figures = [
        _save(class_counts_figure(counts, f"{name}: images per class"), folder / "class_counts.png"),
        _save(samples_figure(x, y, data.class_names, f"{name}: train samples"), folder / "samples.png"),
        _save(
            mean_images_figure(x, y, data.class_names, f"{name}: mean train image per class"),
            folder / "mean_images.png",
        ),
        _save(pixel_histogram_figure(x, f"{name}: train pixel values"), folder / "pixel_histogram.png"),
    ]
    table, summary_file = folder / "class_counts.csv", folder / "summary.json"
    counts.to_csv(table, index=False)
    summary_file.write_text(json.dumps(summary(data), indent=2) + "\n", encoding="utf-8")
    lists = []
    for key in FILE_LISTS:
        if data.details.get(key):
            lists.append(folder / f"{key}.txt")
            lists[-1].write_text("".join(f"{name}\n" for name in data.details[key]), encoding="utf-8")
    return [*figures, table, summary_file, *lists]


@dataclass(frozen=True)
class DataReport:
    """An objective's data as `atelier data` reports it: the data, its summary figures and the files written."""

    data: SearchData
    facts: dict[str, object]
    files: list[Path]
    seconds: float  # to write the files


def report_data(
    objective_name: str, data_dir: Path | None, folder: Path | None, images: Path | None = None
) -> DataReport:
    """Load an objective's train and validation images (or those of the folder `images`) and write their report
    (default: data-report/OBJECTIVE)."""
    from search.config.objectives import images_objective, load_objective
    from search.data import load_search_data

    objective = images_objective(images) if images else load_objective(objective_name)
    folder = folder or Path("data-report") / objective.name
    check_output_folder(folder)
    data = load_search_data(objective, data_dir)
    started = time.perf_counter()
    files = write_data_report(data, folder)
    return DataReport(data, summary(data), files, time.perf_counter() - started)


def _save(figure: Figure, path: Path) -> Path:
    """Write `figure` as PNG and free what it holds."""
    figure.savefig(path)
    figure.clear()
    return path


def _mosaic(rows: list[np.ndarray], columns: int, shape: tuple[int, ...], band: int = 0) -> np.ndarray:
    """Rows of images tiled into one uint8 array on white.

    Each row of images has `band` white pixel rows above it (room for titles), each image a white line of one
    pixel after it; a short row ends in white.
    """
    height, width, channels = shape
    block = band + height + 1
    mosaic = np.full((len(rows) * block, columns * (width + 1), channels), 255, dtype=np.uint8)
    for row, row_images in enumerate(rows):
        for column, image in enumerate(row_images):
            top, left = row * block + band, column * (width + 1)
            mosaic[top : top + height, left : left + width] = image
    return mosaic


def _show(axes: Axes, image: np.ndarray) -> None:
    """A uint8 image, gray for one channel and colour for three, on the fixed 0-255 scale."""
    if image.shape[-1] == 1:
        axes.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        axes.imshow(image, interpolation="nearest")


def _bare(axes: Axes) -> None:
    """No ticks and no frame: the axes only hold a mosaic."""
    axes.set_xticks([])
    axes.set_yticks([])
    axes.tick_params(left=False)
    for spine in axes.spines.values():
        spine.set_visible(False)


def _channel_names(channels: int) -> list[str]:
    return ["red", "green", "blue"] if channels == 3 else [f"channel {index}" for index in range(channels)]
