"""Each `atelier` command: call its one engine function with the parsed flags, then print what it returned.

Engine modules are imported inside each command, so that a command imports only what it runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from search.errors import SetupError

if TYPE_CHECKING:
    from search.record.store import Store


def say(line: str) -> None:
    """A line of an engine function, printed at once (a search runs for minutes between lines)."""
    print(line, flush=True)


def unchecked_store(args: argparse.Namespace) -> Store:
    """The store the flags name, for an engine function that checks it itself."""
    from search.record.store import Store

    return Store(args.store, args.storage, args.tracking_uri)


def checked_store(args: argparse.Namespace) -> Store:
    """The store the flags name, checked before anything is read or written."""
    return unchecked_store(args).check()


def run(args: argparse.Namespace) -> int:
    """`atelier run`: search, then print where the study report is."""
    from search.pipelines.run import OVERRIDES, SearchRequest, run_search

    request = SearchRequest(
        args.objective,
        args.space,
        args.hypermodel,
        args.study,
        {name: getattr(args, name) for name in OVERRIDES},
        args.data_dir,
        args.workers,
        args.quiet,
        images=args.images,
    )
    result = run_search(request, unchecked_store(args), say=say)
    if not args.quiet:
        print(f"study report: {result.study_report} ({result.report_seconds:.1f} s; `atelier ui` serves a local store)")
    return 0


def best(args: argparse.Namespace) -> int:
    """`atelier best`: search, finalists, ensemble and promotion, then the gates, the ladder and the model."""
    from search.pipelines.best import parse_budget, run_best
    from search.pipelines.run import SearchRequest

    budget = parse_budget(args.budget)
    request = SearchRequest(
        args.objective, study=args.study, data_dir=args.data_dir, quiet=args.quiet, images=args.images
    )
    result = run_best(request, unchecked_store(args), budget, args.finalists, args.model_name, say=say)
    promotion = result.promotion
    for gate in promotion.gates:
        print(f"gate {gate.name}: {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
    ladder = ", ".join(f"{name.removeprefix('val_accuracy_')} {value:.4f}" for name, value in result.ladder.items())
    phases = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in result.seconds.items())
    print(f"validation accuracy: {ladder}")
    print(f"test accuracy {promotion.evaluation.metrics['accuracy']:.4f} (evaluated once); {phases}")
    aliases = "champion and candidate" if promotion.champion else "candidate only"
    print(f"model: {promotion.model_uri} ({aliases}); promotion run {promotion.run_id}")
    return 0


def show(args: argparse.Namespace) -> int:
    """`atelier show`: a study's trials, best first."""
    from search.record.store import load_existing_study
    from search.record.tables import render, trials_table

    study = load_existing_study(unchecked_store(args), args.study)
    table = trials_table(study)
    if args.format == "table":
        print(f"study {study.study_name}: {len(table)} trials, best first")
    print(render(table, args.format), end="")
    return 0


def data(args: argparse.Namespace) -> int:
    """`atelier data`: the objective's images summed up, their class counts, and where the figures are."""
    from search.record.tables import render
    from search.reports.data import class_counts, folder_lines, report_data

    report = report_data(args.objective, args.data_dir, args.output, args.images)
    images, facts = report.data, report.facts
    readable = args.format in ("table", "markdown")
    if readable:
        print(
            f"data {images.name} from {images.source}: {facts['train_images']} train and "
            f"{facts['validation_images']} validation images {images.input_shape}, {facts['classes']} classes"
        )
        print(
            f"train pixels: mean {facts['pixel_mean']:.2f}, std {facts['pixel_std']:.2f}, "
            f"min {facts['pixel_min']}, max {facts['pixel_max']}"
        )
        for line in folder_lines(images):
            print(line)
    print(render(class_counts(images), args.format), end="")
    print(
        f"report in {report.files[0].parent}: {', '.join(path.name for path in report.files)} ({report.seconds:.1f} s)",
        file=sys.stdout if readable else sys.stderr,
    )
    return 0


def report(args: argparse.Namespace) -> int:
    """`atelier report`: rewrite the study's report run, then its tally, best trial and importances."""
    from search.reports.rungs import rung_summary
    from search.reports.runs import report_study
    from search.reports.study import tally

    published = report_study(unchecked_store(args), args.study, args.output)
    study, written = published.study, published.report
    print(f"study {study.study_name}: {len(study.trials)} trials ({tally(written.counts)})")
    if written.best is not None:
        print(
            f"best: trial {written.best.number} {study.user_attrs.get('metric', 'value')} "
            f"{written.best.value:.4f} {written.best.params}"
        )
    if written.importances:
        print("importance: " + ", ".join(f"{name} {share:.2f}" for name, share in written.importances.items()))
    if written.rungs:
        print(f"early judgements: {rung_summary(written.rungs)}")
    print(f"report: {published.address}" + (f"; files in {args.output}" if args.output else ""))
    return 0


