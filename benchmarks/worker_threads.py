"""Benchmark: training throughput of concurrent worker processes by TensorFlow threads per process.

`atelier run --workers 2` gives each worker a share of the cores. This measures, on the same CNN
and data, the images per second of P processes training at once with T intra-op threads each, and
how busy the cores were, so the cost of giving every worker all the cores (oversubscribed while
all train, every core used while one trains alone) can be weighed against the cores left idle by
one thread per worker.

    .venv/bin/python benchmarks/worker_threads.py --epochs 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.synchronize
import time

from search.engine.cores import CoreMeter

PARAMS = {
    "conv_blocks": 2,
    "conv_filters": 48,
    "dense_layers": 1,
    "dense_units_0": 128,
    "batch_size": 128,
    "learning_rate": 1e-3,
}


def train(threads: int, epochs: int, objective: str, start: multiprocessing.synchronize.Event) -> None:
    """Build the CNN and fit it for `epochs` on the objective's train split, with `threads` threads."""
    from search.backend import keras, limit_threads
    from search.config.objectives import load_objective
    from search.data import load_search_data
    from search.models.build import build_model

    limit_threads(threads)
    data = load_search_data(load_objective(objective))
    model = build_model(PARAMS, data.input_shape, data.n_classes)
    model.fit(data.train.x[:256], data.train.y[:256], batch_size=128, epochs=1, verbose=0)  # traced before timing
    start.wait()
    model.fit(data.train.x, data.train.y, batch_size=128, epochs=epochs, verbose=0)
    keras.backend.clear_session()


def run(processes: int, threads: int, epochs: int, objective: str) -> tuple[float, float | None]:
    """Seconds for `processes` processes of `threads` threads to train at once, and the cores' busy share."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=train, args=(threads, epochs, objective, start)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(20)  # every process has imported, loaded and traced (they wait on `start`)
    meter, began = CoreMeter(), time.perf_counter()
    start.set()
    for worker in workers:
        worker.join()
    return time.perf_counter() - began, meter.busy_share()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="fashion-mnist-quick")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--layouts", nargs="+", default=["1x2", "2x1", "2x2"], help="PROCESSESxTHREADS each")
    args = parser.parse_args()
    for layout in args.layouts:
        processes, threads = (int(part) for part in layout.split("x"))
        seconds, busy = run(processes, threads, args.epochs, args.objective)
        epochs_per_minute = processes * args.epochs / seconds * 60
        shown = "unmeasured" if busy is None else f"{busy:.0%}"
        print(
            f"{processes} process(es) x {threads} thread(s): {seconds:6.1f} s, {epochs_per_minute:5.2f} epochs/min "
            f"in all, cores busy {shown}",
            flush=True,
        )


if __name__ == "__main__":
    main()
