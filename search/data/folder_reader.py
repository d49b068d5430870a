"""A folder objective's parts as images: decoded once into the store's cache, then held in memory or streamed.

`data.load = "auto"` streams when the decoded part would take more than `data.memory_limit` (by default
MEMORY_SHARE of the machine's memory): each search worker holds its own copy of in-memory images, so a
tenth of the memory for one copy keeps two workers, the parent and the finalists well inside it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np

from search.config.data_table import DataConfig
from search.data.cache import Cache, decoded_cache
from search.data.decode import UnreadableImage
from search.data.folder import FolderListing, FolderParts, folder_parts, unreadable_line
from search.data.images import CachedImages, Images, ImageSet
from search.errors import SetupError

MEMORY_SHARE = 0.1  # of the machine's memory, for the decoded images of a part held in memory
SIZES_SHOWN = 10  # the most common image sizes a folder's details list


class FolderReader:
    """Reads the train or test part of a folder objective; `details` says what the train part held."""

    def __init__(self, config: DataConfig, cache_root: Path | None) -> None:
        self.config = config
        self.cache_root = cache_root
        self.details: dict[str, object] = {}

    @cached_property
    def parts(self) -> FolderParts:
        return folder_parts(self.config)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.parts.train.class_names

    def __call__(self, part: str) -> ImageSet:
        listing = self.parts.train if part == "train" else self.parts.test
        image_format = self.parts.image_format
        streamed = self.config.load == "stream" or (
            self.config.load == "auto" and len(listing) * image_format.record_bytes > memory_limit(self.config)
        )
        cache = self._cache(listing, streamed)
        if part == "train":
            self.details = self._describe(cache, streamed)
        if streamed:
            return CachedImages(cache.records, image_format.shape, np.arange(len(cache.files)), cache.labels)
        return Images(cache.load(), cache.labels)

    def _cache(self, listing: FolderListing, streamed: bool) -> Cache:
        root = self.cache_root or _scratch_root()

        def unreadable(image: UnreadableImage) -> None:
            if not self.config.skip_unreadable:
                raise SetupError(unreadable_line(image))

        cache = decoded_cache(root, listing.root, listing.files, listing.labels, self.parts.image_format, unreadable)
        if len(set(cache.labels.tolist())) < len(listing.class_names):
            missing = sorted(set(range(len(listing.class_names))) - set(cache.labels.tolist()))
            raise SetupError(
                f"{listing.root / listing.class_names[missing[0]]}: none of its images decode; "
                "replace them or remove the folder"
            )
        return cache

    def _describe(self, cache: Cache, streamed: bool) -> dict[str, object]:
        parts = self.parts
        return {
            "root": str(parts.train.root),
            "image_size": list(parts.image_format.size),
            "channels": parts.image_format.channels,
            "resize": parts.image_format.resize,
            "sizes": {f"{h}x{w}": count for (h, w), count in parts.sizes.most_common(SIZES_SHOWN)},
            "distinct_sizes": len(parts.sizes),
            "modes": dict(parts.modes),
            "ignored": list(parts.train.ignored),
            "skipped": list(cache.skipped),
            "test_images": len(parts.test),
            "test_held_out": parts.held_out,
            "held_out_files": list(parts.test.files) if parts.held_out else [],
            "load": "stream" if streamed else "memory",
            "cache": str(cache.folder),
        }


def memory_limit(config: DataConfig) -> int:
    """Bytes a part's decoded images may take in memory before `load = "auto"` streams them."""
    if config.memory_limit is not None:
        return config.memory_limit
    return int(MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _scratch_root() -> Path:
    """A cache folder for a command that has no store (`atelier data`), removed when it exits."""
    folder = Path(tempfile.mkdtemp(prefix="atelier-images-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