STRATEGY_FLAGS = ("seeds", "pair_seeds", "budget_epochs", "target_accuracy", "strategies", "memory_trials", "holdout")
PIPELINE_FLAGS = ("budget", "runs")  # the flags of `atelier bench --pipelines` alone


def _bench_flags(
    args: argparse.Namespace, mine: tuple[str, ...], others: tuple[str, ...], mode: str
) -> dict[str, object]:
    """The flags of this kind of bench that were given; a SetupError for one that belongs to the other kind."""
    for name in others:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise SetupError(f"{flag} does not apply {mode}; drop it (see atelier bench --help)")
    return {name: getattr(args, name) for name in mine if getattr(args, name) is not None}


def bench(args: argparse.Namespace) -> int:
    """`atelier bench`: the strategies compared, the memory figures, and where the files are."""
    from search.bench.compare import BenchRequest, compare
    from search.record.store import Store
    from search.record.tables import render

    if args.pipelines:
        return bench_pipelines(args)
    given = _bench_flags(args, STRATEGY_FLAGS, PIPELINE_FLAGS, "without --pipelines")
    request = BenchRequest(
        objective=args.objective or "fashion-mnist-quick",
        space=args.space,
        data_dir=args.data_dir,
        output=args.output,
        **given,
    )
    result = compare(request, Store(args.store, None, args.tracking_uri), say=say)
    print(render(result.summary, "table"), end="")
    if result.verdict:
        print(result.verdict)
    if result.memory is not None:
        print("memory (peak RSS of the training process, MB) and wall time per trial outside fit (s):")
        print(render(result.memory, "table"), end="")
    print(
        f"files in {result.folder}: {', '.join(path.name for path in result.files)}; "
        f"MLflow run {result.run_address} ({result.seconds:.0f} s)"
    )
    return 0


def bench_pipelines(args: argparse.Namespace) -> int:
    """`atelier bench --pipelines`: each pipeline's median test accuracy at one budget, and where the files are."""
    from search.bench.pipelines import PipelinesRequest, compare_pipelines
    from search.pipelines.best import parse_budget
    from search.record.store import Store
    from search.record.tables import render

    given = _bench_flags(args, PIPELINE_FLAGS, STRATEGY_FLAGS, "with --pipelines")
    if "budget" in given:
        given["budget"] = parse_budget(given["budget"])
    request = PipelinesRequest(
        objective=args.objective or "fashion-mnist-best",
        space=args.space,
        data_dir=args.data_dir,
        output=args.output,
        **given,
    )
    result = compare_pipelines(request, Store(args.store, None, args.tracking_uri), say=say)
    print(render(result.summary, "table"), end="")
    print(
        f"files in {result.folder}: {', '.join(path.name for path in result.files)}; "
        f"MLflow run {result.run_address} ({result.seconds:.0f} s)"
    )
    return 0


def promote(args: argparse.Namespace) -> int:
    """`atelier promote`: test the trial once and register it, then its test figures, gates and model."""
    store = checked_store(args)
    from search.release.promote import promote as promote_trial

    started = time.perf_counter()
    result = promote_trial(
        store, args.study, args.trial, args.refit, args.model_name, args.data_dir, args.refit_seconds, say=say
    )
    metrics = result.evaluation.metrics
    print(
        f"test: accuracy {metrics['accuracy']:.4f}  log loss {metrics['log_loss']:.4f}  "
        f"macro F1 {metrics['f1_macro']:.4f}  ECE {metrics['ece']:.4f}  "
        f"(test-set evaluation {result.test_evaluations} of study {result.source.study_name})"
    )
    for gate in result.gates:
        print(f"gate {gate.name}: {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
    aliases = "champion and candidate" if result.champion else "candidate only"
    print(
        f"model: {result.model_uri} ({aliases}); promotion run {result.run_id}; {time.perf_counter() - started:.1f} s"
    )
    return 0


def predict(args: argparse.Namespace) -> int:
    """`atelier predict`: the images' labels, as a table."""
    from search.record.tables import render
    from search.release.predict import predict_images

    print(render(predict_images(unchecked_store(args), args.model, args.input), args.format), end="")
    return 0


def ui(args: argparse.Namespace) -> int:
    """`atelier ui`: the MLflow UI on the store; this process becomes its server and does not return."""
    from search.record.ui import serve_ui

    serve_ui(checked_store(args), args.host, args.port, say=say)
