"""A study's report: how the search went, which parameters mattered and how far its early judgements held, as PNG
figures, one HTML page and CSV files.

Reads an Optuna study and writes files; knows nothing of MLflow (`search.reports.runs` logs the folder).
"""

from __future__ import annotations

import html
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization as interactive  # noqa: E402
import optuna.visualization.matplotlib as static  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import plotly.offline  # noqa: E402
from matplotlib import pyplot  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.record.tables import trials_table  # noqa: E402
from search.reports.rungs import RungCorrelation, rung_correlations, rungs_table  # noqa: E402

MAIN_PARAMS = 6  # the parameters drawn in the parallel-coordinate and slice plots
PAGE = "report.html"
TRIALS_CSV = "trials.csv"
RUNGS_CSV = "rungs.csv"
BEST_TRIAL = "best_trial.json"
COUNTED_STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
}  # the report's names: metrics trials_complete ... trials_running


@dataclass(frozen=True)
class StudyReport:
    """What a report found, for the tracking run's tags and metrics."""

    counts: dict[str, int]
    best: optuna.trial.FrozenTrial | None
    importances: dict[str, float]
    rungs: tuple[RungCorrelation, ...]  # how the ranking at each rung held to the last epoch
    files: tuple[Path, ...]


def tally(counts: dict[str, int]) -> str:
    """Trials per state, those present only: '5 complete, 3 pruned'."""
    return ", ".join(f"{count} {state}" for state, count in counts.items() if count)


def write_study_report(
    study: optuna.Study, folder: Path, run_link: Callable[[str], str] = lambda run_id: run_id
) -> StudyReport:
    """Write the figures (PNG), `report.html` (the same plots, interactive), `trials.csv`, `rungs.csv` and
    `best_trial.json`.

    `run_link` turns an MLflow run id into the address the page links to.
    """
    folder.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    best = study.best_trial if complete else None
    importances = parameter_importances(study)
    main = _main_params(study, importances)
    plots = _plots(study, complete, importances, main)
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's plots are 'experimental'
        for name, (draw_static, _) in plots.items():
            figure = draw_static()
            figure.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
            pyplot.close(figure)
            files.append(folder / f"{name}.png")
        interactive_figures = {name: draw() for name, (_, draw) in plots.items()}
    table = trials_table(study)
    run_ids = {t.number: t.user_attrs.get("mlflow_run_id", "") for t in trials}
    table.insert(3, "mlflow_run_id", [run_ids[n] for n in table["number"]])
    table.to_csv(folder / TRIALS_CSV, index=False)
    rungs = tuple(rung_correlations(trials, study.direction))
    rungs_table(rungs).to_csv(folder / RUNGS_CSV, index=False)
    counts = {name: sum(t.state is state for t in trials) for state, name in COUNTED_STATES.items()}
    best_record = _best_record(study, best, run_link)
    (folder / BEST_TRIAL).write_text(json.dumps(best_record, indent=2, default=str) + "\n")
    (folder / PAGE).write_text(_page(study, counts, best_record, interactive_figures, rungs, table))
    files += [folder / TRIALS_CSV, folder / RUNGS_CSV, folder / BEST_TRIAL, folder / PAGE]
    return StudyReport(counts, best, importances, rungs, tuple(files))


def parameter_importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each parameter for the objective, largest first; empty below 2 completed trials."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study, evaluator=evaluator)
        return {name: float(share) for name, share in found.items()}
    except (RuntimeError, ValueError):  # too few distinct values for a forest to split on
        return {}


def _main_params(study: optuna.Study, importances: dict[str, float]) -> list[str]:
    """The most important parameters; without importances, those most often sampled."""
    if importances:
        return list(importances)[:MAIN_PARAMS]
    seen = pd.Series([name for t in study.get_trials(deepcopy=False) for name in t.params]).value_counts()
    return list(seen.index[:MAIN_PARAMS])


def _plots(
    study: optuna.Study, complete: list[optuna.trial.FrozenTrial], importances: dict[str, float], main: list[str]
) -> dict[str, tuple[Callable[[], Figure], Callable[[], go.Figure]]]:
    """Each plot the study's trials allow, by name: (matplotlib figure maker, plotly figure maker)."""
    plots = {}
    if complete:
        plots["optimization_history"] = (
            lambda: _figure(static.plot_optimization_history(study)),
            lambda: interactive.plot_optimization_history(study),
        )
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values"] = (
            lambda: _intermediate_values_figure(study),
            lambda: interactive.plot_intermediate_values(study),
        )
    if importances:
        plots["param_importances"] = (
            lambda: _importances_figure(importances),
            lambda: _importances_plotly(importances),
        )
    if complete and main:
        plots["parallel_coordinate"] = (
            lambda: _figure(static.plot_parallel_coordinate(study, params=main), size=(2 * len(main) + 3, 6)),
            lambda: interactive.plot_parallel_coordinate(study, params=main),
        )
        plots["slice"] = (
            lambda: _figure(static.plot_slice(study, params=main), size=(3 * len(main) + 1, 4)),
            lambda: interactive.plot_slice(study, params=main),
        )
    return plots


