"""The Optuna study: storage, sampler, pruner, and the loop that runs trials until the target."""

from __future__ import annotations

import gc
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from search.config import Objective, Space
from search.errors import SetupError
from search.tracking import redact
from search.trial import SearchContext, TrialReport, run_trial

JOURNAL_FILE = "optuna.journal"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 5
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@dataclass(frozen=True)
class Store:
    """Where a search keeps its records: an Optuna storage and an MLflow tracking URI."""

    folder: Path
    storage_url: str | None = None
    tracking_uri: str | None = None

    @property
    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.folder / 'mlflow.db').resolve()}"

    def storage(self) -> BaseStorage:
        """The Optuna storage: a journal file that several local processes can share, by default."""
        url = self.storage_url
        if url is None or not urlparse(url).scheme:
            path = Path(url) if url else self.folder / JOURNAL_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        try:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except Exception as error:
            raise SetupError(f"cannot open Optuna storage {redact(url)} ({type(error).__name__}); "
                             "check that the database server runs and the URL is right") from None

    def existing_storage(self) -> BaseStorage:
        """The storage of searches already run; a SetupError when there is none."""
        if self.storage_url is None and not (self.folder / JOURNAL_FILE).is_file():
            raise SetupError(f"no studies in {self.folder}; run `atelier run` first, or pass --store or --storage")
        return self.storage()

    def check(self) -> None:
        """Refuse a storage URL of an unknown kind before anything is written."""
        if self.storage_url and urlparse(self.storage_url).scheme:
            scheme = urlparse(self.storage_url).scheme.split("+")[0]
            if scheme not in RDB_SCHEMES:
                raise SetupError(f"storage '{redact(self.storage_url)}' is not one Optuna can use; give a journal "
                                 "file path, sqlite:///path.db or postgresql://user@host/db")


def make_sampler(name: str, seed: int, target: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler; TPE starts with a third of the target (3 to 10) random trials."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler needs it)
        except ImportError:
            raise SetupError("the gp sampler needs PyTorch; pip install torch, or use --sampler tpe") from None
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, target // 3)),
                                      multivariate=True, group=True, constant_liar=True)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    """A pruner that judges trials by the metric reported each epoch."""
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def open_study(name: str, storage: BaseStorage, objective: Objective, space: Space,
               sampler: str, pruner: str, seed: int, max_epochs: int, target: int) -> optuna.Study:
    """Create the study or resume it, refusing to resume one made for another space or metric."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction=objective.direction,
                                pruner=make_pruner(pruner, max_epochs), load_if_exists=True)
    identity = {"space": space.name, "space_file": space.text, "objective": objective.name,
                "metric": objective.metric}
    recorded = study.user_attrs
    for key, value in identity.items():
        if key in recorded and recorded[key] != value:
            shown = "a different space file" if key == "space_file" else f"{key} '{recorded[key]}'"
            raise SetupError(f"study '{name}' was made with {shown}; resume it with the same settings "
                             "or start a new one with --study NEW_NAME")
    for key, value in identity.items():
        if key not in recorded:
            study.set_user_attr(key, value)
    study.sampler = make_sampler(sampler, seed + len(study.trials), target)
    return study


def latest_study_name(storage: BaseStorage) -> str:
    """The study whose newest trial started last."""
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        raise SetupError("the store holds no study yet; run `atelier run` first")
    return max(summaries, key=lambda s: (s.datetime_start is not None, s.datetime_start or 0, s._study_id)).study_name


def counted(study: optuna.Study) -> int:
    """Trials that count towards the target: completed and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def optimize(study: optuna.Study, ctx: SearchContext, target: int, timeout: float | None,
             on_trial: Callable[[TrialReport], None]) -> None:
    """Run trials until the study holds `target` counted trials or `timeout` seconds have passed."""
    started, failures = time.monotonic(), 0
    gc.collect()
    gc.freeze()  # what exists now (libraries, data) lives for the whole search: keep it out of every collection
    while counted(study) < target and (timeout is None or time.monotonic() - started < timeout):
        trial = study.ask()
        try:
            report = run_trial(trial, ctx)
        except BaseException as error:
            study.tell(trial, state=TrialState.FAIL)
            raise error
        study.tell(trial, report.value, state=report.state)
        on_trial(report)
        failures = failures + 1 if report.state is TrialState.FAIL else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise SetupError(f"{failures} trials failed in a row (last: {report.reason}); "
                             "see `atelier show` and fix the space or objective")
