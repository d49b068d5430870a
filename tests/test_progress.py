"""The terminal output of `atelier run`: trial lines, the live bar on a terminal, quiet mode."""

from __future__ import annotations

import io
import re
import time
from dataclasses import replace

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from search.config.objectives import load_objective
from search.engine.plan import TrialReport
from search.pipelines.progress import BAR_WIDTH, Progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, as sys.stdout does in a shell."""

    def isatty(self) -> bool:
        return True


def _finish(study: optuna.Study, value: float, accuracy: float) -> TrialReport:
    study.add_trial(
        create_trial(
            params={"x": value},
            distributions={"x": FloatDistribution(0, 10)},
            value=value,
            user_attrs={"best_val_accuracy": accuracy},
        )
    )
    number = study.trials[-1].number
    return TrialReport(
        number, TrialState.COMPLETE, value, summary={"epochs": 3, "trial_seconds": 1.5, "best_val_accuracy": accuracy}
    )


def test_a_terminal_gets_trial_lines_and_a_bar_of_done_best_and_time() -> None:
    study = optuna.create_study(study_name="bar", direction="minimize")
    objective = replace(load_objective("digits"), trials=4, timeout=600.0)
    terminal = Terminal()
    progress = Progress(study, objective, stream=terminal)
    progress.start()
    progress.trial_done(_finish(study, 0.5, 0.8))
    progress.trial_done(_finish(study, 0.3, 0.9))
    bar = progress.bar()
    assert bar.startswith("[" + "#" * (BAR_WIDTH // 2) + "." * (BAR_WIDTH // 2) + "] 2/4 trials")
    assert "best trial 1 val_loss 0.3000 val_accuracy 0.9000" in bar and "elapsed, ~" in bar
    written = terminal.getvalue()
    assert "\r\033[K[  2/4] trial 1    COMPLETE val_loss 0.3000" in written
    assert written.rsplit("\n", 1)[1].startswith("[" + "#" * (BAR_WIDTH // 2))  # the bar stays under the last line
    time.sleep(1.3)  # the bar is redrawn every second, also between trials
    assert terminal.getvalue().count("2/4 trials") >= 2
    progress.summary("here")
    assert terminal.getvalue().endswith("recorded in here\n")


def test_quiet_and_piped_output_have_no_bar() -> None:
    study = optuna.create_study(study_name="quiet", direction="minimize")
    objective = replace(load_objective("digits"), trials=2)
    piped, quiet = io.StringIO(), Terminal()
    for stream, is_quiet in ((piped, False), (quiet, True)):
        progress = Progress(study, objective, quiet=is_quiet, stream=stream)
        progress.start()
        progress.trial_done(_finish(study, 0.4, 0.85))
        progress.note("a worker process died (signal 9); trial 0 failed and queued again")
        progress.summary("here")
    assert "\033" not in piped.getvalue() and "trials |" not in piped.getvalue()
    assert "trial 0    COMPLETE" in piped.getvalue()
    assert quiet.getvalue().splitlines()[0].startswith("a worker process died")
    assert len(quiet.getvalue().splitlines()) == 2 and "\033" not in quiet.getvalue()


def test_remaining_time_never_passes_the_timeout() -> None:
    """One trial in 10 s of a 30 s timeout: the pace says 999 trials' worth (2.8 h) left, the cap says 0:20."""
    study = optuna.create_study(study_name="timeout", direction="minimize")
    objective = replace(load_objective("digits"), trials=1000, timeout=30.0)
    progress = Progress(study, objective, stream=io.StringIO())
    progress.started -= 10.0  # as if the search had started 10 s ago (Progress measures on time.monotonic)
    progress.trial_done(_finish(study, 0.4, 0.85))
    bar = progress.bar()
    match = re.search(r"\| (\d+):(\d\d) elapsed, ~(\d+):(\d\d) left$", bar)
    assert match is not None, bar
    elapsed, left = (60 * int(match.group(i)) + int(match.group(i + 1)) for i in (1, 3))
    assert 10 <= elapsed <= 12 and elapsed + left in (29, 30), bar  # the timeout's 30 s less the time gone
    progress.objective = replace(objective, timeout=None)  # the same pace uncapped: 10 s a trial for 999 more
    assert "~166:" in progress.bar()
