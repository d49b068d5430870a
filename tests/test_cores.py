"""The busy share of the cores, read from the real /proc/stat while this process works or sleeps."""

from __future__ import annotations

import os
import time

from search.engine.cores import CoreMeter, core_times


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_core_times_count_only_the_cores_asked_for() -> None:
    cores = os.sched_getaffinity(0)
    every, one = core_times(), core_times({min(cores)})
    assert every is not None and one is not None
    assert 0 <= one.busy <= one.total and 0 <= every.busy <= every.total
    assert one.total < every.total or len(cores) == 1
    assert core_times({max(cores) + 10_000}) is None  # no such core: nothing measured


def test_a_spinning_process_keeps_its_share_of_the_cores_busy() -> None:
    """One thread spinning keeps at least one core of those this process may use busy."""
    meter = CoreMeter()
    _spin(0.5)
    share = meter.busy_share()
    assert share is not None
    assert 1 / len(os.sched_getaffinity(0)) - 0.1 <= share <= 1
