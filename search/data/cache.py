"""The decoded cache: a folder's images decoded once into one file of fixed-size raw records, under the store.

A search decodes its images once; every later run, worker and finalist reads the cache instead of the files,
either whole into memory or a batch at a time (`read_records`), so nothing decodes or pickles the data set per
worker. The cache is named by a digest of the files (path, size, modification time), their labels and the image
format: change any and a new cache is made. It is written beside its final name and renamed when complete, so a
killed decode leaves no cache that looks whole, and a decode that fails on bad input leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from search.data.decode import ImageFormat, UnreadableImage, decode_many
from search.errors import SetupError

RECORDS = "images.u8"  # the raw records, one image after another
INDEX = "index.json"  # the files kept, their labels, the format, the files skipped as unreadable


@dataclass(frozen=True)
class Cache:
    """A complete cache: its records file, what each record is, and what was skipped."""

    folder: Path
    image_format: ImageFormat
    files: tuple[str, ...]  # relative to the data's root, one per record
    labels: np.ndarray
    skipped: tuple[str, ...]  # unreadable files left out (when the objective skips them)

    @property
    def records(self) -> Path:
        return self.folder / RECORDS

    def load(self) -> np.ndarray:
        """Every record in memory, as (N, height, width, channels) uint8."""
        return np.fromfile(self.records, dtype=np.uint8).reshape(len(self.files), *self.image_format.shape)


def cache_name(root: Path, files: Sequence[str], labels: np.ndarray, image_format: ImageFormat) -> str:
    """A digest of the files as they are on disk, their labels and the format."""
    digest = hashlib.sha256(json.dumps(asdict(image_format), sort_keys=True).encode())
    for name, label in zip(files, labels.tolist(), strict=True):
        stat = (root / name).stat()
        digest.update(f"{name}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"images-{digest.hexdigest()[:20]}"


def decoded_cache(
    cache_root: Path,
    root: Path,
    files: Sequence[str],
    labels: np.ndarray,
    image_format: ImageFormat,
    on_unreadable: Callable[[UnreadableImage], None],
) -> Cache:
    """The cache of these files, decoded now unless an earlier run made it.

    `on_unreadable` is told of each file that does not decode: it raises to stop (nothing is left behind),
    or returns to skip the file.
    """
    folder = cache_root / cache_name(root, files, labels, image_format)
    if (folder / INDEX).is_file():
        return _read_index(folder)
    made = _missing_parents(folder)
    scratch = Path(tempfile.mkdtemp(prefix=".decoding-", dir=_make(cache_root)))
    try:
        kept, kept_labels, skipped = [], [], []
        with open(scratch / RECORDS, "wb") as out:
            decoded = decode_many((root / name for name in files), image_format)
            for name, label, pixels in zip(files, labels.tolist(), decoded, strict=True):
                if isinstance(pixels, UnreadableImage):
                    on_unreadable(pixels)
                    skipped.append(name)
                    continue
                out.write(pixels.tobytes())
                kept.append(name)
                kept_labels.append(label)
        index = {"format": asdict(image_format), "files": kept, "labels": kept_labels, "skipped": skipped}
        (scratch / INDEX).write_text(json.dumps(index))
        os.replace(scratch, folder) if not folder.exists() else shutil.rmtree(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        for created in made:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return _read_index(folder)


@contextmanager
def discarded_on_setup_error(cache_root: Path) -> Iterator[None]:
    """Caches made inside the block are removed if it raises a SetupError, with the folders made to hold them.

    A complete cache can still be refused by a later check (a class left with one image after the test part is
    held out, a class none of whose images decode): a command stopped by bad input leaves no cache behind, and
    no store folder that only the cache made.
    """
    made = [folder for folder in (cache_root, *cache_root.parents) if not folder.exists()][-1:]
    before = set(cache_root.iterdir()) if not made else set()
    try:
        yield
    except SetupError:
        for folder in made or sorted(set(cache_root.iterdir()) - before):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def read_records(file: Path, shape: tuple[int, int, int], indices: np.ndarray) -> np.ndarray:
    """The records at `indices` of a records file, read one by one (the page cache, not this process, holds them)."""
    size = shape[0] * shape[1] * shape[2]
    out = np.empty((len(indices), size), dtype=np.uint8)
    descriptor = os.open(file, os.O_RDONLY)
    try:
        for row, index in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
            os.preadv(descriptor, [out[row]], index * size)
    finally:
        os.close(descriptor)
    return out.reshape(len(indices), *shape)


def _read_index(folder: Path) -> Cache:
    index = json.loads((folder / INDEX).read_text())
    image_format = ImageFormat(tuple(index["format"]["size"]), index["format"]["channels"], index["format"]["resize"])
    labels = np.asarray(index["labels"], dtype=np.int64)
    return Cache(folder, image_format, tuple(index["files"]), labels, tuple(index["skipped"]))


def _missing_parents(folder: Path) -> list[Path]:
    """The outermost folders above `folder` (itself excluded) that do not exist yet."""
    missing = [parent for parent in folder.parents if not parent.exists()]
    return missing[-1:]  # removing the outermost removes the rest


def _make(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder
