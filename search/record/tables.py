"""Tables for the terminal and for files: a study's trials best first, rendered in several formats."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

STATE_ORDER = {
    TrialState.COMPLETE: 0,
    TrialState.PRUNED: 1,
    TrialState.RUNNING: 2,
    TrialState.WAITING: 3,
    TrialState.FAIL: 4,
}
SUMMARY_COLUMNS = ("best_val_accuracy", "best_epoch", "epochs", "n_params", "fit_seconds", "trial_seconds")


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, summary figures, parameters and reason; best first."""
    sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = trial.value if trial.value is not None else _last_reported(trial)
        row = {"number": trial.number, "state": trial.state.name, "value": value}
        row |= {key: trial.user_attrs.get(key) for key in SUMMARY_COLUMNS}
        row |= trial.params
        row["reason"] = trial.user_attrs.get("reason", "")
        row["_rank"] = STATE_ORDER[trial.state]
        row["_score"] = sign * value if value is not None else float("inf")
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["number", "state", "value", *SUMMARY_COLUMNS])
    table = pd.DataFrame(rows).sort_values(["_rank", "_score"], kind="stable")
    return table.drop(columns=["_rank", "_score"]).reset_index(drop=True)


def _last_reported(trial: optuna.trial.FrozenTrial) -> float | None:
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def render(table: pd.DataFrame, fmt: str) -> str:
    """`table` as aligned text, CSV, JSON records or a Markdown table, ending in a newline."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=2) + "\n"
    if fmt == "markdown":
        cells = table.astype(object).where(table.notna(), "").astype(str)
        lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    return (table.to_string(index=False) if len(table) else "(none)") + "\n"
