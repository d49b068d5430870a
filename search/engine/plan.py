"""What a search fixes before its first trial, the MLflow connection its trials record through, and what a trial
reports: no TensorFlow, so the process that runs a search imports none (its workers do, from the fork server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.entities import DatasetInput
from optuna.trial import TrialState

from search.config.objectives import Objective
from search.config.spaces import Space
from search.data import SearchData
from search.record.store import Store
from search.record.tracking import Tracker


@dataclass(frozen=True)
class SearchPlan:
    """Everything fixed before the first trial; it travels to each worker process."""

    study_name: str
    objective: Objective
    space: Space
    data: SearchData
    store: Store
    inputs: list[DatasetInput]


@dataclass(frozen=True)
class SearchContext:
    """A plan joined to an MLflow connection of the process that runs the trials."""

    plan: SearchPlan
    tracker: Tracker
    experiment_id: str
    study_run_id: str  # the parent of the trials' runs

    @classmethod
    def connect(cls, plan: SearchPlan) -> SearchContext:
        """Open MLflow in this process and find (or make) the study's experiment and its study run."""
        tracker = Tracker(plan.store.tracking)
        experiment_id = tracker.experiment(
            plan.study_name,
            {
                "atelier.study": plan.study_name,
                "atelier.space": plan.space.name,
                "atelier.objective": plan.objective.name,
                "atelier.metric": plan.objective.metric,
                "atelier.direction": plan.objective.direction,
            },
        )
        return cls(plan, tracker, experiment_id, tracker.study_run(experiment_id, plan.study_name))


@dataclass(frozen=True)
class TrialReport:
    """How a trial ended, for Optuna's `tell` and the terminal."""

    number: int
    state: TrialState
    value: float | None
    reason: str = ""
    summary: dict[str, float] = field(default_factory=dict)
    paused_at: int | None = None  # the rung a trial of the `asha` pruner paused at (its state RUNNING)
