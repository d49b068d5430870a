"""Benchmark: how busy the cores are over a whole `atelier run` (or `atelier best`), and where they wait.

Runs the command in a fresh folder (`--store` there) while sampling `/proc/stat` every half second,
timestamps each line the command prints, and reports the busy share over the whole command and by
phase: start-up (to the first trial's start), the trials (to the search's summary line), and the
rest (the study report; for `atelier best` also the finalists, the ensemble and the promotion, split
at the "search done" line), with a strip of the busy share per 10 seconds.

    .venv/bin/python benchmarks/busy_cores.py -- run --objective fashion-mnist-quick
    .venv/bin/python benchmarks/busy_cores.py -- best --objective fashion-mnist-quick --budget 7m
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from search.engine.cores import core_times

TRIAL_LINE = re.compile(r"\] trial .*\s([\d.]+) s  \|")  # a trial's line ends its seconds with "s  |"
SAMPLE_S = 0.5
STRIP_S = 10.0


def sample(samples: list[tuple[float, int, int]], stop: threading.Event) -> None:
    """Append (seconds, busy ticks, total ticks) every SAMPLE_S until `stop` is set."""
    while not stop.is_set():
        times = core_times()
        if times is not None:
            samples.append((time.perf_counter(), times.busy, times.total))
        stop.wait(SAMPLE_S)


def share(samples: list[tuple[float, int, int]], start: float, end: float) -> float:
    """Busy share between the samples nearest `start` and `end`."""
    inside = [s for s in samples if start - SAMPLE_S / 2 <= s[0] <= end + SAMPLE_S / 2]
    if len(inside) < 2 or inside[-1][2] == inside[0][2]:
        return float("nan")
    return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atelier_args", nargs="+", help="the atelier command and its arguments (after --)")
    args = parser.parse_args()
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(samples, stop), daemon=True)
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="atelier-busy-") as folder:
        command = [str(Path(sys.executable).parent / "atelier"), *args.atelier_args]
        sampler.start()
        started = time.perf_counter()
        with subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append((time.perf_counter(), line.rstrip()))
        ended = time.perf_counter()
        stop.set()
        sampler.join()
    if process.returncode:
        sys.exit(f"atelier {args.atelier_args[0]} exited {process.returncode}")
    trials = [(t, float(m.group(1))) for t, line in lines if (m := TRIAL_LINE.search(line))]
    first_trial = min((t - seconds for t, seconds in trials), default=ended)
    summary = next((t for t, line in lines if line.startswith("done:")), ended)
    searched = next((t for t, line in lines if line.startswith("search done")), ended)
    for t, line in lines:
        print(f"{t - started:7.1f} s  {line}")
    print(f"\nwhole command: {ended - started:.1f} s, cores busy {share(samples, started, ended):.1%}")
    for name, start, end in (
        ("start-up, to the first trial's start", started, first_trial),
        ("trials, to the summary line", first_trial, summary),
        ("summary to the study report's end", summary, searched),
        ("after the search (atelier best's finalists, ensemble, promotion)", searched, ended),
    ):
        print(f"  {name}: {end - start:.1f} s, busy {share(samples, start, end):.1%}")
    strip = [share(samples, t, t + STRIP_S) for t in _steps(started, ended)]
    print(f"busy per {STRIP_S:g} s: " + " ".join(f"{value * 100:.0f}" for value in strip))


def _steps(start: float, end: float) -> list[float]:
    count = int((end - start) // STRIP_S) + 1
    return [start + i * STRIP_S for i in range(count)]


if __name__ == "__main__":
    main()
