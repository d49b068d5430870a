"""An objective's `[data]` table: where its images come from, how they are read, and how the training part is split.

Every error is a `SetupError` whose one line names the file, the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config.checked_toml import Where, reject_unknown, typed

DATA_SOURCES = ("idx", "csv", "digits", "loader", "folder")
COLORS = ("auto", "grayscale", "rgb")
RESIZES = ("pad", "crop", "stretch")
LOADS = ("auto", "memory", "stream")
MEMORY_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|KiB|MiB|GiB)\s*", re.IGNORECASE)
UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
FOLDER_KEYS = ("test_fraction", "color", "image_size", "resize", "load", "memory_limit", "skip_unreadable")
MAX_SIDE = 1024  # the largest image side a search trains at


@dataclass(frozen=True)
class DataConfig:
    """Where an objective's images come from and how the training part is split."""

    source: str
    dir: Path | None = None
    train: Path | None = None  # a CSV file, or a folder of class folders
    test: Path | None = None
    loader: str | None = None
    class_names: tuple[str, ...] = ()
    validation_fraction: float = 0.1  # of the whole training part, kept for validation
    subsample: float | int = 1.0  # of the rest, trained on: a fraction, or a count of images
    # A folder's images (source = "folder"):
    test_fraction: float = 0.1  # held out as the test part when there is no test folder
    color: str = "auto"  # auto: grayscale only when every image is
    image_size: tuple[int, int] | None = None  # (height, width) trained at; None: from the images (data.folder)
    resize: str = "pad"  # how the aspect ratio is kept: pad (letterbox), crop (centre), stretch
    load: str = "auto"  # memory | stream | auto: stream when the decoded images exceed memory_limit
    memory_limit: int | None = None  # bytes the decoded images may take in memory; None: a share of the machine's
    skip_unreadable: bool = False  # an image that does not decode is skipped and counted, not an error


def data_config(where: Where, path: Path, raw: Any) -> DataConfig:
    """The `[data]` table of the objective file at `path`, checked; relative paths are the file's."""
    where.require(isinstance(raw, dict), "data", 'missing [data] table with at least source = "idx"')
    fields = {
        "source": str,
        "dir": str,
        "train": str,
        "test": str,
        "loader": str,
        "class_names": list,
        "validation_fraction": float,
        "subsample": float,
        "test_fraction": float,
        "color": str,
        "image_size": list,
        "resize": str,
        "load": str,
        "memory_limit": str,
        "skip_unreadable": bool,
    }
    reject_unknown(where, "data", raw, tuple(fields))
    where.require("source" in raw, "data.source", f"missing; use one of {', '.join(DATA_SOURCES)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "subsample" and isinstance(value, int) and not isinstance(value, bool) and value > 1:
            values[key] = value
            continue
        values[key] = typed(where, f"data.{key}", value, fields[key])
    source = values["source"]
    where.require(
        source in DATA_SOURCES, "data.source", f"unknown source '{source}'; use one of {', '.join(DATA_SOURCES)}"
    )
    for key in ("dir", "train", "test"):
        if key in values:
            folder = Path(values[key]).expanduser()
            values[key] = folder if folder.is_absolute() else (path.parent / folder).resolve()
    if "class_names" in values:
        names = values["class_names"]
        where.require(
            all(isinstance(n, str) for n in names) and len(names) >= 2,
            "data.class_names",
            "must list at least two names as strings",
        )
        values["class_names"] = tuple(names)
    if source == "csv":
        where.require("train" in values, "data.train", 'a csv source needs train = "path/to/train.csv"')
    if source == "loader":
        where.require(
            ":" in values.get("loader", ""), "data.loader", 'a loader source needs loader = "package.module:function"'
        )
    if source == "folder":
        _check_folder_keys(where, values)
    else:
        folder_only = [key for key in FOLDER_KEYS if key in values]
        where.require(
            not folder_only, f"data.{folder_only[0] if folder_only else ''}", 'applies to source = "folder" only'
        )
    fraction = values.get("validation_fraction", 0.1)
    where.require(0 < fraction < 1, "data.validation_fraction", "must be between 0 and 1, e.g. 0.1")
    subsample = values.get("subsample", 1.0)
    where.require(
        0 < subsample <= 1 or isinstance(subsample, int),
        "data.subsample",
        "must be a fraction in (0, 1] or a count of images above 1",
    )
    return DataConfig(**values)


def memory_size(text: str) -> int | None:
    """Bytes in a size such as "512MB" or "2GiB", or None when `text` is not one."""
    match = MEMORY_SIZE.fullmatch(text)
    return None if match is None else int(float(match.group(1)) * UNITS[match.group(2).lower()])


def _check_folder_keys(where: Where, values: dict[str, Any]) -> None:
    where.require(
        "train" in values, "data.train", 'a folder source needs train = "path/to/images" (one folder per class)'
    )
    for key, options in (("color", COLORS), ("resize", RESIZES), ("load", LOADS)):
        if key in values:
            where.require(
                values[key] in options, f"data.{key}", f"unknown value {values[key]!r}; use one of {', '.join(options)}"
            )
    fraction = values.get("test_fraction", 0.1)
    where.require(0 < fraction < 1, "data.test_fraction", "must be between 0 and 1, e.g. 0.1")
    if "image_size" in values:
        size = values["image_size"]
        whole = all(isinstance(side, int) and not isinstance(side, bool) for side in size)
        where.require(
            len(size) == 2 and whole and all(8 <= side <= MAX_SIDE for side in size),
            "data.image_size",
            f"must be [height, width] in pixels, each 8 to {MAX_SIDE}, e.g. [64, 64]",
        )
        values["image_size"] = (size[0], size[1])
    if "memory_limit" in values:
        limit = memory_size(values["memory_limit"])
        where.require(limit is not None and limit > 0, "data.memory_limit", 'must be a size such as "512MB" or "2GB"')
        values["memory_limit"] = limit