def _figure(axes, size: tuple[float, float] | None = None) -> Figure:
    """The figure of what an Optuna matplotlib plot returned (one Axes or an array of them), resized."""
    figure = np.atleast_1d(axes).flat[0].figure
    if size is not None:
        figure.set_size_inches(*size)
    return figure


def _intermediate_values_figure(study: optuna.Study) -> Figure:
    """Each trial's reported value against epoch, coloured by how the trial ended (pruned ones stop early)."""
    colours = {
        TrialState.COMPLETE: "tab:blue",
        TrialState.PRUNED: "tab:orange",
        TrialState.FAIL: "tab:red",
        TrialState.RUNNING: "tab:gray",
    }
    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    for trial in study.get_trials(deepcopy=False):
        if trial.intermediate_values:
            steps = sorted(trial.intermediate_values)
            axes.plot(
                steps,
                [trial.intermediate_values[s] for s in steps],
                marker=".",
                alpha=0.7,
                color=colours.get(trial.state, "tab:gray"),
            )
    for state, colour in colours.items():
        axes.plot([], [], color=colour, label=state.name.lower())
    axes.set(
        title="Intermediate values (pruned trials stop early)",
        xlabel="epoch",
        ylabel=study.user_attrs.get("metric", "value"),
    )
    axes.legend(loc="best")
    return figure


def _importances_figure(importances: dict[str, float]) -> Figure:
    """A horizontal bar per parameter, most important on top."""
    names = list(importances)[::-1]
    figure = Figure(figsize=(8, 0.4 * len(names) + 1.5))
    axes = figure.subplots()
    axes.barh(names, [importances[n] for n in names], color="tab:blue")
    axes.set(title="Parameter importances (fANOVA)", xlabel="share of the objective's variance")
    return figure


def _importances_plotly(importances: dict[str, float]) -> go.Figure:
    names = list(importances)[::-1]
    figure = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h"))
    figure.update_layout(title="Parameter importances (fANOVA)", xaxis_title="share of the objective's variance")
    return figure


def _best_record(study: optuna.Study, best: optuna.trial.FrozenTrial | None, run_link: Callable[[str], str]) -> dict:
    """The best trial's number, value, parameters, summary figures and run link (empty before one completes)."""
    if best is None:
        return {}
    run_id = best.user_attrs.get("mlflow_run_id", "")
    figures = {k: v for k, v in best.user_attrs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {
        "number": best.number,
        "metric": study.user_attrs.get("metric", "value"),
        "value": best.value,
        "params": best.params,
        "summary": figures,
        "mlflow_run_id": run_id,
        "run": run_link(run_id),
    }


def _page(
    study: optuna.Study,
    counts: dict[str, int],
    best: dict,
    figures: dict[str, go.Figure],
    rungs: tuple[RungCorrelation, ...],
    table: pd.DataFrame,
) -> str:
    """One self-contained HTML page (plotly embedded once: it must render offline, in MLflow's preview)."""
    title = html.escape(f"Study {study.study_name}")
    if best:
        params = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in best["params"].items()
        )
        head = (
            f'<p>Best: <a href="{html.escape(best["run"])}" target="_top">trial {best["number"]}</a>, '
            f"{html.escape(best['metric'])} {best['value']:.4f}</p><table>{params}</table>"
        )
    else:
        head = "<p>No trial has completed yet.</p>"
    plots = "".join(
        f"<h2>{html.escape(name.replace('_', ' '))}</h2>" + figure.to_html(full_html=False, include_plotlyjs=False)
        for name, figure in figures.items()
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
        f"<script>{plotly.offline.get_plotlyjs()}</script>"
        "<style>body{font-family:sans-serif;margin:1em 2em}td{padding:0 1em 0 0}</style></head>"
        f"<body><h1>{title}</h1><p>{len(study.trials)} trials: {tally(counts)}</p>{head}{plots}{_rungs_section(rungs)}"
        f"<h2>trials</h2>{table.to_html(index=False, na_rep='')}</body></html>\n"
    )


def _rungs_section(rungs: tuple[RungCorrelation, ...]) -> str:
    """The rung table: how far the ranking at each epoch the pruner judged at held to the trials' last epoch."""
    head = (
        "<h2>early judgements</h2><p>The trials that trained past each epoch the pruner judged at: rank correlation"
        " of their value there with their value at their last epoch (1: the same order, 0: unrelated, -1: reversed),"
        " and the rank there of the trial that ended best.</p>"
    )
    if not rungs:
        return head + "<p>No trial has trained past an epoch it was judged at.</p>"
    rows = "".join(f"<tr><td>{r.epoch}</td><td>{r.trials}</td>{_rung_cells(r)}</tr>" for r in rungs)
    return (
        f"{head}<table><tr><th>epoch</th><th>trials</th><th>Spearman</th><th>Kendall</th>"
        f"<th>best trial's rank</th></tr>{rows}</table>"
    )


def _rung_cells(rung: RungCorrelation) -> str:
    """A rung's three figures as table cells, or one cell saying there were too few trials."""
    if rung.too_few:
        return '<td colspan="3">too few</td>'
    return f"<td>{rung.spearman:.2f}</td><td>{rung.kendall:.2f}</td><td>{rung.best_rank} of {rung.trials}</td>"
