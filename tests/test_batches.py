"""`batches`: every image once an epoch with its own label, a new order each epoch, reproducible from a seed,
and no tf.data autotuner (whose sleeping thread held up every epoch's start)."""

from __future__ import annotations

import numpy as np
import pytest

from search.backend import keras
from search.data.batches import batches

COUNT, BATCH = 1_000, 96  # 10 full batches and one of 40


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(COUNT, dtype=np.float32).reshape(COUNT, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
    return x, np.arange(COUNT) % 10


def _epoch(dataset) -> tuple[np.ndarray, list[int]]:
    """The images' numbers in the order one pass over `dataset` gives them, and the batch sizes."""
    order, sizes = [], []
    for images, labels in dataset:
        numbers = images.numpy()[:, 0, 0, 0].astype(int)
        assert (labels.numpy() == numbers % 10).all(), "a label left its image"
        order.extend(numbers)
        sizes.append(len(numbers))
    return np.array(order), sizes


def test_an_epoch_holds_every_image_once_in_batches_of_the_size_asked() -> None:
    order, sizes = _epoch(batches(*_arrays(), BATCH, shuffle=True))
    assert sorted(order) == list(range(COUNT))
    assert sizes == [BATCH] * (COUNT // BATCH) + [COUNT % BATCH]


def test_unshuffled_batches_keep_the_arrays_order() -> None:
    order, _ = _epoch(batches(*_arrays(), BATCH, shuffle=False))
    assert order.tolist() == list(range(COUNT))


def test_each_epoch_has_a_new_order_and_a_seed_gives_the_same_orders_again() -> None:
    def two_epochs(seed: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(seed)
        dataset = batches(*_arrays(), BATCH, shuffle=True)
        return [_epoch(dataset)[0] for _ in range(2)]

    first, second = two_epochs(0)
    assert not (first == second).all()
    again = two_epochs(0)
    assert (again[0] == first).all() and (again[1] == second).all()
    assert not (two_epochs(1)[0] == first).all()


def test_the_autotuner_is_off() -> None:
    assert batches(*_arrays(), BATCH, shuffle=True).options().autotune.enabled is False


@pytest.mark.parametrize("labels", ["integers", "one-hot"])
def test_keras_trains_on_them(labels: str) -> None:
    x, y = _arrays()
    one_hot = labels == "one-hot"
    targets = keras.utils.to_categorical(y, 10) if one_hot else y
    loss = keras.losses.CategoricalCrossentropy() if one_hot else keras.losses.SparseCategoricalCrossentropy()
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.compile("adam", loss)
    seen = []
    count_steps = keras.callbacks.LambdaCallback(on_train_batch_end=lambda step, logs: seen.append(step))
    model.fit(batches(x, targets, BATCH, shuffle=True), shuffle=False, epochs=2, callbacks=[count_steps], verbose=0)
    assert seen == list(range(COUNT // BATCH + 1)) * 2
