"""The Optuna study: opening or resuming it, and the loop that runs trials in worker processes until the target."""

from __future__ import annotations

import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import statistics
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from search.config.objectives import Objective, objective_record
from search.config.spaces import Space
from search.engine.algorithms import first_rung, make_pruner, make_sampler
from search.engine.asha import promotions, rungs
from search.engine.checkpoints import Checkpoints
from search.engine.plan import SearchContext, SearchPlan, TrialReport
from search.engine.recovery import recover_orphans, worker_id
from search.engine.worker_server import start_worker_server
from search.errors import SetupError

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 5
TRIALS_PER_PROCESS = 5


def open_study(
    name: str, storage: BaseStorage, objective: Objective, space: Space, data_dir: Path | None = None
) -> optuna.Study:
    """Create the study or resume it, refusing to resume one made for another space, metric or data.

    A new study records the objective with every setting resolved (and `data_dir`), so that
    promotion rebuilds exactly the data the search used.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction=objective.direction, load_if_exists=True)
    data = json.dumps({"data": asdict(objective.data), "seed": objective.seed}, default=str, sort_keys=True)
    identity = {
        "space": space.name,
        "space_file": space.text,
        "objective": objective.name,
        "metric": objective.metric,
        "data": data,
    }
    recorded = study.user_attrs
    for key, value in identity.items():
        if key in recorded and recorded[key] != value:
            shown = {
                "space_file": "a different space file",
                "data": "different data settings (files, split or seed)",
            }.get(key, f"{key} '{recorded[key]}'")
            raise SetupError(
                f"study '{name}' was made with {shown}; resume it with the same settings "
                "or start a new one with --study NEW_NAME"
            )
    created = identity | {"objective_settings": objective_record(objective)}
    if data_dir is not None:
        created["data_dir"] = str(data_dir.resolve())
    for key, value in created.items():
        if key not in recorded:
            study.set_user_attr(key, value)
    return study


def counted(study: optuna.Study) -> int:
    """Trials that count towards the target: completed and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def wanted(study: optuna.Study, target: int) -> bool:
    """Whether another trial is needed: finished and running trials (of every worker) fall short of `target`."""
    return len(study.get_trials(deepcopy=False, states=COUNTED + (TrialState.RUNNING,))) < target


def optimize(
    context: SearchContext,
    study: optuna.Study,
    storage: BaseStorage,
    on_trial: Callable[[TrialReport], None],
    workers: int = 1,
    trials_per_process: int = TRIALS_PER_PROCESS,
    on_note: Callable[[str], None] = print,
) -> None:
    """Run trials in `workers` processes at once until the study holds its target or the timeout has passed.

    The timeout is a deadline: no trial starts after it, and a trial still training stops at the end
    of the epoch that crosses it (pruned, with that reason), so a search ends within its timeout
    and one epoch.

    A worker process runs `trials_per_process` trials and is replaced: Keras leaks memory from
    trial to trial even after `clear_session()`, and a fresh process is the only reliable way to
    free it. Workers fork from a server process that has imported the libraries but never run
    TensorFlow (forking a process whose TensorFlow runtime has started can deadlock), so a new
    worker costs a fork and the data's transfer, not a fresh import. A worker that dies (killed,
    out of memory) leaves an orphaned trial: it is failed, its run closed, and its parameters
    queued again, and the search goes on.

    `context` is the caller's MLflow connection: having made the store once, it spares N workers
    racing to make it. `study` is the caller's, opened on `storage` with `open_study`.
    """
    plan = context.plan
    objective = plan.objective
    deadline = None if objective.timeout is None else time.monotonic() + objective.timeout
    study.set_user_attr("mlflow_experiment_id", context.experiment_id)
    orphans = recover_orphans(study, storage, plan.store.tracking, _checkpoints(plan))
    if orphans:
        on_note(
            f"found orphaned trial{'s' * (len(orphans) > 1)} {', '.join(map(str, orphans))} of a process "
            "that died: failed, its run closed as KILLED, its parameters queued again"
        )
    forks = start_worker_server()
    live: dict[Connection, multiprocessing.process.BaseProcess] = {}
    reports: dict[Connection, int] = {}
    failures, idle = 0, False
    try:
        while True:
            while len(live) < workers and not idle and _work_left(study, plan, deadline):
                receive, send = forks.Pipe(duplex=False)
                process = forks.Process(
                    target=_worker, daemon=True, args=(plan, deadline, trials_per_process, workers, send)
                )
                process.start()
                send.close()
                live[receive], reports[receive] = process, 0
            if not live:
                break
            for receive in multiprocessing.connection.wait(list(live)):
                try:
                    kind, payload = receive.recv()
                except EOFError:
                    died = _ended(live.pop(receive), study, storage, plan, on_note)
                    failures += died
                    # asha: a worker that found nothing to do waits for the others' reports before another forks
                    found_nothing = reports.pop(receive) == 0
                    idle = objective.pruner == "asha" and not died and found_nothing
                    continue
                if kind == "error":
                    raise SetupError(payload)
                if kind == "crash":
                    raise RuntimeError(f"a worker process crashed:\n{payload}")
                reports[receive] += 1
                idle = False
                on_trial(payload)
                failures = failures + 1 if payload.state is TrialState.FAIL else 0
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise SetupError(
                    f"{failures} trials failed in a row; see their reasons with `atelier show` "
                    "and fix the space or objective"
                )
    except KeyboardInterrupt:
        for process in live.values():  # they got the same Ctrl-C: let them close their trials' runs
            process.join(timeout=60)
        raise
    except BaseException:
        _stop(live.values())
        raise
    if objective.pruner == "asha":
        from search.engine.paused import close_paused

        close_paused(study, context.tracker, Checkpoints(plan.store.checkpoints(plan.study_name)))


