"""`atelier run` as one function: resolve the settings, load the data, open the study, search, report."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from search.config.objectives import Objective, check_objective, images_objective, load_objective
from search.config.spaces import Space, hypermodel_space, load_space
from search.engine.cores import CoreMeter
from search.errors import SetupError
from search.paths import check_name
from search.record.store import Store

MAX_WORKERS = 64
OVERRIDES = (
    "trials",
    "max_epochs",
    "timeout",
    "seed",
    "sampler",
    "pruner",
    "warm_start",
)  # objective settings a flag can set

Say = Callable[[str], None]


@dataclass(frozen=True)
class SearchRequest:
    """What to search and how, as the user asked; `overrides` replace the objective file's settings."""

    objective: str = "fashion-mnist"
    space: str | None = None
    hypermodel: str | None = None
    study: str | None = None
    overrides: Mapping[str, object] = field(default_factory=dict)
    data_dir: Path | None = None
    workers: int = 2
    quiet: bool = False
    ends_by: float | None = None  # a `time.monotonic()` reading the trials must end by: a timeout set at their start
    images: Path | None = None  # a folder searched with `images_objective` instead of `objective`


@dataclass(frozen=True)
class SearchResult:
    """Where a finished search left its records."""

    study_name: str
    experiment_id: str
    study_report: str  # the address of the study's report run in the MLflow UI
    report_seconds: float
    cores_busy: float | None  # the share of the cores' time spent working, from start to the last trial's end


def resolve(request: SearchRequest) -> tuple[Objective, Space]:
    """The objective with the request's overrides, and the space to search; a SetupError names a bad one."""
    if request.study is not None:
        check_name(request.study, "--study")
    objective = images_objective(request.images) if request.images else load_objective(request.objective)
    given = {key: value for key, value in request.overrides.items() if value is not None}
    objective = check_objective(replace(objective, **given))
    if not 1 <= request.workers <= MAX_WORKERS:
        raise SetupError(f"--workers {request.workers} is not a count of processes; give 1 to {MAX_WORKERS}")
    return objective, choose_space(request.space, request.hypermodel, objective.space)


def choose_space(space: str | None, hypermodel: str | None, default: str) -> Space:
    """The space of `space` (default: the objective's), or the one a KerasTuner `hypermodel` defines."""
    if hypermodel is None:
        return load_space(space or default)
    if space is not None:
        raise SetupError(f"--space {space} and --hypermodel {hypermodel} both say what to search; give one of them")
    return hypermodel_space(hypermodel)


def run_search(request: SearchRequest, store: Store, say: Say = print) -> SearchResult:
    """Run (or resume) a study until it holds its target of trials, then rewrite its report in MLflow.

    Every check that can fail on bad input runs before the study or a record is written. `say`
    gets the lines worth printing before and between trials; the trial lines and the progress bar
    are `Progress`'s (silent when `request.quiet`).
    """
    meter = CoreMeter()
    objective, space = resolve(request)
    store.check()
    study_name = request.study or f"{objective.name}-{space.name}"
    warm_start = []
    if objective.warm_start is not None:
        from search.engine.warm_start import best_configurations

        warm_start = best_configurations(store.existing_storage(), objective.warm_start, study_name, space)

    from search.data import load_search_data
    from search.data.cache import discarded_on_setup_error
    from search.engine.worker_server import start_worker_server

    start_worker_server()  # its imports overlap the data's loading and the records' set-up
    started = time.perf_counter()
    with discarded_on_setup_error(store.image_cache):  # bad input leaves no decoded images behind
        data = load_search_data(objective, request.data_dir, store.image_cache)
        if space.hypermodel is not None:
            from search.models.hypermodel import Hypermodel

            Hypermodel(space.hypermodel).check(data)
    quiet_say = (lambda line: None) if request.quiet else say
    quiet_say(
        f"data: {len(data.train)} train and {len(data.val)} validation images {data.input_shape} "
        f"from {data.source} in {time.perf_counter() - started:.2f} s"
    )

    from search.engine.plan import SearchContext, SearchPlan
    from search.engine.study import open_study, optimize
    from search.engine.warm_start import first_configurations, queue_configurations
    from search.pipelines.progress import Progress
    from search.record.tracking import dataset_inputs
    from search.reports.runs import publish_data_report, publish_study_report, run_address
    from search.secrets import redact

    if request.ends_by is not None:
        left = max(1.0, request.ends_by - time.monotonic())
        objective = replace(objective, timeout=min(objective.timeout or math.inf, left))
    storage = store.storage()
    study = open_study(study_name, storage, objective, space, request.data_dir)
    first = first_configurations(space)
    if first or warm_start:
        if queue_configurations(study, first + warm_start):
            if first:
                quiet_say(f"the first trial runs the space's reference configuration ({space.path.name} [reference])")
            if warm_start:
                origins = ", ".join(configuration["origin"] for configuration in warm_start)
                which = "next" if first else "first"
                quiet_say(f"warm start: the {which} trials run the best of {objective.warm_start} ({origins})")
    context = SearchContext.connect(SearchPlan(study_name, objective, space, data, store, dataset_inputs(data)))
    context.tracker.client.update_run(context.study_run_id, status="RUNNING")  # until its report is rewritten
    progress = Progress(study, objective, quiet=request.quiet)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the data report is drawn while the first trials start
        data_report = pool.submit(
            publish_data_report, data, context.plan.inputs, context.tracker, context.experiment_id
        )
        progress.start()
        optimize(context, study, storage, progress.trial_done, workers=request.workers, on_note=progress.note)
        cores_busy = meter.busy_share()
        data_run, made = data_report.result()
    progress.summary(f"{redact(store.tracking)} experiment {context.experiment_id}", cores_busy)
    if made:
        quiet_say(f"data report: {run_address(store.tracking, context.experiment_id, data_run)}")
    started = time.perf_counter()
    figures = {} if cores_busy is None else {"cores_busy": cores_busy}
    report_run, _ = publish_study_report(study, context.tracker, context.experiment_id, figures=figures)
    return SearchResult(
        study_name,
        context.experiment_id,
        run_address(store.tracking, context.experiment_id, report_run),
        time.perf_counter() - started,
        cores_busy,
    )
