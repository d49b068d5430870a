"""The `atelier` command line: a thin layer over the study, the store and the MLflow UI."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from search.errors import SetupError

EXIT_CRASH, EXIT_SETUP, EXIT_INTERRUPTED = 1, 2, 130
FORMATS = ("table", "csv", "json", "markdown")  # what search.record.tables.render writes
DEFAULT_WORKERS = 2  # 2 ran 1.24x the trials per hour of 1 here (benchmarks/workers.py)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `atelier` console script; no credential of a URL it was given reaches its output."""
    args = _parser().parse_args(argv)
    from search.secrets import scrub, secrets_of

    urls = (getattr(args, "storage", None), getattr(args, "tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI"))
    secrets = [secret for url in urls for secret in secrets_of(url)]
    if getattr(args, "verbose", False):
        os.environ["ATELIER_VERBOSE"] = "1"  # read by search.backend when it imports TensorFlow
    try:
        return args.command(args)
    except SetupError as error:
        if args.debug:
            print(scrub(traceback.format_exc(), secrets), file=sys.stderr)
        print(f"atelier: error: {scrub(str(error), secrets)}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("atelier: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug or an outage nobody foresaw: its traceback, minus any credential it quotes
        print(scrub(traceback.format_exc(), secrets), file=sys.stderr)
        return EXIT_CRASH


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier",
        description=__doc__.split(":")[0] + ": hyperparameter search for Keras image classifiers, recorded in MLflow.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="search a space on an objective",
        description=(
            "Run (or resume) a study until it holds --trials completed or pruned trials. "
            "Flags override the objective file, which overrides built-in defaults."
        ),
    )
    _objective_flags(run, "fashion-mnist")
    run.add_argument("--space", help="spaces/NAME.toml or a path (default: the objective's search.space)")
    run.add_argument(
        "--hypermodel",
        metavar="MODULE:BUILD",
        help="search a KerasTuner hypermodel instead of a space: a build(hp) function or a "
        "keras_tuner.HyperModel, importable from the working folder",
    )
    run.add_argument("--trials", type=int, help="the study's target of completed and pruned trials")
    run.add_argument("--max-epochs", type=int, help="epochs a trial may train at most")
    run.add_argument(
        "--timeout", type=float, help="end the search after this many seconds (running trials stop after their epoch)"
    )
    run.add_argument("--study", help="study name (default: OBJECTIVE-SPACE); an existing one resumes")
    run.add_argument("--seed", type=int, help="seed of the data split and the sampler")
    run.add_argument("--sampler", help="tpe, random, cmaes or gp")
    run.add_argument("--pruner", help="halving (asynchronous successive halving), hyperband, median or none")
    run.add_argument(
        "--warm-start", metavar="STUDY", help="first run the best trials of an earlier study of this space"
    )
    run.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"trials run at once, each in its own process with a share of the cores ({DEFAULT_WORKERS})",
    )
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    _store_flags(run)
    run.set_defaults(command=_run)

    best = commands.add_parser(
        "best",
        help="search, train the finalists longer, ensemble and promote, in one time budget",
        description=(
            "Search the objective's space for a share of --budget (a deadline), train its best configurations "
            "longer on every training image (side by side, one per core), ensemble them on the validation "
            "images (test-time mirror where it helps), then promote the ensemble as one model: evaluated once "
            "on the test split, gated and registered. The plan is printed first; every phase is in MLflow."
        ),
    )
    _objective_flags(best, "fashion-mnist")
    best.add_argument("--budget", required=True, help="wall time for everything: 2h, 90m, 450s or 450 (seconds)")
    best.add_argument("--finalists", type=int, help="configurations trained longer (default 2, 4 from 30m)")
    best.add_argument("--study", help="study name (default: OBJECTIVE-SPACE); an existing one resumes")
    best.add_argument("--model-name", help="registered model name (default: the objective's name)")
    best.add_argument("--quiet", action="store_true", help="print only the phases' lines")
    _store_flags(best)
    best.set_defaults(command=_best)

    show = commands.add_parser("show", help="print a study's trials, best first")
    show.add_argument("--study", help="study name (default: the most recent)")
    show.add_argument("--format", choices=FORMATS, default="table")
    _store_flags(show)
    show.set_defaults(command=_show)

    data = commands.add_parser(
        "data",
        help="report an objective's images before searching",
        description=(
            "Summarize the train and validation images a search of the objective uses (split sizes, image shape, "
            "pixel statistics, images per class) and draw them: class counts, sample images and the mean image of "
            "each class, the pixel-value histogram. The test split is not read."
        ),
    )
    _objective_flags(data, "fashion-mnist")
    data.add_argument("--output", type=Path, help="folder for the figures (default: data-report/OBJECTIVE)")
    data.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="of the class counts; csv and json print the table alone, to be parsed",
    )
    data.add_argument("--debug", action="store_true", help="show tracebacks")
    data.set_defaults(command=_data)

    report = commands.add_parser(
        "report",
        help="log a study's report to MLflow (atelier run does it too)",
        description=(
            "Write a study's report (optimization history, intermediate values, fANOVA importances, parallel-"
            "coordinate and slice plots as PNG and interactive HTML, all trials as CSV, the best trial) and log it "
            "to the study's report run in MLflow."
        ),
    )
    report.add_argument("--study", help="study name (default: the most recent)")
    report.add_argument("--output", type=Path, help="also keep the report's files in this folder")
    _store_flags(report)
    report.set_defaults(command=_report)

    promote = commands.add_parser(
        "promote",
        help="test a study's best trial once and register it",
        description=(
            "Rebuild the study's best completed trial (or --trial N), refit it on train+validation or load its "
            "best-epoch weights, evaluate it once on the test split, gate it against the baseline and the "
            "champion, and register it in the MLflow Model Registry."
        ),
    )
    promote.add_argument("--study", help="study name (default: the most recent)")
    promote.add_argument("--trial", type=int, help="a completed trial's number (default: the study's best)")
    promote.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refit on train+validation for the trial's best epoch count (default: only when "
        "the study searched on a subsample); --no-refit loads the trial's saved weights",
    )
    promote.add_argument(
        "--refit-seconds",
        type=float,
        help="refit for as many epochs as fit in this time, the schedule stretched to them "
        "(default: the objective's [promotion] refit_seconds, else the trial's best epoch count)",
    )
    promote.add_argument("--model-name", help="registered model name (default: the objective's name)")
    promote.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")
    _store_flags(promote)
    promote.set_defaults(command=_promote)

    predict = commands.add_parser(
        "predict",
        help="label images with a registered model",
        description=(
            "Label images with a model from the MLflow Model Registry: a .npy array of raw 0-255 images, a "
            "Kaggle-layout CSV (with or without a label column) or a folder of PNG images."
        ),
    )
    predict.add_argument(
        "--model", default="models:/fashion-mnist@champion", help="model URI (models:/fashion-mnist@champion)"
    )
    predict.add_argument("--input", type=Path, required=True, help="a .npy file, a .csv file or a folder of .png")
    predict.add_argument("--format", choices=FORMATS, default="table")
    _store_flags(predict)
    predict.set_defaults(command=_predict)

    bench = commands.add_parser(
        "bench",
        help="compare atelier's search with plain Optuna and KerasTuner",
        description=(
            "Search one space on one objective with several strategies at an equal budget of training epochs "
            "(pruned trials included), once per seed, and report per strategy the best validation accuracy at the "
            "budget, the epochs needed to reach KerasTuner Hyperband's best and --target-accuracy, trials finished "
            "and pruned, and wall time outside training; then the peak memory of a training process after "
            "--memory-trials tiny trials, atelier against KerasTuner. Writes CSV files and a PNG to --output and "
            "logs them to an MLflow run in the experiment 'bench'."
        ),
    )
    _objective_flags(bench, "fashion-mnist-quick")
    bench.add_argument("--space", help="spaces/NAME.toml or a path (default: the objective's search.space)")
    bench.add_argument("--seeds", type=int, default=3, help="runs of each strategy, seeds from the objective's (3)")
    bench.add_argument("--pair-seeds", type=int, metavar="N", help="runs of atelier and kt-hyperband (--seeds)")
    bench.add_argument(
        "--budget-epochs",
        type=int,
        default=60,
        help="training epochs each strategy may spend per seed, over all its trials (60)",
    )
    bench.add_argument(
        "--target-accuracy", type=float, help="also report the epochs needed to reach this validation accuracy"
    )
    bench.add_argument(
        "--strategies",
        nargs="+",
        metavar="NAME",
        help="atelier, optuna-tpe, optuna-random, kt-hyperband, kt-bayesian (these by default), atelier-hyperband",
    )
    bench.add_argument(
        "--memory-trials",
        type=int,
        nargs="*",
        default=[5, 30, 100],
        metavar="N",
        help="report peak memory after these numbers of 1-epoch trials (5 30 100); none skips it",
    )
    bench.add_argument(
        "--output", type=Path, help="folder for the tables and figure (default: bench-out/OBJECTIVE-SPACE)"
    )
    bench.add_argument("--store", type=Path, default=Path("mlruns"), help="local store folder (./mlruns)")
    bench.add_argument("--tracking-uri", help="MLflow tracking URI (sqlite:///STORE/mlflow.db)")
    bench.add_argument("--debug", action="store_true", help="show tracebacks")
    bench.set_defaults(command=_bench)

    ui = commands.add_parser("ui", help="browse the trials in the MLflow UI")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    _store_flags(ui)
    ui.set_defaults(command=_ui)
    return parser


