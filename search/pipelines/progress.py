"""What `atelier run` prints: a line per finished trial, a live progress bar on a terminal, a summary."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

import optuna
from optuna.trial import TrialState

from search.config.objectives import Objective
from search.engine.plan import TrialReport
from search.engine.study import counted

BAR_WIDTH = 24
TICK_SECONDS = 1.0


class Progress:
    """Prints `[done/target] trial N STATE value ...` per trial, and on a terminal a bar redrawn every second.

    The bar shows trials finished of the target, the best value so far, elapsed and remaining time;
    `quiet` prints only the summary (and notes about faults).
    """

    def __init__(
        self, study: optuna.Study, objective: Objective, quiet: bool = False, stream: TextIO | None = None
    ) -> None:
        self.study, self.objective, self.quiet = study, objective, quiet
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.ran = 0
        self.done = counted(study)
        self.best = self._best()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._bar = not quiet and self.stream.isatty()

    def start(self) -> None:
        """Print the study's header and, on a terminal, start redrawing the bar."""
        if self.quiet:
            return
        resumed = f", resuming with {self.done} done" if self.done else ""
        self._print(
            f"study {self.study.study_name}: target {self.objective.trials} trials, "
            f"{self.objective.max_epochs} epochs at most, {self.objective.sampler} sampler, "
            f"{self.objective.pruner} pruner{resumed}"
        )
        if self._bar:
            threading.Thread(target=self._tick, daemon=True, name="atelier-progress").start()

    def trial_done(self, report: TrialReport) -> None:
        """A finished trial's line (unless quiet), and the figures the bar shows."""
        self.ran += 1
        self.done = counted(self.study)
        self.best = self._best()
        if self.quiet:
            return
        metric, summary = self.objective.metric, report.summary
        best = report.value if report.value is not None else summary.get(f"best_{metric}")
        best = None if report.state is TrialState.FAIL else best
        value = f"{metric} {best:.4f}" if best is not None else f"{metric} -"
        accuracy = summary.get("best_val_accuracy")
        state = "PAUSED" if report.paused_at else report.state.name
        self._print(
            f"[{self.done:>3}/{self.objective.trials}] trial {report.number:<4} {state:<8} {value}"
            f"{f'  val_accuracy {accuracy:.4f}' if accuracy is not None else ''}"
            f"  epochs {int(summary.get('epochs', 0))}/{self.objective.max_epochs}"
            f"  {summary.get('trial_seconds', 0):.1f} s  | best {self.best}"
            f"  | {self._elapsed() / 60:.1f} min, ~{(self._remaining() or 0.0) / 60:.1f} min left"
            f"{f'  ({report.reason})' if report.reason and report.state is not TrialState.COMPLETE else ''}"
        )

    def note(self, line: str) -> None:
        """A line about the search itself (a worker that died, orphans recovered), printed even when quiet."""
        self._print(line)

    def summary(self, where: str, cores_busy: float | None = None) -> None:
        """Stop the bar and print what the study holds now, and how busy the cores were if measured."""
        self._stopped.set()
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        counts = (
            ", ".join(
                f"{states.count(s)} {s.name.lower()}"
                for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                if states.count(s)
            )
            or "no finished trial"
        )
        self._print(
            f"done: {self.ran} trials in {self._elapsed() / 60:.1f} min"
            f"{'' if cores_busy is None else f' (cores busy {cores_busy:.0%})'}; study {self.study.study_name} "
            f"holds {counts}; best {self._best()}; recorded in {where}"
        )

    def bar(self) -> str:
        """The bar's text: trials finished of the target, best so far, elapsed and remaining time."""
        target = self.objective.trials
        filled = min(BAR_WIDTH, BAR_WIDTH * self.done // target)
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{target} trials | best {self.best} | "
            f"{_clock(self._elapsed())} elapsed, ~{_clock(self._remaining())} left"
        )

    def _print(self, line: str) -> None:
        with self._lock:
            erase = "\r\033[K" if self._bar else ""
            self.stream.write(f"{erase}{line}\n")
            if self._bar and not self._stopped.is_set():
                self.stream.write(self.bar())
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stopped.wait(TICK_SECONDS):
            with self._lock:
                if not self._stopped.is_set():
                    self.stream.write(f"\r\033[K{self.bar()}")
                    self.stream.flush()

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _remaining(self) -> float | None:
        """Time left at this run's pace (None before the first trial), never beyond the objective's timeout."""
        estimate = self._elapsed() / self.ran * max(0, self.objective.trials - self.done) if self.ran else None
        if self.objective.timeout is None:
            return estimate
        cap = max(0.0, self.objective.timeout - self._elapsed())
        return cap if estimate is None else min(estimate, cap)

    def _best(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return "none yet"
        accuracy = best.user_attrs.get("best_val_accuracy")
        return (
            f"trial {best.number} {self.objective.metric} {best.value:.4f}"
            f"{f' val_accuracy {accuracy:.4f}' if accuracy is not None else ''}"
        )


def _clock(seconds: float | None) -> str:
    """m:ss, or ? before there is a pace to estimate from."""
    if seconds is None:
        return "?"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"
