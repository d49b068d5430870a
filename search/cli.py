"""The `atelier` command line: a thin layer over the study, the store and the MLflow UI."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from search.errors import SetupError

EXIT_SETUP, EXIT_INTERRUPTED = 2, 130
FORMATS = ("table", "csv", "json", "markdown")  # what search.report.render writes
DEFAULT_WORKERS, MAX_WORKERS = 2, 64  # 2 ran 1.24x the trials per hour of 1 here (benchmarks/workers.py)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `atelier` console script."""
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except SetupError as error:
        if args.debug:
            traceback.print_exc()
        print(f"atelier: error: {error}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("atelier: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description=__doc__.split(":")[0] + ": hyperparameter "
                                     "search for Keras image classifiers, recorded in MLflow.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="search a space on an objective", description=(
        "Run (or resume) a study until it holds --trials completed or pruned trials. "
        "Flags override the objective file, which overrides built-in defaults."))
    run.add_argument("--objective", default="fashion-mnist", help="objectives/NAME.toml or a path (fashion-mnist)")
    run.add_argument("--space", help="spaces/NAME.toml or a path (default: the objective's search.space)")
    run.add_argument("--hypermodel", metavar="MODULE:BUILD",
                     help="search a KerasTuner hypermodel instead of a space: a build(hp) function or a "
                     "keras_tuner.HyperModel, importable from the working folder")
    run.add_argument("--trials", type=int, help="the study's target of completed and pruned trials")
    run.add_argument("--max-epochs", type=int, help="epochs a trial may train at most")
    run.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    run.add_argument("--study", help="study name (default: OBJECTIVE-SPACE); an existing one resumes")
    run.add_argument("--seed", type=int, help="seed of the data split and the sampler")
    run.add_argument("--sampler", help="tpe, random, cmaes or gp")
    run.add_argument("--pruner", help="hyperband, median, halving or none")
    run.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")
    run.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                     help=f"trials run at once, each in its own process with a share of the cores ({DEFAULT_WORKERS})")
    run.add_argument("--quiet", action="store_true", help="print only the summary")
    _store_flags(run)
    run.set_defaults(command=_run)

    show = commands.add_parser("show", help="print a study's trials, best first")
    show.add_argument("--study", help="study name (default: the most recent)")
    show.add_argument("--format", choices=FORMATS, default="table")
    _store_flags(show)
    show.set_defaults(command=_show)

    data = commands.add_parser("data", help="report an objective's images before searching", description=(
        "Summarize the train and validation images a search of the objective uses (split sizes, image shape, "
        "pixel statistics, images per class) and draw them: class counts, sample images and the mean image of "
        "each class, the pixel-value histogram. The test split is not read."))
    data.add_argument("--objective", default="fashion-mnist", help="objectives/NAME.toml or a path (fashion-mnist)")
    data.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")
    data.add_argument("--output", type=Path, help="folder for the figures (default: data-report/OBJECTIVE)")
    data.add_argument("--format", choices=FORMATS, default="table",
                      help="of the class counts; csv and json print the table alone, to be parsed")
    data.add_argument("--debug", action="store_true", help="show tracebacks")
    data.set_defaults(command=_data)

    report = commands.add_parser("report", help="log a study's report to MLflow (atelier run does it too)",
                                 description=(
        "Write a study's report (optimization history, intermediate values, fANOVA importances, parallel-"
        "coordinate and slice plots as PNG and interactive HTML, all trials as CSV, the best trial) and log it "
        "to the study's report run in MLflow."))
    report.add_argument("--study", help="study name (default: the most recent)")
    report.add_argument("--output", type=Path, help="also keep the report's files in this folder")
    _store_flags(report)
    report.set_defaults(command=_report)

    promote = commands.add_parser("promote", help="test a study's best trial once and register it", description=(
        "Rebuild the study's best completed trial (or --trial N), refit it on train+validation or load its "
        "best-epoch weights, evaluate it once on the test split, gate it against the baseline and the "
        "champion, and register it in the MLflow Model Registry."))
    promote.add_argument("--study", help="study name (default: the most recent)")
    promote.add_argument("--trial", type=int, help="a completed trial's number (default: the study's best)")
    promote.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                         help="refit on train+validation for the trial's best epoch count (default: only when "
                         "the study searched on a subsample); --no-refit loads the trial's saved weights")
    promote.add_argument("--model-name", help="registered model name (default: the objective's name)")
    promote.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")
    _store_flags(promote)
    promote.set_defaults(command=_promote)

    predict = commands.add_parser("predict", help="label images with a registered model", description=(
        "Label images with a model from the MLflow Model Registry: a .npy array of raw 0-255 images, a "
        "Kaggle-layout CSV (with or without a label column) or a folder of PNG images."))
    predict.add_argument("--model", default="models:/fashion-mnist@champion",
                         help="model URI (models:/fashion-mnist@champion)")
    predict.add_argument("--input", type=Path, required=True, help="a .npy file, a .csv file or a folder of .png")
    predict.add_argument("--format", choices=FORMATS, default="table")
    _store_flags(predict)
    predict.set_defaults(command=_predict)

    bench = commands.add_parser("bench", help="compare atelier's search with plain Optuna and KerasTuner",
                                description=(
        "Search one space on one objective with several strategies at an equal budget of training epochs "
        "(pruned trials included), once per seed, and report per strategy the best validation accuracy at the "
        "budget, the epochs needed to reach KerasTuner Hyperband's best and --target-accuracy, trials finished "
        "and pruned, and wall time outside training; then the peak memory of a training process after "
        "--memory-trials tiny trials, atelier against KerasTuner. Writes CSV files and a PNG to --output and "
        "logs them to an MLflow run in the experiment 'bench'."))
    bench.add_argument("--objective", default="fashion-mnist-quick",
                       help="objectives/NAME.toml or a path (fashion-mnist-quick)")
    bench.add_argument("--space", help="spaces/NAME.toml or a path (default: the objective's search.space)")
    bench.add_argument("--seeds", type=int, default=3, help="runs of each strategy, seeds from the objective's (3)")
    bench.add_argument("--budget-epochs", type=int, default=60,
                       help="training epochs each strategy may spend per seed, over all its trials (60)")
    bench.add_argument("--target-accuracy", type=float, help="also report the epochs needed to reach this "
                       "validation accuracy")
    bench.add_argument("--strategies", nargs="+", metavar="NAME",
                       help="atelier, optuna-tpe, optuna-random, kt-hyperband, kt-bayesian (all)")
    bench.add_argument("--memory-trials", type=int, nargs="*", default=[5, 30, 100], metavar="N",
                       help="report peak memory after these numbers of 1-epoch trials (5 30 100); none skips it")
    bench.add_argument("--data-dir", type=Path, help="folder holding the four Fashion-MNIST IDX gz files")
    bench.add_argument("--output", type=Path, help="folder for the tables and figure "
                       "(default: bench-out/OBJECTIVE-SPACE)")
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