def _objective_flags(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--objective", default=default, help=f"objectives/NAME.toml or a path ({default})")
    parser.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=Path("mlruns"), help="local store folder (./mlruns)")
    parser.add_argument("--storage", help="Optuna storage: a journal file, sqlite:///... or postgresql://...")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (sqlite:///STORE/mlflow.db)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own messages")


def _say(line: str) -> None:
    """A line of an engine function, printed at once (a search runs for minutes between lines)."""
    print(line, flush=True)


def _unchecked_store(args: argparse.Namespace):
    from search.record.store import Store

    return Store(args.store, args.storage, args.tracking_uri)


def _store(args: argparse.Namespace):
    return _unchecked_store(args).check()


def _run(args: argparse.Namespace) -> int:
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
    )
    result = run_search(request, _unchecked_store(args), say=_say)
    if not args.quiet:
        print(f"study report: {result.study_report} ({result.report_seconds:.1f} s; `atelier ui` serves a local store)")
    return 0


def _best(args: argparse.Namespace) -> int:
    from search.pipelines.best import parse_budget, run_best
    from search.pipelines.run import SearchRequest

    budget = parse_budget(args.budget)
    request = SearchRequest(args.objective, study=args.study, data_dir=args.data_dir, quiet=args.quiet)
    result = run_best(request, _unchecked_store(args), budget, args.finalists, args.model_name, say=_say)
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


