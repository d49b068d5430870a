"""The Optuna study: storage, sampler, pruner, and the loop that runs trials until the target."""

from __future__ import annotations

import gc
import json
import multiprocessing
import time
import traceback
import warnings
from dataclasses import asdict
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from search.config import Objective, Space, objective_record
from search.errors import SetupError
from search.trial import SearchContext, SearchPlan, TrialReport, run_trial

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 5
TRIALS_PER_PROCESS = 5

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
               data_dir: Path | None = None) -> optuna.Study:
    """Create the study or resume it, refusing to resume one made for another space, metric or data.

    A new study records the objective with every setting resolved (and `data_dir`), so that
    promotion rebuilds exactly the data the search used.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction=objective.direction,
                                load_if_exists=True)
    data = json.dumps({"data": asdict(objective.data), "seed": objective.seed}, default=str, sort_keys=True)
    identity = {"space": space.name, "space_file": space.text, "objective": objective.name,
                "metric": objective.metric, "data": data}
    recorded = study.user_attrs
    for key, value in identity.items():
        if key in recorded and recorded[key] != value:
            shown = {"space_file": "a different space file", "data": "different data settings (files, split or "
                     "seed)"}.get(key, f"{key} '{recorded[key]}'")
            raise SetupError(f"study '{name}' was made with {shown}; resume it with the same settings "
                             "or start a new one with --study NEW_NAME")
    created = identity | {"objective_settings": objective_record(objective)}
    if data_dir is not None:
        created["data_dir"] = str(data_dir.resolve())
    for key, value in created.items():
        if key not in recorded:
            study.set_user_attr(key, value)
    return study


def latest_study_name(storage: BaseStorage) -> str:
    """The study whose first trial started last; among studies without trials, the newest."""
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        raise SetupError("the store holds no study yet; run `atelier run` first")
    order = {id(s): (s.datetime_start or datetime.min, index) for index, s in enumerate(summaries)}
    return max(summaries, key=lambda s: order[id(s)]).study_name


def counted(study: optuna.Study) -> int:
    """Trials that count towards the target: completed and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def optimize(plan: SearchPlan, on_trial: Callable[[TrialReport], None],
             trials_per_process: int = TRIALS_PER_PROCESS) -> None:
    """Run trials until the study holds the objective's target or its timeout has passed.

    Trials run in a worker process that is replaced after `trials_per_process` trials: Keras
    leaks memory from trial to trial even after `clear_session()`, and a fresh process is the
    only reliable way to free it. Workers fork from a server process that has imported the
    libraries but never run TensorFlow (forking a process whose TensorFlow runtime has started
    can deadlock), so a new worker costs a fork and the data's transfer, not a fresh import.
    """
    objective = plan.objective
    deadline = None if objective.timeout is None else time.monotonic() + objective.timeout
    study = optuna.load_study(study_name=plan.study_name, storage=plan.store.storage())
    failures = 0
    while counted(study) < objective.trials and not _past(deadline):
        failures = _run_worker(plan, deadline, failures, trials_per_process, on_trial)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _run_worker(plan: SearchPlan, deadline: float | None, failures: int, limit: int,
                on_trial: Callable[[TrialReport], None]) -> int:
    """Fork one worker, relay its reports, and return the count of failures in a row at its end."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["search.study"])
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_worker, args=(plan, deadline, failures, limit, send), daemon=True)
    worker.start()
    send.close()
    try:
        while True:
            try:
                kind, payload = receive.recv()
            except EOFError:
                break
            if kind == "trial":
                on_trial(payload)
                failures = failures + 1 if payload.state is TrialState.FAIL else 0
            elif kind == "error":
                raise SetupError(payload)
            elif kind == "crash":
                raise RuntimeError(f"a worker process crashed:\n{payload}")
    except KeyboardInterrupt:
        worker.join(timeout=60)  # it got the same Ctrl-C: let it close its trial's run
        raise
    worker.join()
    if worker.exitcode != 0:
        raise RuntimeError(f"a worker process ended with status {worker.exitcode}")
    return failures


def _worker(plan: SearchPlan, deadline: float | None, failures: int, limit: int, send: Connection) -> None:
    """Run up to `limit` trials in this forked process, sending a report after each."""
    objective = plan.objective
    gc.collect()
    gc.freeze()  # libraries and data live as long as this process: keep them out of every collection
    try:
        study = optuna.load_study(study_name=plan.study_name, storage=plan.store.storage(),
                                  pruner=make_pruner(objective.pruner, objective.max_epochs))
        study.sampler = make_sampler(objective.sampler, objective.seed + len(study.trials), objective.trials)
        ctx = SearchContext.connect(plan)
        study.set_user_attr("mlflow_experiment_id", ctx.experiment_id)
        for _ in range(limit):
            if counted(study) >= objective.trials or _past(deadline):
                break
            report = _one_trial(study, ctx)
            send.send(("trial", report))
            failures = failures + 1 if report.state is TrialState.FAIL else 0
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise SetupError(f"{failures} trials failed in a row (last: {report.reason}); "
                                 "see `atelier show` and fix the space or objective")
    except SetupError as error:
        send.send(("error", str(error)))
    except KeyboardInterrupt:
        pass
    except BaseException:
        send.send(("crash", traceback.format_exc()))
    finally:
        send.close()


def _one_trial(study: optuna.Study, ctx: SearchContext) -> TrialReport:
    trial = study.ask()
    try:
        report = run_trial(trial, ctx)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    study.tell(trial, report.value, state=report.state)
    return report
