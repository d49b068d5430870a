"""Benchmark: what an epoch of a space's reference configuration costs, by threads and by ingredient.

Trains the space's `[reference]` (cnn-best's hand-made model by default) on a slice of the
objective's training images in this one process, after a traced warm-up fit, and prints seconds
per 1,000 images and per epoch on 13,500 and 54,000 images, for each thread count and with
augmentation or batch norm taken out, so the cost of each ingredient is known before a budget is
planned around it. Run it with nothing else training. oneDNN's kernels are on, as atelier sets them
(`search/backend.py`); `TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python benchmarks/epoch_cost.py` measures
TensorFlow's own kernels instead.

    .venv/bin/python benchmarks/epoch_cost.py --threads 1 2 --images 2560
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from search.config.schema import Scalar
from search.config.spaces import Space

VARIANTS = {
    "reference": {},
    "no augmentation": {"aug_flip": False, "aug_translate": 0.0, "aug_erase": 0.0},
    "no batch norm": {"conv_batch_norm": False},
}


def seconds_per_image(objective: str, space: str, change: dict[str, Scalar], threads: int, images: int) -> float:
    """Seconds a fit over `images` training images takes per image, after a traced warm-up fit."""
    from search.backend import limit_threads

    limit_threads(threads)
    from search.config.objectives import load_objective
    from search.config.spaces import load_space
    from search.data import load_search_data
    from search.models.build import build_model

    params = _reference(load_space(space)) | change
    data = load_search_data(load_objective(objective))
    model = build_model(params, data.input_shape, data.n_classes)
    x, y, batch = data.train.x[:images], data.train.y[:images], int(params["batch_size"])
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)  # traced before timing
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return (time.perf_counter() - started) / len(x)


def _reference(space: Space) -> dict[str, Scalar]:
    """The reference's full parameters, as the first trial of a study would draw them."""
    import optuna

    from search.models.sampling import sample

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.enqueue_trial(dict(space.reference))
    return sample(study.ask(), space)


def _measure(*args: object) -> float:
    """Run `seconds_per_image` in a fresh process, so each measurement has its own threads setting."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(seconds_per_image, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="fashion-mnist-best")
    parser.add_argument("--space", default="cnn-best")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--images", type=int, default=2560, help="training images timed per measurement (2560)")
    args = parser.parse_args()
    onednn = "off" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "on"
    print(f"{args.space} [reference], {args.images} images timed per row, oneDNN {onednn}")
    print(f"{'variant':<18}{'threads':>8}{'s / 1k images':>15}{'s / epoch 13.5k':>17}{'s / epoch 54k':>15}")
    for name, change in VARIANTS.items():
        for threads in args.threads:
            each = _measure(args.objective, args.space, change, threads, args.images)
            print(f"{name:<18}{threads:>8}{each * 1000:>15.2f}{each * 13500:>17.1f}{each * 54000:>15.1f}")


if __name__ == "__main__":
    main()
