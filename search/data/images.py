"""The images a search trains, validates and tests on: in memory (`Images`), or read from a decoded cache.

Both hold raw 0-255 uint8 pixels of one shape (height, width, channels) and int64 labels (or one-hot rows, for a
KerasTuner hypermodel that wants them), and both feed Keras through `batches`: the trial core, the finalists, the
refit, the gates and the evaluation never ask which kind they have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

    from search.data.batches import Shuffle


class ImageSet(Protocol):
    """What every kind of images offers."""

    y: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    def batches(self, batch_size: int, *, shuffle: Shuffle, mirror: bool = False) -> tf.data.Dataset: ...

    def take(self, indices: np.ndarray) -> ImageSet: ...

    def with_labels(self, y: np.ndarray) -> ImageSet: ...

    def joined(self, other: ImageSet) -> ImageSet: ...

    def arrays(self) -> np.ndarray: ...

    def fingerprint(self) -> bytes: ...


@dataclass(frozen=True)
class Images:
    """Images held in memory with their labels."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.x[index]

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's shape: (height, width, channels)."""
        return tuple(self.x.shape[1:])

    def batches(self, batch_size: int, *, shuffle: Shuffle, mirror: bool = False) -> tf.data.Dataset:
        """Batches of (images, labels) for Keras, in a new order each epoch if `shuffle`, mirrored if `mirror`."""
        from search.data.batches import batches

        return batches(self.x, self.y, batch_size, shuffle=shuffle, mirror=mirror)

    def take(self, indices: np.ndarray) -> Images:
        return Images(self.x[indices], self.y[indices])

    def with_labels(self, y: np.ndarray) -> Images:
        return replace(self, y=y)

    def joined(self, other: ImageSet) -> Images:
        """These images followed by `other`'s."""
        return Images(np.concatenate([self.x, other.arrays()]), np.concatenate([self.y, other.y]))

    def arrays(self) -> np.ndarray:
        """Every image in memory."""
        return self.x

    def fingerprint(self) -> bytes:
        """Bytes that change whenever the images or labels do."""
        return b"".join(np.ascontiguousarray(a).tobytes() for a in (self.x, self.y))


@dataclass(frozen=True)
class CachedImages:
    """Images decoded once into a cache file of raw pixels (`search.data.cache`), read a batch at a time.

    Nothing holds them all: a worker reads the records its batches need, so a search's memory does not grow
    with its data. `indices` picks the records (a split, a subsample) in order.
    """

    file: Path
    image_shape: tuple[int, int, int]
    indices: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.take(np.asarray([index])).arrays()[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.image_shape

    def batches(self, batch_size: int, *, shuffle: Shuffle, mirror: bool = False) -> tf.data.Dataset:
        from search.data.batches import streamed_batches

        return streamed_batches(self, batch_size, shuffle=shuffle, mirror=mirror)

    def take(self, indices: np.ndarray) -> CachedImages:
        return replace(self, indices=self.indices[indices], y=self.y[indices])

    def with_labels(self, y: np.ndarray) -> CachedImages:
        return replace(self, y=y)

    def joined(self, other: ImageSet) -> ImageSet:
        """These images followed by `other`'s: still read from the cache when both come from the same file."""
        if isinstance(other, CachedImages) and other.file == self.file:
            return replace(
                self, indices=np.concatenate([self.indices, other.indices]), y=np.concatenate([self.y, other.y])
            )
        return Images(self.arrays(), self.y).joined(other)

    def arrays(self) -> np.ndarray:
        """The selected images read into memory: for a few of them (a gallery, an example), not for training."""
        from search.data.cache import read_records

        return read_records(self.file, self.image_shape, self.indices)

    def fingerprint(self) -> bytes:
        return str(self.file).encode() + b"".join(np.ascontiguousarray(a).tobytes() for a in (self.indices, self.y))


@dataclass(frozen=True)
class SearchData:
    """What a search trains and validates on; it holds no test images."""

    name: str
    source: str
    train: ImageSet
    val: ImageSet
    class_names: tuple[str, ...]
    details: Mapping[str, object] = field(default_factory=dict)  # a folder's: sizes, modes, files ignored, ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def streamed(self) -> bool:
        """Whether the trials read the images from the cache rather than from memory."""
        return isinstance(self.train, CachedImages)
