"""Batches of in-memory images for Keras's `fit`, through tf.data without its autotuner.

Keras feeds NumPy arrays to `fit` through a tf.data pipeline with autotuning on. Its tuning thread sleeps
between rounds, twice as long after each round and up to 60 s, and an epoch's iterator is not deleted
before that thread wakes. With another process training beside it, an epoch could begin with the process
idle for up to a minute (in `make best`, a finalist idle 48 s at an epoch's start; on an idle machine no
wait was seen). These batches are Keras's kind (a shuffled order of indices each epoch, each batch
gathered from the arrays at once), with autotuning off; their element-by-element shuffle costs about 9%
of an epoch when there is no wait (`benchmarks/epoch_stall.py`).
"""

from __future__ import annotations

import numpy as np

from search.backend import tf  # TensorFlow as atelier configures it

PREFETCH = 2  # batches ready ahead of the training step


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool) -> tf.data.Dataset:
    """One epoch of (images, labels) batches of `x` and `y`, in a new random order each epoch if `shuffle`
    (reproducible from TensorFlow's seed, as `keras.utils.set_random_seed` sets it)."""
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(len(x), reshuffle_each_iteration=True)

    def gather(batch: tf.Tensor, arrays: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(arrays[0], batch), tf.gather(arrays[1], batch)

    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()  # zipped, not captured: no constant in a graph
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return tf.data.Dataset.zip(indices.batch(batch_size), arrays).map(gather).prefetch(PREFETCH).with_options(options)
