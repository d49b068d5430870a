"""Benchmark: trials per hour with 1 worker against N, at equal total trials, for a dense net and a CNN.

Each configuration runs `atelier run` in a fresh folder on the same fixed architecture (so every
trial does the same work), without pruning, and times the whole command.

    .venv/bin/python benchmarks/workers.py --trials 8 --epochs 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPACES = {
    "dense": "[params]\nconv_blocks = 0\ndense_layers = 2\ndense_units = 256\nbatch_size = 128\n",
    "cnn": '[params]\nconv_blocks = 2\nconv_filters = 32\nconv_kernel_size = 3\nconv_padding = "same"\n'
    "dense_layers = 1\ndense_units = 128\nbatch_size = 128\n",
}


def run(space: str, workers: int, trials: int, epochs: int, objective: str) -> float:
    """Seconds the whole `atelier run` took."""
    with tempfile.TemporaryDirectory(prefix="atelier-workers-") as folder:
        (Path(folder) / "fixed.toml").write_text(SPACES[space])
        command = [
            str(Path(sys.executable).parent / "atelier"),
            "run",
            "--objective",
            objective,
            "--space",
            "fixed.toml",
            "--trials",
            str(trials),
            "--max-epochs",
            str(epochs),
            "--pruner",
            "none",
            "--timeout",
            "36000",
            "--workers",
            str(workers),
            "--quiet",
        ]
        started = time.perf_counter()
        subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="fashion-mnist-quick")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--spaces", nargs="+", choices=list(SPACES), default=list(SPACES))
    args = parser.parse_args()
    print(f"{args.trials} trials of {args.epochs} epochs on {args.objective}, no pruning", flush=True)
    for space in args.spaces:
        baseline = None
        for workers in args.workers:
            seconds = run(space, workers, args.trials, args.epochs, args.objective)
            rate = args.trials / seconds * 3600
            baseline = baseline or rate
            print(
                f"{space:<6} {workers} worker{'s' * (workers > 1)}: {seconds:7.1f} s, {rate:6.0f} trials/hour "
                f"({rate / baseline:.2f}x)",
                flush=True,
            )


if __name__ == "__main__":
    main()
