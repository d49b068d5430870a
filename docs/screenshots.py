"""The README's screenshots of the MLflow UI: the newest study's trials, and its study report.

    .venv/bin/python docs/screenshots.py [--store mlruns] [--plot optimization_history.png]

Serves the store with `atelier ui` on a free port, opens it in Debian's headless Chromium (the test
suite's tests/browser.py: apt-get install chromium chromium-driver) and writes docs/trials.png (the
study's run with its trial runs under it, their state and summary metrics) and
docs/study-report.png (the study-report run's artifacts, one plot shown).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

from browser import (  # noqa: E402
    AtelierUI,
    atelier_ui,
    chromium,
    chromium_missing,
    open_tab,
    open_ui,
    preview_artifact,
    set_columns,
    visible,
)
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402

REPORT_FILTER = "tags.`atelier.kind` = 'study'"
GROUPED_VIEW = {"orderByKey": "attributes.start_time", "orderByAsc": "false"}  # MLflow nests runs only so sorted
COLUMNS = ("atelier.state", "best_val_accuracy", "best_val_loss", "epochs", "n_params", "trial_seconds")
UNUSED_COLUMNS = ("Dataset", "Source", "Models")  # MLflow's defaults; the datasets fill half the width


def main(argv: Sequence[str] | None = None) -> int:
    """Write the two screenshots; exit status 2 with one line when the store or Chromium is missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("mlruns"), help="local store folder holding a study")
    parser.add_argument("--plot", default="optimization_history.png", help="the study report's plot to show")
    parser.add_argument("--output", type=Path, default=DOCS, help="folder for trials.png and study-report.png")
    args = parser.parse_args(argv)
    missing = chromium_missing() or (
        None
        if (args.store / "mlflow.db").is_file()
        else f"no MLflow store in {args.store}: run a study first (make search)"
    )
    if missing:
        print(f"screenshots: {missing}", file=sys.stderr)
        return 2
    with atelier_ui(args.store) as ui, chromium() as driver:
        trials(driver, ui, args.output / "trials.png")
        study_report(driver, ui, args.plot, args.output / "study-report.png")
    return 0


def trials(driver: WebDriver, ui: AtelierUI, path: Path) -> None:
    """The newest study's run with its trial runs unfolded under it, their states and summary metrics."""
    open_ui(driver, ui, f"{ui.runs_page.partition('?')[0]}?{urlencode(GROUPED_VIEW)}")
    set_columns(driver, show=COLUMNS, hide=UNUSED_COLUMNS)
    visible(
        driver, "//*[@row-id][.//a[normalize-space()='study-report']]//*[@col-id='attributes.`Run Name`']//button"
    ).click()
    visible(driver, "//*[@role='gridcell'][@col-id='tags.`atelier.state`'][normalize-space()='COMPLETE']")
    _shoot(driver, path)


def study_report(driver: WebDriver, ui: AtelierUI, plot: str, path: Path) -> None:
    """The newest study's study-report run, on its Artifacts tab with `plot` previewed."""
    # With no query, MLflow restores the table's last filter (kept per experiment in the browser's storage).
    open_ui(driver, ui, f"{ui.runs_page}?{urlencode({'searchFilter': REPORT_FILTER})}")
    visible(driver, "//a[normalize-space()='study-report']").click()
    open_tab(driver, "Artifacts")
    preview_artifact(driver, plot)
    _shoot(driver, path)


def _shoot(driver: WebDriver, path: Path) -> None:
    """Save the page as PNG, nothing focused or hovered (a focused control is outlined, a hovered row grows icons)."""
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    pointer = ActionBuilder(driver)
    pointer.pointer_action.move_to_location(0, 0)
    pointer.perform()
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    print(path)


if __name__ == "__main__":
    sys.exit(main())
