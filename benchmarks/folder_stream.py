"""Benchmark: a folder of image files, decoded once and trained on from memory or streamed from the decoded cache.

Writes Fashion-MNIST's 60,000 training and 10,000 test images as PNG files in class folders (once), then prints
  decode  the decode rate of the 60,000 training PNGs into a fresh cache (images a second, on every core);
  epochs  the epoch times of a `cnn-fast`-sized CNN on the 54,000-image train split, in memory and streamed
          from the cache, one thread in one process each (as a trial of a two-worker search trains);
  memory  the peak memory (PSS, summed over the search's processes) of `atelier run` over the folder at a size
          whose decoded images exceed the `data.memory_limit` it sets, so the search streams (a space with a
          stride-4 stem, so that each trial's own memory stays small beside the data's).
Run it with nothing else training.

    .venv/bin/python benchmarks/folder_stream.py --folder /tmp/fashion-png decode epochs memory
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

PARAMS = {  # a cnn-fast trial's kind
    "conv_blocks": 2,
    "conv_filters": 48,
    "conv_kernel_size": 3,
    "conv_padding": "same",
    "dense_layers": 1,
    "dense_units": 128,
    "learning_rate": 2e-3,
    "batch_size": 128,
}
MEMORY_SIZE = (160, 160)  # the memory run's image size: 60,000 RGB images of it decode to 4.6 GB
MEMORY_LIMIT = "3GB"
STEM_SPACE = """\
description = "The memory run's space: a stride-4 stem, so a trial's own memory stays small beside the data's."

[params]
stem_stride = 4
stem_filters = 32
conv_blocks = 2
conv_filters = {choices = [32, 48]}
head = "average"
dense_layers = 1
dense_units = 64
learning_rate = {low = 1e-3, high = 3e-3, log = true}
batch_size = 64
"""


def write_folders(root: Path) -> None:
    """Fashion-MNIST as PNG files: root/train/CLASS/*.png (60,000) and root/test/CLASS/*.png (10,000)."""
    import numpy as np
    from PIL import Image

    from search.data import FASHION_CLASSES, IDX_PLACES, read_idx_pair

    if (root / "done").is_file():
        return
    started = time.perf_counter()
    for part in ("train", "test"):
        images = read_idx_pair(IDX_PLACES[0], part)
        for name in FASHION_CLASSES:
            (root / part / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
        for index, (pixels, label) in enumerate(zip(images.x[..., 0], images.y.tolist(), strict=True)):
            Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(
                root / part / FASHION_CLASSES[label].replace("/", "-") / f"{index:05d}.png"
            )
    (root / "done").write_text("")
    print(f"wrote 70,000 PNG files in {time.perf_counter() - started:.1f} s")


def objective_file(root: Path, extra: str = "", space: str = "cnn-fast") -> Path:
    path = root / f"objective-{hashlib.sha256((extra + space).encode()).hexdigest()[:8]}.toml"
    path.write_text(
        textwrap.dedent(f"""\
        [data]
        source = "folder"
        train = "train"
        test = "test"
        {extra}
        [search]
        space = "{space}"
        """)
    )
    return path


def decode(root: Path) -> None:
    from search.config.objectives import load_objective
    from search.data import reader

    with tempfile.TemporaryDirectory() as cache:
        read, _ = reader(load_objective(str(objective_file(root))).data, cache_root=Path(cache))
        started = time.perf_counter()
        images = read("train")
        seconds = time.perf_counter() - started
    print(f"decode: {len(images)} PNG files in {seconds:.1f} s, {len(images) / seconds:.0f} images a second")


def epoch_times(root: Path, load: str, epochs: int, cache: str) -> list[float]:
    from search.backend import keras, limit_threads

    limit_threads(1)
    from search.config.objectives import load_objective
    from search.data import load_search_data
    from search.models.build import build_model

    objective = load_objective(str(objective_file(root, f'load = "{load}"')))
    data = load_search_data(objective, cache_root=Path(cache))
    model = build_model(PARAMS, data.input_shape, data.n_classes)
    starts: list[float] = []
    watch = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_train_end=lambda logs: starts.append(time.perf_counter()),
    )
    model.fit(data.train.batches(128, shuffle=True), shuffle=False, epochs=epochs, callbacks=[watch], verbose=0)
    print(f"  {load}: {type(data.train).__name__} of {len(data.train)} images", flush=True)
    return [after - before for before, after in zip(starts, starts[1:], strict=False)]


def epochs(root: Path, count: int) -> None:
    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow for each
    with tempfile.TemporaryDirectory() as cache:
        with context.Pool(1) as pool:
            pool.apply(epoch_times, (root, "memory", 1, cache))  # decodes the cache: not timed below
        for load in ("memory", "stream"):
            with context.Pool(1) as pool:
                times = pool.apply(epoch_times, (root, load, count, cache))
            later = sum(times[1:]) / max(1, len(times) - 1)
            each = " ".join(f"{t:.1f}" for t in times)
            print(f"epochs {load:6}: {each} s (first {times[0]:.1f} s, later ones {later:.1f} s on average)")


def pss_of_tree(pid: int) -> int:
    """The proportional set size (bytes) of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        grown = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grown = True
    total = 0
    for member in tree:
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
    return total


def memory(root: Path) -> None:
    from search.config.data_table import memory_size

    height, width = MEMORY_SIZE
    extra = f'image_size = [{height}, {width}]\ncolor = "rgb"\nmemory_limit = "{MEMORY_LIMIT}"\nsubsample = 3000'
    (root / "stem.toml").write_text(STEM_SPACE)
    objective = objective_file(root, extra, space=str(root / "stem.toml"))
    decoded = 60_000 * height * width * 3
    with tempfile.TemporaryDirectory() as store:
        command = [sys.executable, "-m", "search.cli", "run", "--objective", str(objective), "--store", store]
        command += ["--trials", "4", "--max-epochs", "2", "--quiet"]
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak = [0]

        def watch() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], pss_of_tree(process.pid))
                time.sleep(0.25)

        watcher = threading.Thread(target=watch)
        watcher.start()
        output = process.communicate()[0]
        watcher.join()
        shutil.rmtree(store, ignore_errors=True)
    limit = memory_size(MEMORY_LIMIT)
    print(output.strip().splitlines()[-1] if output.strip() else "(no output)")
    print(
        f"memory: decoded images {decoded / 1e9:.2f} GB, memory_limit {limit / 1e9:.2f} GB; peak PSS of the search's "
        f"processes {peak[0] / 1e9:.2f} GB ({'under' if peak[0] < limit else 'OVER'} the limit), "
        f"{time.perf_counter() - started:.0f} s, exit {process.returncode}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fashion-png")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("parts", nargs="+", choices=("decode", "epochs", "memory"))
    args = parser.parse_args()
    write_folders(args.folder)
    for part in args.parts:
        {"decode": lambda: decode(args.folder), "epochs": lambda: epochs(args.folder, args.epochs)}.get(
            part, lambda: memory(args.folder)
        )()


if __name__ == "__main__":
    main()
