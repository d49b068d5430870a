"""The search's timeout is a deadline: a trial still training when it passes stops, pruned; none starts after it.

In a module of its own, so that it runs early, beside the background fixtures (test_search's
tests wait for one and run last).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stores import atelier_case
from test_search import load

pytestmark = pytest.mark.e2e
TIMEOUT_S = 10


def test_the_timeout_stops_a_trial_still_training(tmp_path: Path) -> None:
    """A trial of 5,000 epochs in a search of a few seconds: stopped at the deadline, pruned, and no trial after it."""
    search = ("run", "--objective", "digits", "--trials", 3, "--max-epochs", 5000, "--timeout", TIMEOUT_S)
    ran = atelier_case(tmp_path, *search, "--pruner", "none", "--workers", 1, "--quiet")
    assert ran["status"] == 0, ran["err"]
    study, _, runs = load(tmp_path, "digits-dense")
    (trial,) = study.get_trials()
    assert trial.state.name == "PRUNED"
    epochs = int(runs[0].data.metrics["epochs"])  # none when a cold start (the first trace) takes the 10 s
    assert 0 <= epochs < 5000 and len(trial.intermediate_values) == epochs
    reason = runs[0].data.tags["atelier.reason"]
    assert reason in (
        f"stopped at the search's timeout after epoch {epochs} of 5000",
        f"stopped at the search's timeout during epoch {epochs + 1} of 5000",
    ), reason
    assert (trial.datetime_complete - trial.datetime_start).total_seconds() < TIMEOUT_S + 2