def _store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=Path("mlruns"), help="local store folder (./mlruns)")
    parser.add_argument("--storage", help="Optuna storage: a journal file, sqlite:///... or postgresql://...")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (sqlite:///STORE/mlflow.db)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _store(args: argparse.Namespace):
    from search.store import Store

    return Store(args.store, args.storage, args.tracking_uri).check()


def _run(args: argparse.Namespace) -> int:
    from search.config import check_objective, load_objective

    objective = load_objective(args.objective)
    overrides = {"trials": args.trials, "max_epochs": args.max_epochs, "timeout": args.timeout,
                 "seed": args.seed, "sampler": args.sampler, "pruner": args.pruner}
    objective = check_objective(replace(objective, **{k: v for k, v in overrides.items() if v is not None}))
    if not 1 <= args.workers <= MAX_WORKERS:
        raise SetupError(f"--workers {args.workers} is not a count of processes; give 1 to {MAX_WORKERS}")
    space = _space(args.space, args.hypermodel, objective.space)
    store = _store(args)
    study_name = args.study or f"{objective.name}-{space.name}"

    from search.data import load_search_data

    started = time.perf_counter()
    data = load_search_data(objective, args.data_dir)
    if space.hypermodel is not None:
        from search.hypermodel import Hypermodel

        Hypermodel(space.hypermodel).check(data)
    if not args.quiet:
        print(f"data: {len(data.train)} train and {len(data.val)} validation images {data.input_shape} "
              f"from {data.source} in {time.perf_counter() - started:.2f} s")
    from search.progress import Progress
    from search.study import open_study, optimize
    from search.tracking import dataset_inputs, redact
    from search.trial import SearchPlan

    from search.report_runs import publish_data_report, publish_study_report, run_address
    from search.trial import SearchContext

    study = open_study(study_name, store.storage(), objective, space, args.data_dir)
    plan = SearchPlan(study_name, objective, space, data, store, dataset_inputs(data))
    context = SearchContext.connect(plan)
    data_run, made = publish_data_report(data, plan.inputs, context.tracker, context.experiment_id)
    if made and not args.quiet:
        print(f"data report: {run_address(store.tracking, context.experiment_id, data_run)}")
    progress = Progress(study, objective, quiet=args.quiet)
    progress.start()
    optimize(plan, progress.trial_done, workers=args.workers, on_note=progress.note)
    progress.summary(f"{redact(store.tracking)} experiment {context.experiment_id}")
    started = time.perf_counter()
    report_run, _ = publish_study_report(study, context.tracker, context.experiment_id)
    if not args.quiet:
        print(f"study report: {run_address(store.tracking, context.experiment_id, report_run)} "
              f"({time.perf_counter() - started:.1f} s; `atelier ui` serves a local store)")
    return 0


def _space(space: str | None, hypermodel: str | None, default: str):
    """The space of --space (default: the objective's), or of --hypermodel."""
    from search.config import hypermodel_space, load_space

    if hypermodel is None:
        return load_space(space or default)
    if space is not None:
        raise SetupError(f"--space {space} and --hypermodel {hypermodel} both say what to search; give one of them")
    return hypermodel_space(hypermodel)


def _load_study(store, name: str | None):
    """The study called `name` (default: the most recent) in the store's Optuna storage."""
    import optuna

    from search.study import latest_study_name

    storage = store.existing_storage()
    name = name or latest_study_name(storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SetupError(f"unknown study '{name}'; see the studies with `atelier show` or pass --study") from None


def _show(args: argparse.Namespace) -> int:
    from search.report import render, trials_table

    study = _load_study(_store(args), args.study)
    table = trials_table(study)
    if args.format == "table":
        print(f"study {study.study_name}: {len(table)} trials, best first")
    print(render(table, args.format), end="")
    return 0


def _data(args: argparse.Namespace) -> int:
    from search.config import load_objective  # it runs check_objective; `data` has no flags to apply

    objective = load_objective(args.objective)
    folder = args.output or Path("data-report") / objective.name
    _check_report_folder(folder)
    from search.data import load_search_data
    from search.data_report import class_counts, summary, write_data_report
    from search.report import render

    data = load_search_data(objective, args.data_dir)
    readable = args.format in ("table", "markdown")
    if readable:
        facts = summary(data)
        print(f"data {data.name} from {data.source}: {facts['train_images']} train and "
              f"{facts['validation_images']} validation images {data.input_shape}, {facts['classes']} classes")
        print(f"train pixels: mean {facts['pixel_mean']:.2f}, std {facts['pixel_std']:.2f}, "
              f"min {facts['pixel_min']}, max {facts['pixel_max']}")
    print(render(class_counts(data), args.format), end="")
    started = time.perf_counter()
    paths = write_data_report(data, folder)
    print(f"report in {folder}: {', '.join(path.name for path in paths)} ({time.perf_counter() - started:.1f} s)",
          file=sys.stdout if readable else sys.stderr)
    return 0


def _check_report_folder(folder: Path) -> None:
    """Refuse a report folder that is a file, lies under a file, or cannot be written, before anything is written."""
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise SetupError(f"report folder {folder}: {existing} is a file, not a folder; "
                         "pass --output with a folder (it is made if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SetupError(f"report folder {folder}: cannot write in {existing}; "
                         "pass --output with a folder you can write to")


def _report(args: argparse.Namespace) -> int:
    if args.output is not None:
        _check_report_folder(args.output)
    store = _store(args)
    study = _load_study(store, args.study)
    store.check_tracking_exists()
    from search.report_runs import publish_study_report, run_address
    from search.study_report import tally
    from search.tracking import Tracker

    tracker = Tracker(store.tracking)
    experiment = tracker.client.get_experiment_by_name(study.study_name)
    if experiment is None:
        raise SetupError(f"study '{study.study_name}' has no MLflow experiment in {store.tracking}; pass the "
                         "--tracking-uri its search used")
    run_id, report = publish_study_report(study, tracker, experiment.experiment_id, args.output)
    print(f"study {study.study_name}: {len(study.trials)} trials ({tally(report.counts)})")
    if report.best is not None:
        print(f"best: trial {report.best.number} {study.user_attrs.get('metric', 'value')} "
              f"{report.best.value:.4f} {report.best.params}")
    if report.importances:
        print("importance: " + ", ".join(f"{name} {share:.2f}" for name, share in report.importances.items()))
    print(f"report: {run_address(store.tracking, experiment.experiment_id, run_id)}"
          + (f"; files in {args.output}" if args.output else ""))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from search.bench import STRATEGIES, check_strategies
    from search.config import load_objective, load_space

    objective = load_objective(args.objective)
    space = load_space(args.space or objective.space)
    if space.hypermodel is not None:
        raise SetupError(f"space {space.name} names a KerasTuner hypermodel; atelier bench drives a [params] space "
                         "through Optuna and through KerasTuner alike; give --space a space file with [params]")
    strategies = check_strategies(args.strategies or STRATEGIES)
    if args.budget_epochs < 1:
        raise SetupError(f"--budget-epochs {args.budget_epochs} leaves nothing to train; give at least 1")
    if args.seeds < 1:
        raise SetupError(f"--seeds {args.seeds} runs nothing; give at least 1")
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
        raise SetupError(f"--target-accuracy {args.target_accuracy} is not an accuracy; give a share in (0, 1]")
    if any(count < 1 for count in args.memory_trials):
        raise SetupError(f"--memory-trials {' '.join(map(str, args.memory_trials))}: counts of trials must be "
                         "at least 1 (give none to skip the memory figures)")
    folder = args.output or Path("bench-out") / f"{objective.name}-{space.name}"
    _check_report_folder(folder)
    from search.store import Store

    store = Store(args.store, None, args.tracking_uri).check()
    from search.bench import run_bench
    from search.bench_memory import measure_memory
    from search.bench_report import write_bench_report
    from search.bench_run import log_bench_run
    from search.data import load_search_data
    from search.report import render
    from search.report_runs import run_address
    from search.tracking import Tracker

    data = load_search_data(objective, args.data_dir)
    print(f"bench: {objective.name} ({len(data.train)} train, {len(data.val)} validation images), space "
          f"{space.name}, {args.budget_epochs} epochs per strategy and seed (trials of at most "
          f"{objective.max_epochs}), {args.seeds} seed{'s' * (args.seeds > 1)}", flush=True)
    started = time.perf_counter()

    def done(result) -> None:
        print(f"{result.strategy} seed {result.seed}: best val_accuracy {max(result.val_accuracy, default=0):.4f} "
              f"in {result.epochs} epochs, {result.trials} trials "
              f"({', '.join(f'{n} {k}' for k, n in result.outcomes.items() if n)}), {result.wall_seconds:.0f} s",
              flush=True)

    results = run_bench(objective, space, data, strategies, args.seeds, args.budget_epochs, done)
    memory = measure_memory(objective, space, args.data_dir, args.memory_trials) if args.memory_trials else None
    report = write_bench_report(results, memory, args.budget_epochs, args.target_accuracy, folder)
    settings = {"objective": objective.name, "space": space.name, "seeds": args.seeds,
                "budget_epochs": args.budget_epochs, "max_epochs": objective.max_epochs,
                "strategies": " ".join(strategies), "target_accuracy": args.target_accuracy,
                "train_images": len(data.train), "validation_images": len(data.val),
                "memory_trials": " ".join(map(str, args.memory_trials))}
    experiment_id, run_id = log_bench_run(Tracker(store.tracking), f"{objective.name}-{space.name}", settings,
                                          report, memory)
    print(render(report.summary, "table"), end="")
    if report.verdict:
        print(report.verdict)
    if memory is not None:
        print("memory (peak RSS of the training process, MB) and wall time per trial outside fit (s):")
        print(render(memory, "table"), end="")
    print(f"files in {folder}: {', '.join(path.name for path in report.files)}; "
          f"MLflow run {run_address(store.tracking, experiment_id, run_id)} ({time.perf_counter() - started:.0f} s)")
    return 0


def _promote(args: argparse.Namespace) -> int:
    store = _store(args)
    from search.promote import promote

    started = time.perf_counter()
    result = promote(store, args.study, args.trial, args.refit, args.model_name, args.data_dir,
                     say=lambda line: print(line, flush=True))
    metrics = result.evaluation.metrics
    print(f"test: accuracy {metrics['accuracy']:.4f}  log loss {metrics['log_loss']:.4f}  "
          f"macro F1 {metrics['f1_macro']:.4f}  ECE {metrics['ece']:.4f}  "
          f"(test-set evaluation {result.test_evaluations} of study {result.source.study_name})")
    for gate in result.gates:
        print(f"gate {gate.name}: {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
    aliases = "champion and candidate" if result.champion else "candidate only"
    print(f"model: {result.model_uri} ({aliases}); promotion run {result.run_id}; "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def _predict(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.model.startswith(("models:/", "runs:/")):
        store.check_tracking_exists()
    import mlflow

    from search.predict import load_classifier, predictions_table, read_images
    from search.report import render

    mlflow.set_tracking_uri(store.tracking)
    classifier = load_classifier(args.model)
    names, images = read_images(args.input, classifier.input_shape)
    print(render(predictions_table(classifier, names, images), args.format), end="")
    return 0


def _ui(args: argparse.Namespace) -> int:
    store = _store(args)
    store.check_tracking_exists()
    from search.tracking import runs_page

    url = f"http://{args.host}:{args.port}"
    page = runs_page(store.tracking, url)
    print(f"MLflow UI at {url}; trials at {page}\n(Ctrl-C stops it)", flush=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store.tracking,
               "--host", args.host, "--port", str(args.port), "--workers", "1"]  # one user: one worker is plenty
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no GenAI jobs: no 7 idle processes
    os.execv(sys.executable, command)  # the server replaces this process: Ctrl-C and signals reach it


if __name__ == "__main__":
    sys.exit(main())
