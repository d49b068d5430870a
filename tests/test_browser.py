"""The MLflow UI in a real browser: `atelier ui` serving a small real study, read by headless Chromium.

The first test reads what `atelier ui` prints and binds, without the browser.

Each browser test saves a screenshot of where it ended (also when it fails) into test-artifacts/.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from background import Background
from browser import (
    AtelierUI,
    artifact_names,
    atelier_ui,
    metric_chart,
    open_tab,
    open_ui,
    plotly_plots_in_preview,
    preview_artifact,
    run_page_field,
    run_page_tag,
    runs_table,
    set_columns,
    visible,
)
from mlflow import MlflowClient
from mlflow.entities import Run
from selenium.webdriver.chrome.webdriver import WebDriver
from stores import atelier_in

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TRIALS = 3
RUN_NAME, STATE = "attributes.`Run Name`", "tags.`atelier.state`"
BEST_VAL_LOSS = "metrics.`best_val_loss`"
PLOTS = ("optimization_history", "intermediate_values", "param_importances", "parallel_coordinate", "slice")
REPORT = (*(f"{plot}.png" for plot in PLOTS), "report.html", "trials.csv", "best_trial.json")

pytestmark = pytest.mark.e2e  # a real search, `atelier ui` serving it, Chromium reading it


@dataclass(frozen=True)
class Study:
    """A finished study in a local store, and its trial runs as MLflow holds them."""

    store: Path
    experiment_id: str
    trials: dict[str, Run]  # by run id
    client: MlflowClient


def search_for_the_browser(folder: Path) -> dict[str, str]:
    """`atelier run` on the digits: three short trials on one worker. Run in the background (conftest.BACKGROUND).

    No pruner: every trial completes, so the report always holds every plot (importances need two).
    """
    return {
        "run": atelier_in(
            folder,
            "run",
            "--objective",
            "digits",
            "--trials",
            TRIALS,
            "--max-epochs",
            "3",
            "--pruner",
            "none",
            "--workers",
            "1",
            "--quiet",
            "--store",
            folder / "mlruns",
        )
    }


@pytest.fixture(scope="module")
def browser_store(background: Background) -> Path:
    """The store `search_for_the_browser` made."""
    return background.result("browser_store").folder / "mlruns"


@pytest.fixture(scope="module")
def study(browser_store: Path) -> Study:
    """The study in `browser_store`, and its trial runs."""
    store = browser_store
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-dense")
    runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'")
    return Study(store, experiment.experiment_id, {run.info.run_id: run for run in runs}, client)


@pytest.fixture(scope="module")
def ui(study: Study) -> Iterator[AtelierUI]:
    """`atelier ui` on the study's store."""
    with atelier_ui(study.store) as served:
        yield served


