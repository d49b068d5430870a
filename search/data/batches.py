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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from search.backend import keras, tf  # TensorFlow as atelier configures it
from search.data.cache import read_records

if TYPE_CHECKING:
    from search.data.images import CachedImages, ImageSet

PREFETCH = 2  # batches ready ahead of the training step
PREDICT_BATCH = 1024


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, mirror: bool = False) -> tf.data.Dataset:
    """One epoch of (images, labels) batches of `x` and `y`, in a new random order each epoch if `shuffle`
    (reproducible from TensorFlow's seed, as `keras.utils.set_random_seed` sets it), mirrored if `mirror`."""
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(len(x), reshuffle_each_iteration=True)

    def gather(batch: tf.Tensor, arrays: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(arrays[0], batch), tf.gather(arrays[1], batch)

    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()  # zipped, not captured: no constant in a graph
    return _finished(tf.data.Dataset.zip(indices.batch(batch_size), arrays).map(gather), mirror)


def streamed_batches(images: CachedImages, batch_size: int, *, shuffle: bool, mirror: bool = False) -> tf.data.Dataset:
    """One epoch of (images, labels) batches read from the cache's records file, in a new order each epoch."""
    order = tf.data.Dataset.range(len(images))
    if shuffle:
        order = order.shuffle(len(images), reshuffle_each_iteration=True)
    records, labels, shape = images.indices, images.y, images.image_shape

    def read(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return read_records(images.file, shape, records[batch]), labels[batch]

    def load(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(read, [batch], (tf.uint8, tf.as_dtype(labels.dtype)), stateful=False)
        x.set_shape((None, *shape))
        y.set_shape((None, *labels.shape[1:]))
        return x, y

    return _finished(order.batch(batch_size).map(load), mirror)


def predict_proba(model: keras.Model, images: ImageSet, *, mirror: bool = False) -> np.ndarray:
    """The model's class probabilities for every image, in order (of their mirror images if `mirror`)."""
    return model.predict(images.batches(PREDICT_BATCH, shuffle=False, mirror=mirror), verbose=0)


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
