"""How busy this process's cores were over a stretch of wall time, read from the kernel's `/proc/stat`.

The share counts every process on those cores, as `top` does: on a machine given to the search it
says how much of the machine the search kept working. It is None where `/proc/stat` is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
IDLE_FIELDS = (3, 4)  # idle and iowait, after user, nice, system; guest time is already in user


@dataclass(frozen=True)
class CoreTimes:
    """Clock ticks the cores spent busy and in all, since boot."""

    busy: int
    total: int


def core_times(cores: set[int] | None = None) -> CoreTimes | None:
    """The ticks of `cores` (default: those this process may run on); None without `/proc/stat`."""
    cores = os.sched_getaffinity(0) if cores is None else cores
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
            continue
        ticks = [int(field) for field in fields[:8]]  # guest and guest_nice are counted in user and nice
        idle = sum(ticks[index] for index in IDLE_FIELDS)
        busy += sum(ticks) - idle
        total += sum(ticks)
    return CoreTimes(busy, total) if total else None


class CoreMeter:
    """The share of the cores' time spent busy since the meter was made."""

    def __init__(self) -> None:
        self._start = core_times()

    def busy_share(self) -> float | None:
        """Busy ticks over all ticks since the start, from 0 to 1; None if unmeasurable or no tick passed."""
        end = core_times()
        if self._start is None or end is None or end.total <= self._start.total:
            return None
        return (end.busy - self._start.busy) / (end.total - self._start.total)