@pytest.fixture
def page(browser: WebDriver, request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    """The browser; once the test is over, a screenshot of its page in test-artifacts/TEST.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    yield browser
    browser.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))


def test_ui_serves_the_store_on_loopback_and_links_the_runs_table(ui: AtelierUI, study: Study) -> None:
    """Without a browser: the line `atelier ui` prints first, the tracking API behind it, the address it binds."""
    assert ui.first_line.startswith(f"MLflow UI at {ui.url}")
    assert ui.first_line.endswith(f"; trials at {ui.runs_page}")
    with urllib.request.urlopen(
        f"{ui.url}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=digits-dense", timeout=30
    ) as response:
        experiment = json.load(response)["experiment"]
    assert experiment["experiment_id"] == study.experiment_id == "1"
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{ui.port}"], capture_output=True, text=True).stdout
    assert {line.split()[3] for line in listening.splitlines()} == {f"127.0.0.1:{ui.port}"}


def test_runs_table_lists_every_trial_with_its_state(page: WebDriver, ui: AtelierUI, study: Study) -> None:
    # The runs page, best first: sorted by the study's metric, ascending as val_loss is minimised.
    assert ui.runs_page == (
        f"{ui.url}/#/experiments/{study.experiment_id}/runs?orderByKey=metrics.%60best_val_loss%60&orderByAsc=true"
    )
    open_ui(page, ui, ui.runs_page)
    set_columns(page, show=("atelier.state", "best_val_loss"), hide=("Dataset", "Source", "Models"))
    rows = runs_table(page, (RUN_NAME, STATE), study.trials)
    listed = {rows[run_id][RUN_NAME]: rows[run_id][STATE] for run_id in study.trials}
    assert listed == {run.info.run_name: run.data.tags["atelier.state"] for run in study.trials.values()}
    assert sorted(listed) == [f"trial-{number:04d}" for number in range(TRIALS)]


def test_trials_are_grouped_under_their_study_run_with_state_and_metric(
    page: WebDriver, ui: AtelierUI, study: Study
) -> None:
    """What a person sees in the table MLflow nests (sorted by creation): the study run, its trials under it."""
    parent = study.client.search_runs([study.experiment_id], "tags.`atelier.kind` = 'study'")[0].info.run_id
    assert {run.data.tags["mlflow.parentRunId"] for run in study.trials.values()} == {parent}
    open_ui(page, ui, f"{ui.runs_page.partition('?')[0]}?orderByKey=attributes.start_time&orderByAsc=false")
    set_columns(page, show=("atelier.state", "best_val_loss"), hide=("Dataset", "Source", "Models"))
    folded = runs_table(page, (RUN_NAME,), [parent])
    assert folded[parent][RUN_NAME].endswith("study-report") and not set(folded) & set(study.trials)
    visible(page, f"//*[@row-id='{parent}']//*[@col-id='{RUN_NAME}']//button").click()  # the row's expander
    rows = runs_table(page, (RUN_NAME, STATE, BEST_VAL_LOSS), study.trials)
    for run_id, run in study.trials.items():
        assert rows[run_id][RUN_NAME].endswith(run.info.run_name)
        assert rows[run_id][STATE] == run.data.tags["atelier.state"]
        assert float(rows[run_id][BEST_VAL_LOSS]) == pytest.approx(run.data.metrics["best_val_loss"], abs=1e-3)


def test_trial_pages_show_status_state_and_val_loss_chart(page: WebDriver, ui: AtelierUI, study: Study) -> None:
    for run_id, run in sorted(study.trials.items(), key=lambda item: item[1].info.run_name, reverse=True):
        open_ui(page, ui, f"{ui.url}/#/experiments/{study.experiment_id}/runs/{run_id}")
        assert run_page_field(page, "Status") == run.info.status.title()  # FINISHED shows as Finished
        assert run_page_tag(page, "atelier.state") == run.data.tags["atelier.state"]
    open_tab(page, "Model metrics")  # of trial-0000, the last opened
    history = study.client.get_metric_history(run_id, "val_loss")
    traces = metric_chart(page, "val_loss")
    assert {trace["name"] for trace in traces} == {"trial-0000"}
    for trace in traces:
        assert trace["x"] == [point.step for point in history]  # one point per epoch, at step = epoch
        assert trace["y"] == pytest.approx([point.value for point in history])


def test_study_report_run_holds_the_report(page: WebDriver, ui: AtelierUI) -> None:
    open_ui(page, ui, ui.runs_page)
    visible(page, "//a[normalize-space()='study-report']").click()
    assert run_page_tag(page, "atelier.kind") == "study"
    open_tab(page, "Artifacts")
    assert set(REPORT) <= set(artifact_names(page, len(REPORT)))
    preview_artifact(page, "optimization_history.png")
    page.save_screenshot(str(ARTIFACTS / "study-report-optimization-history.png"))
    preview_artifact(page, "report.html")
    assert plotly_plots_in_preview(page, len(PLOTS)) == len(PLOTS)  # plotly.js embedded: drawn offline
