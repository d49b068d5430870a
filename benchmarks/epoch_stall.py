"""Benchmark: how long each epoch's start waits, with Keras's pipeline for NumPy arrays and with `search.data.batches`.

Trains one small CNN (a `make search` finalist's kind) on the objective's training images for a few epochs,
in a single-thread process per pipeline, without validation, as a finalist trains, and prints each
epoch's wall and CPU seconds (from its start to the next one's) and, after the first epoch, the wall
time and the idle time (wall beyond CPU): the process sleeping, as when Keras's pipeline deletes an
epoch's iterator only once tf.data's autotuning thread wakes (see `search/data/batches.py`).
Run it with nothing else training.

    .venv/bin/python benchmarks/epoch_stall.py --epochs 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

PARAMS = {
    "conv_blocks": 2,
    "conv_filters": 48,
    "conv_kernel_size": 3,
    "conv_padding": "same",
    "dense_layers": 1,
    "dense_units": 64,
    "learning_rate": 3e-3,
    "lr_schedule": "cosine",
    "batch_size": 128,
}
PIPELINES = ("keras arrays", "atelier batches")


def train(pipeline: str, objective: str, epochs: int, images: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) of each epoch, from one epoch's start to the next one's: as a finalist trains,
    on one thread, without validation."""
    from search.backend import keras, limit_threads

    limit_threads(1)
    from search.config.objectives import load_objective
    from search.data import load_search_data
    from search.data.batches import batches
    from search.models.build import build_model

    data = load_search_data(load_objective(objective))
    x, y = data.train.x[:images], data.train.y[:images]
    model = build_model(PARAMS, data.input_shape, data.n_classes)
    starts: list[tuple[float, float]] = []
    watch = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append((time.perf_counter(), time.process_time())),
        on_train_end=lambda logs: starts.append((time.perf_counter(), time.process_time())),
    )
    batch = int(PARAMS["batch_size"])
    if pipeline == "keras arrays":
        model.fit(x, y, batch_size=batch, epochs=epochs, callbacks=[watch], verbose=0)
    else:
        model.fit(batches(x, y, batch, shuffle=True), shuffle=False, epochs=epochs, callbacks=[watch], verbose=0)
    return [(after[0] - before[0], after[1] - before[1]) for before, after in zip(starts, starts[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=54_000, help="training images (at most the objective's)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow for each pipeline
    for pipeline in PIPELINES:
        with context.Pool(1) as pool:
            epochs = pool.apply(train, (pipeline, args.objective, args.epochs, args.images))
        wall = sum(w for w, _ in epochs[1:])  # the first epoch traces the step: left out
        idle = sum(max(0.0, w - c) for w, c in epochs[1:])
        each = " ".join(f"{w:.1f}/{c:.1f}" for w, c in epochs)
        print(f"{pipeline:16}  wall/CPU s per epoch: {each};  after the first: {wall:.1f} s, idle {idle:.1f} s")


if __name__ == "__main__":
    main()
