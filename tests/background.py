"""Fixtures whose real searches run in the background, while the rest of the suite runs.

The suite keeps about one of the machine's two cores busy: a search is mostly single-threaded work
(imports, Keras's step loop on tiny models, MLflow and Optuna records). The largest fixtures (the
bench, the promotion store, the shared digits store, the searches some tests read) are made instead
by one other interpreter, niced, one after another from the session's start; the tests that read
them run last (conftest reorders them), by which time they are usually ready. One interpreter for
all of them: each would otherwise import TensorFlow, MLflow and Optuna, and start a forkserver, anew.

Run as a script, this module makes them: `python background.py NAME=MODULE:FUNCTION=FOLDER...` calls
each FUNCTION(FOLDER) in turn; a function runs commands with the folder as working folder and returns
what they printed, by name, written to FOLDER/printed.json (or its traceback to FOLDER/error.txt);
then the script prints `NAME STATUS` on stdout, 0 for done.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRINTED, ERROR, LOG = "printed.json", "error.txt", "background.log"
WAIT_S = 1800
NICENESS = 10  # until a test waits for a fixture (`Background._hurry`)


@dataclass(frozen=True)
class Prepared:
    """A folder made in the background, and what its commands printed, by name."""

    folder: Path
    printed: dict[str, Any]


@dataclass
class _Job:
    function: str  # MODULE:FUNCTION
    folder: Path
    done: threading.Event = field(default_factory=threading.Event)
    status: int | None = None


class Background:
    """Makes fixtures in one niced interpreter, in the order given; `result` waits for one and returns it."""

    def __init__(self, jobs: Mapping[str, tuple[str, Path]], folder: Path) -> None:
        self._jobs = {name: _Job(function, job_folder) for name, (function, job_folder) in jobs.items()}
        self._log = folder / LOG
        self._process: subprocess.Popen | None = None
        if self._jobs:
            with open(self._log, "wb") as log:
                self._process = subprocess.Popen(
                    ["nice", "-n", str(NICENESS), sys.executable, str(Path(__file__).resolve())]
                    + [f"{name}={job.function}={job.folder}" for name, job in self._jobs.items()],
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
            threading.Thread(target=self._follow, daemon=True, name="background-fixtures").start()

    def result(self, name: str) -> Prepared:
        """The fixture `name` once made; an AssertionError with its traceback (or the log's end) if that failed."""
        job = self._jobs.get(name)
        assert job is not None, f"no background fixture {name!r} was started for this session (see conftest)"
        if not job.done.is_set():
            self._hurry()
        assert job.done.wait(WAIT_S), f"the background fixture {name} was not made within {WAIT_S} s"
        if job.status != 0:
            error = job.folder / ERROR
            why = error.read_text() if error.exists() else self._log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"the background fixture {name} ({job.function}) failed:\n{why}")
        return Prepared(job.folder, json.loads((job.folder / PRINTED).read_text()))

    def stop(self) -> None:
        """Kill the interpreter if it runs on (the session ended first), with its forkserver and workers."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def _hurry(self) -> None:
        """A test waits: the interpreter (its forkserver and workers too) runs at normal priority from now on.

        On a machine busy with other work, a niced interpreter would otherwise crawl while the suite waits.
        Raising a priority again needs CAP_SYS_NICE (root has it); without it, nothing changes.
        """
        if self._process is not None:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PGRP, self._process.pid, 0)

    def _follow(self) -> None:
        """Mark each fixture done as the interpreter reports it; at its end, any left unreported have failed."""
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            name, _, status = line.strip().rpartition(" ")
            if name in self._jobs:
                self._jobs[name].status = int(status)
                self._jobs[name].done.set()
        self._process.wait()
        for job in self._jobs.values():
            job.done.set()  # status None: the interpreter died first


def main() -> None:
    # Both commands' workers fork from this interpreter's one forkserver: preload what either imports.
    import multiprocessing

    multiprocessing.get_context("forkserver").set_forkserver_preload(["search.engine.study", "search.bench.strategies"])
    started = time.monotonic()
    for job in sys.argv[1:]:
        name, function, folder = job.split("=", 2)
        module, _, attribute = function.partition(":")
        began = time.monotonic()
        try:
            printed = getattr(importlib.import_module(module), attribute)(Path(folder))
            (Path(folder) / PRINTED).write_text(json.dumps(printed))
            status = 0
        except BaseException:
            (Path(folder) / ERROR).write_text(traceback.format_exc())
            status = 1
        print(name, status, flush=True)
        ended = time.monotonic() - started
        print(f"{name}: {time.monotonic() - began:.1f} s, done {ended:.1f} s after the start", file=sys.stderr)


if __name__ == "__main__":  # the forkserver re-imports the main module: only the script runs this
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    main()