def _show(args: argparse.Namespace) -> int:
    from search.record.store import load_existing_study
    from search.record.tables import render, trials_table

    study = load_existing_study(_unchecked_store(args), args.study)
    table = trials_table(study)
    if args.format == "table":
        print(f"study {study.study_name}: {len(table)} trials, best first")
    print(render(table, args.format), end="")
    return 0


def _data(args: argparse.Namespace) -> int:
    from search.record.tables import render
    from search.reports.data import class_counts, report_data

    report = report_data(args.objective, args.data_dir, args.output)
    data, facts = report.data, report.facts
    readable = args.format in ("table", "markdown")
    if readable:
        print(
            f"data {data.name} from {data.source}: {facts['train_images']} train and "
            f"{facts['validation_images']} validation images {data.input_shape}, {facts['classes']} classes"
        )
        print(
            f"train pixels: mean {facts['pixel_mean']:.2f}, std {facts['pixel_std']:.2f}, "
            f"min {facts['pixel_min']}, max {facts['pixel_max']}"
        )
    print(render(class_counts(data), args.format), end="")
    print(
        f"report in {report.files[0].parent}: {', '.join(path.name for path in report.files)} ({report.seconds:.1f} s)",
        file=sys.stdout if readable else sys.stderr,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from search.reports.runs import report_study
    from search.reports.study import tally

    published = report_study(_unchecked_store(args), args.study, args.output)
    study, report = published.study, published.report
    print(f"study {study.study_name}: {len(study.trials)} trials ({tally(report.counts)})")
    if report.best is not None:
        print(
            f"best: trial {report.best.number} {study.user_attrs.get('metric', 'value')} "
            f"{report.best.value:.4f} {report.best.params}"
        )
    if report.importances:
        print("importance: " + ", ".join(f"{name} {share:.2f}" for name, share in report.importances.items()))
    print(f"report: {published.address}" + (f"; files in {args.output}" if args.output else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from search.bench.compare import BenchRequest, compare
    from search.bench.strategies import DEFAULT_STRATEGIES
    from search.record.store import Store
    from search.record.tables import render

    request = BenchRequest(
        objective=args.objective,
        space=args.space,
        seeds=args.seeds,
        pair_seeds=args.pair_seeds,
        budget_epochs=args.budget_epochs,
        target_accuracy=args.target_accuracy,
        strategies=args.strategies or DEFAULT_STRATEGIES,
        memory_trials=args.memory_trials,
        data_dir=args.data_dir,
        output=args.output,
    )
    result = compare(request, Store(args.store, None, args.tracking_uri), say=_say)
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


def _promote(args: argparse.Namespace) -> int:
    store = _store(args)
    from search.release.promote import promote

    started = time.perf_counter()
    result = promote(
        store, args.study, args.trial, args.refit, args.model_name, args.data_dir, args.refit_seconds, say=_say
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


def _predict(args: argparse.Namespace) -> int:
    from search.record.tables import render
    from search.release.predict import predict_images

    print(render(predict_images(_unchecked_store(args), args.model, args.input), args.format), end="")
    return 0


def _ui(args: argparse.Namespace) -> int:
    store = _store(args)
    store.check_tracking_exists()
    from search.record.tracking import runs_page

    url = f"http://{args.host}:{args.port}"
    page = runs_page(store.tracking, url)
    print(f"MLflow UI at {url}; trials at {page}\n(Ctrl-C stops it)", flush=True)
    # The store's URI goes through the environment: on the command line `ps` would show it to every user.
    os.environ["MLFLOW_BACKEND_STORE_URI"] = store.tracking
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no GenAI jobs: no 7 idle processes
    command = [sys.executable, "-m", "mlflow", "server", "--host", args.host, "--port", str(args.port)]
    command += ["--workers", "1"]  # one user: one worker is plenty
    os.execv(sys.executable, command)  # the server replaces this process: Ctrl-C and signals reach it


if __name__ == "__main__":
    sys.exit(main())
