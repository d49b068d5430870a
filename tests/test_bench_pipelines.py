"""`atelier bench --pipelines` on the digits: the three pipelines each score a test accuracy, read the test split
once, and the tables and the MLflow run are written; a bad request is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from stores import atelier_case, local_client

from search.bench.pipelines import PIPELINES, PipelinesRequest, check_pipelines_request
from search.errors import SetupError

OBJECTIVE = """
[data]
source = "digits"
validation_fraction = 0.2
[search]
space = "dense"
trials = 1000
max_epochs = 4
pruner = "none"
"""
REFERENCE = """
[reference]
dense_layers = 1
dense_units = 128
learning_rate = 3e-3
batch_size = 64
"""
BUDGET_S = 120  # as test_best.py: under load, 90 s left atelier best's search no completed trial (60 never does)


def _space_with_reference(folder: Path) -> Path:
    path = folder / "dense-ref.toml"
    path.write_text((Path(__file__).parents[1] / "spaces" / "dense.toml").read_text() + REFERENCE)
    return path


@pytest.mark.e2e
def test_every_pipeline_scores_once_on_the_test_split(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(OBJECTIVE)
    _space_with_reference(tmp_path)
    ran = atelier_case(
        tmp_path,
        "bench",
        "--pipelines",
        "--objective",
        "tiny.toml",
        "--space",
        "dense-ref.toml",
        "--budget",
        str(BUDGET_S),
        "--runs",
        "1",
        "--output",
        "out",
    )
    assert ran["status"] == 0, ran["err"]
    out = str(ran["out"])
    runs = pd.read_csv(tmp_path / "out" / "pipelines_runs.csv")
    assert list(runs["pipeline"]) == list(PIPELINES)
    assert runs["test_acc"].between(0.1, 1, inclusive="right").all()
    assert (runs["test_evaluations"] == 1).all(), runs  # the promotion's count, and the other two pipelines' own
    assert (runs["wall_s"] <= BUDGET_S + 30).all(), runs
    for pipeline in PIPELINES:
        assert f"{pipeline} seed 0: test accuracy" in out and "(test split evaluated 1 time(s))" in out
    summary = pd.read_csv(tmp_path / "out" / "pipelines.csv")
    assert list(summary["pipeline"]) == list(PIPELINES)
    assert (summary["test_acc_lo"] <= summary["test_acc"]).all() and (
        summary["test_acc"] <= summary["test_acc_hi"]
    ).all()
    client = local_client(tmp_path)
    experiment = client.get_experiment_by_name("bench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["atelier.kind"] == "bench-pipelines"
    assert set(PIPELINES) == {name.split("/")[0] for name in run.data.metrics}
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"pipelines.csv", "pipelines_runs.csv"}


def test_a_space_without_reference_is_refused_naming_the_fix() -> None:
    with pytest.raises(SetupError, match=r"space dense has no \[reference\].*add a \[reference\] table"):
        check_pipelines_request(PipelinesRequest(objective="digits"))


def test_no_runs_and_a_budget_below_the_minimum_are_refused(tmp_path: Path) -> None:
    space = str(_space_with_reference(tmp_path))
    with pytest.raises(SetupError, match=r"--runs 0 runs nothing; give at least 1"):
        check_pipelines_request(PipelinesRequest(objective="digits", space=space, runs=0))
    with pytest.raises(SetupError, match=r"--budget of 30 s .* give at least 1m"):
        check_pipelines_request(PipelinesRequest(objective="digits", space=space, budget=30))
    check_pipelines_request(PipelinesRequest(objective="digits", space=space, output=tmp_path / "out"))


def test_bad_input_exits_2_in_one_line_writing_nothing(tmp_path: Path) -> None:
    _space_with_reference(tmp_path)
    for flags, problem in (
        (("--space", "dense-ref.toml", "--runs", "0"), "--runs 0"),
        (("--space", "dense-ref.toml", "--budget", "30s"), "--budget of 30 s"),
        ((), "has no [reference]"),
    ):
        ran = atelier_case(tmp_path, "bench", "--pipelines", "--objective", "digits", "--output", "out", *flags)
        assert ran["status"] == 2, ran
        assert len(str(ran["err"]).strip().splitlines()) == 1 and problem in str(ran["err"]), ran["err"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlruns").exists()
