"""The flags of every `atelier` command, each command's in a function of its own, and the function each runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from search.cli import commands
from search.cli.arguments import Parser, number, one_of, whole_number

DESCRIPTION = "The `atelier` command line: hyperparameter search for Keras image classifiers, recorded in MLflow."
FORMATS = ("table", "csv", "json", "markdown")  # what search.record.tables.render writes
DEFAULT_WORKERS = 2  # 2 ran 1.24x the trials per hour of 1 here (benchmarks/workers.py)

Subcommands = argparse._SubParsersAction  # what add_subparsers returns: add_parser makes each command's parser


def build_parser() -> Parser:
    """The parser of `atelier COMMAND [FLAGS]`; a parsed command line's `command` is the function to run."""
    parser = Parser(prog="atelier", description=DESCRIPTION)
    subcommands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=Parser)
    for add_command in (_run, _best, _show, _data, _report, _promote, _predict, _bench, _ui):
        add_command(subcommands)
    return parser


def _run(subcommands: Subcommands) -> None:
    run = subcommands.add_parser(
        "run",
        help="search a space on an objective",
        description=(
            "Run (or resume) a study until it holds --trials completed or pruned trials. "
            "Flags override the objective file, which overrides built-in defaults."
        ),
    )
    _objective_flags(run, "fashion-mnist", images=True)
    run.add_argument("--space", help="spaces/NAME.toml or a path (default: the objective's search.space)")
    run.add_argument(
        "--hypermodel",
        metavar="MODULE:BUILD",
        help="search a KerasTuner hypermodel instead of a space: a build(hp) function or a "
        "keras_tuner.HyperModel, importable from the working folder",
    )
    run.add_argument("--trials", type=whole_number, help="the study's target of completed and pruned trials")
    run.add_argument("--max-epochs", type=whole_number, help="epochs a trial may train at most")
    run.add_argument(
        "--timeout", type=number, help="end the search after this many seconds (running trials stop after their epoch)"
    )
    run.add_argument("--study", help="study name (default: OBJECTIVE-SPACE); an existing one resumes")
    run.add_argument("--seed", type=whole_number, help="seed of the data split and the sampler")
    run.add_argument("--sampler", help="tpe, random, cmaes or gp")
    run.add_argument(
        "--pruner",
        help="halving (asynchronous successive halving), asha (its rungs, trials paused and resumed from "
        "checkpoints), hyperband, median or none",
    )
    run.add_argument(
        "--warm-start", metavar="STUDY", help="first run the best trials of an earlier study of this space"
    )
    run.add_argument(
        "--workers",
        type=whole_number,
        default=DEFAULT_WORKERS,
        help=f"trials run at once, each in its own process with a share of the cores ({DEFAULT_WORKERS})",
    )
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    _store_flags(run)
    run.set_defaults(command=commands.run)


def _best(subcommands: Subcommands) -> None:
    best = subcommands.add_parser(
        "best",
        help="search, train the finalists longer, ensemble and promote, in one time budget",
        description=(
            "Search the objective's space for a share of --budget (a deadline), train its best configurations "
            "longer on every training image (side by side, one per core), ensemble them on the validation "
            "images (test-time mirror where it helps), then promote the ensemble as one model: evaluated once "
            "on the test split, gated and registered. The plan is printed first; every phase is in MLflow."
        ),
    )
    _objective_flags(best, "fashion-mnist", images=True)
    best.add_argument("--budget", required=True, help="wall time for everything: 2h, 90m, 450s or 450 (seconds)")
    best.add_argument("--finalists", type=whole_number, help="configurations trained longer (default 2, 4 from 30m)")
    best.add_argument("--study", help="study name (default: OBJECTIVE-SPACE); an existing one resumes")
    best.add_argument("--model-name", help="registered model name (default: the objective's name)")
    best.add_argument("--quiet", action="store_true", help="print only the phases' lines")
    _store_flags(best)
    best.set_defaults(command=commands.best)


def _show(subcommands: Subcommands) -> None:
    show = subcommands.add_parser("show", help="print a study's trials, best first")
    show.add_argument("--study", help="study name (default: the most recent)")
    _format_flag(show)
    _store_flags(show)
    show.set_defaults(command=commands.show)


def _data(subcommands: Subcommands) -> None:
    data = subcommands.add_parser(
        "data",
        help="report an objective's images before searching",
        description=(
            "Summarize the train and validation images a search of the objective uses (split sizes, image shape, "
            "pixel statistics, images per class) and draw them: class counts, sample images and the mean image of "
            "each class, the pixel-value histogram. The test split is not read."
        ),
    )
    _objective_flags(data, "fashion-mnist", images=True)
    data.add_argument("--output", type=Path, help="folder for the figures (default: data-report/OBJECTIVE)")
    _format_flag(data, "of the class counts; csv and json print the table alone, to be parsed")
    data.add_argument("--debug", action="store_true", help="show tracebacks")
    data.set_defaults(command=commands.data)


