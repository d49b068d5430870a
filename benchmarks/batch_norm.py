"""Benchmark: how batch norm's moving-statistics momentum biases a short trial's validation accuracy.

Two conv blocks of 64 filters with batch norm, on `fashion-mnist-quick`'s training subsample,
batch 256, cosine decay: the validation accuracy after each epoch, and the training accuracy
after the last, for each momentum given. A validation accuracy far below the training accuracy
at the same epoch is the moving statistics lagging behind the weights, not a bad model.

    .venv/bin/python benchmarks/batch_norm.py --momenta 0.99 0.9 --epochs 5
"""

from __future__ import annotations

import argparse
import time

from search.backend import keras  # first: TensorFlow without its start-up chatter

# isort: split
from search.config.objectives import load_objective
from search.data import load_search_data
from search.models.build import build_model

PARAMS = {
    "conv_blocks": 2,
    "conv_filters": 64,
    "conv_batch_norm": True,
    "dense_layers": 1,
    "dense_units_0": 128,
    "batch_size": 256,
    "learning_rate": 2e-3,
    "lr_schedule": "cosine",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.99, 0.9])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--objective", default="fashion-mnist-quick")
    args = parser.parse_args()

    from search.engine.train import fit

    objective = load_objective(args.objective)
    data = load_search_data(objective)
    steps = -(-len(data.train) // PARAMS["batch_size"])
    print(f"{len(data.train)} train / {len(data.val)} validation images, {steps} steps an epoch")
    for momentum in args.momenta:
        keras.utils.set_random_seed(0)
        model = build_model(PARAMS | {"batch_norm_momentum": momentum}, data.input_shape, data.n_classes)
        started = time.perf_counter()
        result = fit(model, data, PARAMS, max_epochs=args.epochs, monitor="val_loss", direction="minimize")
        curve = " ".join(f"{epoch['val_accuracy']:.3f}" for epoch in result.history)
        print(
            f"momentum {momentum}: val_accuracy by epoch {curve}; train accuracy at the end "
            f"{result.history[-1]['accuracy']:.3f} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
