"""What `atelier run` prints: one line per finished trial, with progress and the best so far."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from search.config import Objective
from search.study import counted
from search.trial import TrialReport


class Progress:
    """Prints a line per trial (`[done/target] trial N STATE value ...`) and a closing summary."""

    def __init__(self, study: optuna.Study, objective: Objective, quiet: bool = False) -> None:
        self.study, self.objective, self.quiet = study, objective, quiet
        self.started = time.monotonic()
        self.ran = 0

    def start(self) -> None:
        if not self.quiet:
            already = counted(self.study)
            resumed = f", resuming with {already} done" if already else ""
            print(f"study {self.study.study_name}: target {self.objective.trials} trials, "
                  f"{self.objective.max_epochs} epochs at most, {self.objective.sampler} sampler, "
                  f"{self.objective.pruner} pruner{resumed}", flush=True)

    def trial_done(self, report: TrialReport) -> None:
        self.ran += 1
        if self.quiet:
            return
        metric, summary = self.objective.metric, report.summary
        best = report.value if report.value is not None else summary.get(f"best_{metric}")
        best = None if report.state is TrialState.FAIL else best
        value = f"{metric} {best:.4f}" if best is not None else f"{metric} -"
        accuracy = summary.get("best_val_accuracy")
        elapsed = time.monotonic() - self.started
        done = counted(self.study)
        remaining = elapsed / self.ran * max(0, self.objective.trials - done)
        print(f"[{done:>3}/{self.objective.trials}] trial {report.number:<4} {report.state.name:<8} {value}"
              f"{f'  val_accuracy {accuracy:.4f}' if accuracy is not None else ''}"
              f"  epochs {int(summary.get('epochs', 0))}/{self.objective.max_epochs}"
              f"  {summary.get('trial_seconds', 0):.1f} s  | best {self._best()}"
              f"  | {elapsed / 60:.1f} min, ~{remaining / 60:.1f} min left"
              f"{f'  ({report.reason})' if report.reason and report.state is not TrialState.COMPLETE else ''}",
              flush=True)

    def summary(self, where: str) -> None:
        elapsed = time.monotonic() - self.started
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        counts = ", ".join(f"{states.count(s)} {s.name.lower()}" for s in
                           (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) if states.count(s))
        print(f"done: {self.ran} trials in {elapsed / 60:.1f} min; study {self.study.study_name} holds {counts}; "
              f"best {self._best()}; recorded in {where}", flush=True)

    def _best(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return "none yet"
        accuracy = best.user_attrs.get("best_val_accuracy")
        return (f"trial {best.number} {self.objective.metric} {best.value:.4f}"
                f"{f' val_accuracy {accuracy:.4f}' if accuracy is not None else ''}")
