"""Fixtures whose real searches run in the background, while the rest of the suite runs.

The suite keeps one of the machine's two cores busy: a search is mostly single-threaded work
(imports, Keras's step loop on tiny models, MLflow and Optuna records). The largest fixtures (the
bench, the promotion store, the shared digits store, the searches some tests read) are made instead
by a fresh interpreter each, niced, one after another, started as the session starts; the tests that
read them run last (conftest reorders them), by which time they are usually ready.

Run as a script, this module makes one of them: `python background.py MODULE:FUNCTION FOLDER` calls
FUNCTION(FOLDER), which runs commands with the folder as working folder and returns what they
printed, by name; that is written to FOLDER/printed.json.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PRINTED = "printed.json"
WAIT_S = 1800


@dataclass(frozen=True)
class Prepared:
    """A folder made in the background, and what its commands printed, by name."""

    folder: Path
    printed: dict[str, Any]


@dataclass
class _Job:
    name: str
    function: str  # MODULE:FUNCTION
    folder: Path
    done: threading.Event = field(default_factory=threading.Event)
    process: subprocess.Popen | None = None
    status: int | None = None


class Background:
    """Makes fixtures one after another in fresh interpreters; `result` waits for one and returns it."""

    def __init__(self, jobs: Mapping[str, tuple[str, Path]]) -> None:
        self._jobs = {name: _Job(name, function, folder) for name, (function, folder) in jobs.items()}
        self._stopped = False
        self._thread = threading.Thread(target=self._run_all, daemon=True, name="background-fixtures")
        self._thread.start()

    def result(self, name: str) -> Prepared:
        """The fixture `name` once made; an AssertionError with its interpreter's last words if that failed."""
        job = self._jobs.get(name)
        assert job is not None, f"no background job {name!r} was started for this session (see conftest)"
        assert job.done.wait(WAIT_S), f"the background job {name} did not end within {WAIT_S} s"
        errors = job.folder / "stderr.log"
        assert job.status == 0, (
            f"the background job {name} ({job.function}) exited {job.status}:\n"
            f"{errors.read_text(errors='replace')[-4000:] if errors.exists() else ''}"
        )
        return Prepared(job.folder, json.loads((job.folder / PRINTED).read_text()))

    def stop(self) -> None:
        """Kill what is still running (the session ended first) and its children."""
        self._stopped = True
        for job in self._jobs.values():
            if job.process is not None and job.process.poll() is None:
                os.killpg(job.process.pid, signal.SIGKILL)
                job.process.wait()

    def _run_all(self) -> None:
        for job in self._jobs.values():
            if not self._stopped:
                with open(job.folder / "stderr.log", "wb") as errors:
                    job.process = subprocess.Popen(  # niced: the tests running meanwhile keep their pace
                        [
                            "nice",
                            "-n",
                            "10",
                            sys.executable,
                            str(Path(__file__).resolve()),
                            job.function,
                            str(job.folder),
                        ],
                        cwd=job.folder,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=errors,
                        start_new_session=True,
                    )
                    if self._stopped:  # stop() ran while it started
                        os.killpg(job.process.pid, signal.SIGKILL)
                    job.status = job.process.wait()
            job.done.set()


def main() -> None:
    function, folder = sys.argv[1], Path(sys.argv[2])
    module, _, name = function.partition(":")
    printed = getattr(importlib.import_module(module), name)(folder)
    (folder / PRINTED).write_text(json.dumps(printed))


if __name__ == "__main__":  # the fixtures' forkservers re-import the main module: only the script runs this
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    main()