def _report(subcommands: Subcommands) -> None:
    report = subcommands.add_parser(
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
    report.set_defaults(command=commands.report)


def _promote(subcommands: Subcommands) -> None:
    promote = subcommands.add_parser(
        "promote",
        help="test a study's best trial once and register it",
        description=(
            "Rebuild the study's best completed trial (or --trial N), refit it on train+validation or load its "
            "best-epoch weights, evaluate it once on the test split, gate it against the baseline and the "
            "champion, and register it in the MLflow Model Registry."
        ),
    )
    promote.add_argument("--study", help="study name (default: the most recent)")
    promote.add_argument("--trial", type=whole_number, help="a completed trial's number (default: the study's best)")
    promote.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refit on train+validation for the trial's best epoch count (default: only when "
        "the study searched on a subsample); --no-refit loads the trial's saved weights",
    )
    promote.add_argument(
        "--refit-seconds",
        type=number,
        help="refit for as many epochs as fit in this time, the schedule stretched to them "
        "(default: the objective's [promotion] refit_seconds, else the trial's best epoch count)",
    )
    promote.add_argument("--model-name", help="registered model name (default: the objective's name)")
    promote.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")
    _store_flags(promote)
    promote.set_defaults(command=commands.promote)


def _predict(subcommands: Subcommands) -> None:
    predict = subcommands.add_parser(
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
    _format_flag(predict)
    _store_flags(predict)
    predict.set_defaults(command=commands.predict)


def _bench(subcommands: Subcommands) -> None:
    bench = subcommands.add_parser(
        "bench",
        help="compare atelier's search with plain Optuna and KerasTuner",
        description=(
            "Search one space on one objective with several strategies at an equal budget of training epochs "
            "(pruned trials included), once per seed, and report per strategy the accuracy, on --holdout training "
            "images no strategy trains or selects on, of the model it hands over (its best trial by its own "
            "objective), the epochs its handed-over model needed to score as well as KerasTuner Hyperband's and "
            "--target-accuracy, trials finished and pruned, and wall time outside training; then the peak memory "
            "of a training process after "
            "--memory-trials tiny trials, atelier against KerasTuner. Writes CSV files and a PNG to --output and "
            "logs them to an MLflow run in the experiment 'bench'."
        ),
    )
    _objective_flags(bench, "fashion-mnist-quick")
    bench.set_defaults(objective=None)  # fashion-mnist-quick, or fashion-mnist-best with --pipelines
    bench.add_argument("--space", help="spaces/NAME.toml or a path (default: the objective's search.space)")
    bench.add_argument("--seeds", type=whole_number, help="runs of each strategy, seeds from the objective's (3)")
    bench.add_argument(
        "--pair-seeds", type=whole_number, metavar="N", help="runs of atelier and kt-hyperband (--seeds)"
    )
    bench.add_argument(
        "--budget-epochs",
        type=whole_number,
        help="training epochs each strategy may spend per seed, over all its trials (60)",
    )
    bench.add_argument(
        "--target-accuracy", type=number, help="also report the epochs needed to hand over a model this accurate"
    )
    bench.add_argument(
        "--holdout",
        type=whole_number,
        metavar="N",
        help="training images set aside to score the models handed over (10000, or what the subsample leaves out, "
        "or a fifth of the train split)",
    )
    bench.add_argument(
        "--strategies",
        nargs="+",
        metavar="NAME",
        help="atelier, optuna-tpe, optuna-random, kt-hyperband, kt-bayesian (these by default), atelier-hyperband, "
        "atelier-asha",
    )
    bench.add_argument(
        "--memory-trials",
        type=whole_number,
        nargs="*",
        metavar="N",
        help="report peak memory after these numbers of 1-epoch trials (5 30 100); none skips it",
    )
    bench.add_argument(
        "--pipelines",
        action="store_true",
        help="instead, compare whole pipelines at one wall-clock --budget, each evaluated once on the test split: "
        "atelier best, KerasTuner Hyperband then its best retrained, and the space's [reference] trained as "
        "finalists without search (objective default: fashion-mnist-best)",
    )
    bench.add_argument("--budget", help="with --pipelines: wall time of each run, e.g. 15m (15m)")
    bench.add_argument("--runs", type=whole_number, help="with --pipelines: runs of each pipeline (3)")
    bench.add_argument(
        "--output",
        type=Path,
        help="folder for the tables and figure (default: bench-out/OBJECTIVE-SPACE, or pipelines-OBJECTIVE-SPACE)",
    )
    bench.add_argument("--store", type=Path, default=Path("mlruns"), help="local store folder (./mlruns)")
    bench.add_argument("--tracking-uri", help="MLflow tracking URI (sqlite:///STORE/mlflow.db)")
    bench.add_argument("--debug", action="store_true", help="show tracebacks")
    bench.set_defaults(command=commands.bench)


def _ui(subcommands: Subcommands) -> None:
    ui = subcommands.add_parser("ui", help="browse the trials in the MLflow UI")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    ui.add_argument("--port", type=whole_number, default=5000)
    _store_flags(ui)
    ui.set_defaults(command=commands.ui)


def _objective_flags(parser: Parser, default: str, images: bool = False) -> None:
    given = parser.add_mutually_exclusive_group() if images else parser
    given.add_argument("--objective", default=default, help=f"objectives/NAME.toml or a path ({default})")
    if images:
        given.add_argument(
            "--images",
            type=Path,
            metavar="DIR",
            help="a folder of images, one subfolder per class, searched with default settings (not with --objective)",
        )
    parser.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")


def _format_flag(parser: Parser, help_text: str | None = None) -> None:
    parser.add_argument("--format", type=one_of(FORMATS), choices=FORMATS, default="table", help=help_text)


def _store_flags(parser: Parser) -> None:
    parser.add_argument("--store", type=Path, default=Path("mlruns"), help="local store folder (./mlruns)")
    parser.add_argument("--storage", help="Optuna storage: a journal file, sqlite:///... or postgresql://...")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (sqlite:///STORE/mlflow.db)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's own messages")