def _work_left(study: optuna.Study, plan: SearchPlan, deadline: float | None) -> bool:
    """Whether a worker would find work: a trial wanted, or (`asha`) a paused trial promoted, before the deadline."""
    objective = plan.objective
    if _past(deadline):
        return False
    if wanted(study, objective.trials):
        return True
    if objective.pruner != "asha":
        return False
    ladder = rungs(first_rung(plan.space), objective.max_epochs)
    return any(
        time_for(study, deadline, p.stop - p.start)
        for p in promotions(study.get_trials(deepcopy=False), ladder, objective.direction)
    )


def _ended(
    process: multiprocessing.process.BaseProcess,
    study: optuna.Study,
    storage: BaseStorage,
    plan: SearchPlan,
    on_note: Callable[[str], None],
) -> int:
    """Reap a worker whose pipe closed; recover its trial if it died. Returns 1 if it died, else 0."""
    process.join()
    if process.exitcode == 0:
        return 0
    orphans = recover_orphans(study, storage, plan.store.tracking, _checkpoints(plan))
    how = f"signal {-process.exitcode}" if process.exitcode < 0 else f"status {process.exitcode}"
    on_note(
        f"a worker process died ({how}); trial{'s' * (len(orphans) != 1)} "
        f"{', '.join(map(str, orphans)) or 'none'} failed and queued again"
    )
    return 1


def _stop(processes: Iterable[multiprocessing.process.BaseProcess]) -> None:
    """Interrupt workers still running (each closes its trial's run as failed) and wait for them."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(timeout=60)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def time_for(study: optuna.Study, deadline: float | None, epochs: int) -> bool:
    """Whether a trial could train `epochs` epochs (a new one: to its first rung) before `deadline`, at the median
    pace of the study's trials.

    A trial started later would be stopped at the deadline before anything judged it: time for nothing.
    """
    if deadline is None:
        return True
    paces = [
        t.user_attrs["trial_seconds"] / t.user_attrs["epochs"]
        for t in study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING))  # paused ones too
        if t.user_attrs.get("epochs") and "trial_seconds" in t.user_attrs
    ]
    return time.monotonic() + epochs * (statistics.median(paces) if paces else 0.0) < deadline


def _worker(plan: SearchPlan, deadline: float | None, limit: int, workers: int, send: Connection) -> None:
    """Run up to `limit` trials in this forked process, sending a report after each.

    TensorFlow is imported here, in the worker (from the fork server, where `search.engine.fork_ready` loaded it),
    never in the process that runs the search.
    """
    from search.backend import limit_threads

    objective = plan.objective
    limit_threads(max(1, len(os.sched_getaffinity(0)) // workers))
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported, with reasons, by the parent
    gc.collect()
    gc.freeze()  # libraries and data live as long as this process: keep them out of every collection
    first = first_rung(plan.space)
    try:
        study = optuna.load_study(
            study_name=plan.study_name,
            storage=plan.store.storage(),
            pruner=make_pruner(objective.pruner, objective.max_epochs, first),
        )
        ladder = rungs(first, objective.max_epochs) if objective.pruner == "asha" else None
        study.sampler = make_sampler(objective.sampler, objective.seed, objective.trials, ladder)
        ctx = SearchContext.connect(plan)
        judged_at = min(first, objective.max_epochs)
        for _ in range(limit):
            may_start = wanted(study, objective.trials) and time_for(study, deadline, judged_at)
            if objective.pruner == "asha":
                report = _asha_part(study, ctx, deadline, may_start)
            else:
                report = _one_trial(study, ctx, deadline) if may_start else None
            if report is None:
                break
            send.send(("trial", report))
    except SetupError as error:
        _last_word(send, ("error", str(error)))
    except KeyboardInterrupt:
        pass
    except BaseException as error:
        outage = plan.store.outage(error)
        _last_word(send, ("error", outage) if outage else ("crash", traceback.format_exc()))
    finally:
        send.close()


def _asha_part(study: optuna.Study, ctx: SearchContext, deadline: float | None, may_start: bool) -> TrialReport | None:
    """The next part of a trial under the `asha` pruner (see `segments`); None when there is nothing to do."""
    from search.engine.segments import next_part  # TensorFlow: workers only (see `_worker`)

    plan = ctx.plan
    ladder = rungs(first_rung(plan.space), plan.objective.max_epochs)
    return next_part(study, ctx, ladder, Checkpoints(plan.store.checkpoints(plan.study_name)), deadline, may_start)


def _checkpoints(plan: SearchPlan) -> Checkpoints | None:
    """The study's checkpoints of paused trials, under the `asha` pruner."""
    return Checkpoints(plan.store.checkpoints(plan.study_name)) if plan.objective.pruner == "asha" else None


def _last_word(send: Connection, message: tuple[str, str]) -> None:
    """Send why this worker stops, deaf to Ctrl-C from then on.

    The parent answers by interrupting its workers; this one has nothing left to close, and would
    otherwise die printing a traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send.send(message)


class _TrialFailed(Exception):
    """A trial that failed for a reason of its own (recorded); the search goes on."""


def _one_trial(study: optuna.Study, ctx: SearchContext, deadline: float | None) -> TrialReport:
    """One trial through `study.optimize`, which keeps its heartbeat where the storage has one."""
    from search.engine.trial import run_trial  # TensorFlow: workers only (see `_worker`)

    reports = []

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        report = run_trial(trial, ctx, deadline)
        reports.append(report)
        if report.state is TrialState.PRUNED:
            raise optuna.TrialPruned(report.reason)
        if report.state is TrialState.FAIL:
            raise _TrialFailed(report.reason)
        return report.value

    study.optimize(objective, n_trials=1, catch=(_TrialFailed,), gc_after_trial=False)
    return reports[0]
