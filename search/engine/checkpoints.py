"""Paused trials' checkpoints in the store, and the claim a worker holds while it resumes one.

`STORE/checkpoints/STUDY/TRIAL/` holds the model as Keras saves it (weights and optimizer state), the best
epoch's weights and the metrics of the trial so far; it is written beside its place and renamed into it, so a
kill leaves the previous checkpoint or the new one, never half of one. `TRIAL.claim` is made exclusively
(`O_EXCL`) by the one worker that resumes the trial; any process can release a claim whose holder died.
Keras is imported where a model is saved or loaded: the search's own process only claims, reads and removes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from search.backend import keras
    from search.engine.train import Progress

MODEL, BEST, STATE = "model.keras", "best.npz", "state.json"


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints of one study's paused trials."""

    folder: Path  # STORE/checkpoints/STUDY

    def of(self, number: int) -> Path:
        """Trial `number`'s checkpoint folder (the previous one put back, if a kill came between two renames)."""
        final, old = self.folder / str(number), self.folder / f"{number}.old"
        if not final.exists() and old.exists():
            old.rename(final)
        return final

    def epoch(self, number: int) -> int | None:
        """The epoch trial `number`'s checkpoint was taken after, or None when it has none."""
        try:
            return int(json.loads((self.of(number) / STATE).read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            return None

    def save(self, number: int, model: keras.Model, progress: Progress, epoch: int) -> None:
        """Trial `number`'s model after `epoch` (1-based) and its best so far, replacing its last checkpoint."""
        partial, final = self.folder / f"{number}.partial", self.of(number)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        model.save(partial / MODEL)
        np.savez(partial / BEST, *progress.best_weights)
        state = {"epoch": epoch, "best_epoch": progress.best_epoch, "best": progress.best}
        (partial / STATE).write_text(json.dumps(state))
        old = self.folder / f"{number}.old"
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, number: int) -> tuple[keras.Model, Progress, int]:
        """Trial `number`'s model as checkpointed (compiled, with its optimizer's state), its best so far, and
        the epoch it was taken after."""
        from search.backend import keras
        from search.engine.train import Progress

        folder = self.of(number)
        state = json.loads((folder / STATE).read_text())
        with np.load(folder / BEST) as best:
            weights = [best[f"arr_{index}"] for index in range(len(best.files))]
        model = keras.models.load_model(folder / MODEL)
        return model, Progress(int(state["best_epoch"]), dict(state["best"]), weights), int(state["epoch"])

    def claim(self, number: int, worker: str) -> bool:
        """Whether this `worker` now holds trial `number` (no other did)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self._claim(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as file:
            file.write(worker)
        return True

    def claimant(self, number: int) -> str | None:
        """The worker (host:pid) holding trial `number`, if one does."""
        try:
            return self._claim(number).read_text() or None
        except OSError:
            return None

    def release(self, number: int) -> None:
        self._claim(number).unlink(missing_ok=True)

    def remove(self, number: int) -> None:
        """Trial `number`'s checkpoint and claim: it has ended."""
        shutil.rmtree(self.of(number), ignore_errors=True)
        self.release(number)

    def _claim(self, number: int) -> Path:
        return self.folder / f"{number}.claim"
