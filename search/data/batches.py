"""The batches Keras's `fit` and `predict` read: tf.data pipelines without its autotuner, from memory or the cache.

Keras feeds NumPy arrays to `fit` through a tf.data pipeline with autotuning on. Its tuning thread sleeps
between rounds, twice as long after each round and up to 60 s, and an epoch's iterator is not deleted
before that thread wakes. With another process training beside it, an epoch could begin with the process
idle for up to a minute (in `make best`, a finalist idle 48 s at an epoch's start; on an idle machine no
wait was seen). These batches are Keras's kind (a shuffled order of indices each epoch, each batch
gathered at once), with autotuning off; their element-by-element shuffle costs about 9% of an epoch when
there is no wait (`benchmarks/epoch_stall.py`).

Streamed batches draw the same kind of order over a cache's records and read each batch's records from the
file (`search.data.cache.read_records`) on a tf.data thread, PREFETCH batches ahead of the training step.

A trial's batches follow an `EpochOrder`: epoch e's order is a function of the trial's seed and e alone, so a
trial paused after epoch e and resumed sees the batches it would have seen training straight through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from search.backend import keras, tf  # TensorFlow as atelier configures it
from search.data.cache import read_records

if TYPE_CHECKING:
    from search.data.images import CachedImages, ImageSet

PREFETCH = 2  # batches ready ahead of the training step
PREDICT_BATCH = 1024
ENDLESS = 2**62  # epochs of an `EpochOrder`: Keras's `steps_per_epoch` cuts them


@dataclass(frozen=True)
class EpochOrder:
    """Shuffled batches from epoch `first` (0-based) on, epoch e in an order drawn from (`seed`, e) alone, one epoch
    after another without end: fit them with `steps_per_epoch = steps(n, batch_size)`."""

    seed: int
    first: int = 0


Shuffle = bool | EpochOrder  # False: in order; True: a new order each epoch from TensorFlow's seed


def steps(n: int, batch_size: int) -> int:
    """Batches in one epoch of `n` images."""
    return -(-n // batch_size)


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: Shuffle, mirror: bool = False
) -> tf.data.Dataset:
    """(images, labels) batches of `x` and `y`: one epoch in order, or in a new random order each epoch if
    `shuffle` is True (reproducible from TensorFlow's seed, as `keras.utils.set_random_seed` sets it), or the
    epochs of an `EpochOrder`; mirrored if `mirror`."""
    indices = _order(len(x), batch_size, shuffle)

    def gather(batch: tf.Tensor, arrays: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(arrays[0], batch), tf.gather(arrays[1], batch)

    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()  # zipped, not captured: no constant in a graph
    return _finished(tf.data.Dataset.zip(indices, arrays).map(gather), mirror)


def streamed_batches(
    images: CachedImages, batch_size: int, *, shuffle: Shuffle, mirror: bool = False
) -> tf.data.Dataset:
    """(images, labels) batches read from the cache's records file, ordered as `batches` orders them."""
    order = _order(len(images), batch_size, shuffle)
    records, labels, shape = images.indices, images.y, images.image_shape

    def read(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return read_records(images.file, shape, records[batch]), labels[batch]

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(read, [batch], (tf.uint8, tf.as_dtype(labels.dtype)), stateful=False)
        x.set_shape((None, *shape))
        y.set_shape((None, *labels.shape[1:]))
        return x, y

    return _finished(order.map(load), mirror)


def predict_proba(model: keras.Model, images: ImageSet, *, mirror: bool = False) -> np.ndarray:
    """The model's class probabilities for every image, in order (of their mirror images if `mirror`)."""
    return model.predict(images.batches(PREDICT_BATCH, shuffle=False, mirror=mirror), verbose=0)


def _order(n: int, batch_size: int, shuffle: Shuffle) -> tf.data.Dataset:
    """Batches of indices into `n` images, as `shuffle` says."""
    if isinstance(shuffle, EpochOrder):
        seed = tf.constant(shuffle.seed, tf.int64)

        def epoch(number: tf.Tensor) -> tf.data.Dataset:
            def permuted(positions: tf.Tensor) -> tf.Tensor:
                return tf.random.experimental.index_shuffle(positions, tf.stack([seed, number]), n - 1)

            return tf.data.Dataset.range(n).batch(batch_size).map(permuted)

        return tf.data.Dataset.range(shuffle.first, ENDLESS).flat_map(epoch)
    indices = tf.data.Dataset.range(n)
    if shuffle:
        indices = indices.shuffle(n, reshuffle_each_iteration=True)
    return indices.batch(batch_size)


def _finished(dataset: tf.data.Dataset, mirror: bool) -> tf.data.Dataset:
    if mirror:
        dataset = dataset.map(_mirrored)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.prefetch(PREFETCH).with_options(options)


def _mirrored(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch's images flipped left to right (width is the axis after height)."""
    return tf.reverse(x, axis=[2]), y
