"""A real browser for tests: headless Chromium driven by Selenium, `atelier ui` as a process, MLflow UI pages.

Debian's `chromium` and `chromium-driver` packages only (`.ci/run` installs them): nothing is downloaded.
The page helpers wait for what they need with WebDriverWait, never for a fixed time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from servers import _stop_group, _tail, _wait_healthy, free_port

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1600, 1000
WAIT_S = 30  # a page of the MLflow UI on a busy 2-core machine: a few seconds
ATELIER = Path(sys.executable).with_name("atelier")
HTML_PREVIEW = "//iframe[contains(@class, 'mlflow-html-iframe')]"  # an HTML artifact's preview
# Set in the browser before the UI loads: MLflow 3's assistant panel opens itself on a local server's first
# visit and covers a third of the page.
QUIET_UI = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false"}


def chromium_missing() -> str | None:
    """Why `chromium()` cannot run here, or None when it can."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    return f"{' and '.join(absent)} missing: apt-get install chromium chromium-driver" if absent else None


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """Headless Chromium under Selenium, its page WIDTH x HEIGHT CSS pixels; quit on exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        f"--window-size={WIDTH},{HEIGHT}",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        # The window size counts the browser's frame even headless; this makes the page itself that size.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        yield driver
    finally:
        driver.quit()


@dataclass(frozen=True)
class AtelierUI:
    """A running `atelier ui`: its root address, its port, the first line it printed and the runs page in it."""

    url: str
    port: int
    first_line: str
    runs_page: str


@contextmanager
def atelier_ui(store: Path) -> Iterator[AtelierUI]:
    """Run `atelier ui --store STORE` on a free loopback port until exit; yields once it answers.

    One uvicorn worker and no job runner: a test browses with one tab, and each extra process costs
    seconds of start-up on a 2-core machine.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_WORKERS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with tempfile.NamedTemporaryFile(prefix="atelier-ui-", suffix=".log") as log:
        proc = subprocess.Popen(
            [str(ATELIER), "ui", "--store", str(store), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            _wait_healthy(proc, url, Path(log.name))
            first_line = Path(log.name).read_text().partition("\n")[0]
            yield AtelierUI(url, port, first_line, _printed_runs_page(Path(log.name)))
        finally:
            _stop_group(proc)


def _printed_runs_page(log: Path) -> str:
    """The address after 'trials at' in the first line `atelier ui` printed."""
    first = log.read_text().partition("\n")[0]
    _, found, page = first.partition("; trials at ")
    if not found:
        raise RuntimeError(f"atelier ui did not print its trials address:\n{_tail(log)}")
    return page.strip()


def wait(driver: WebDriver, timeout: float = WAIT_S) -> WebDriverWait:
    """A WebDriverWait on `driver` that ignores elements replaced while React re-renders."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def visible(driver: WebDriver, xpath: str) -> WebElement:
    """The first element matching `xpath` once it is displayed."""
    return wait(driver).until(
        lambda _: next((e for e in driver.find_elements(By.XPATH, xpath) if e.is_displayed()), False),
        f"nothing displayed matches {xpath}",
    )


def open_ui(driver: WebDriver, ui: AtelierUI, page: str) -> None:
    """Load `page` of the UI in a fresh document, the assistant panel kept shut."""
    driver.get(f"{ui.url}/health")  # same origin, so its localStorage is the UI's
    for key, value in QUIET_UI.items():
        driver.execute_script("localStorage.setItem(arguments[0], arguments[1])", key, value)
    driver.get(page)


def set_columns(driver: WebDriver, show: tuple[str, ...] = (), hide: tuple[str, ...] = ()) -> None:
    """Tick `show` and untick `hide` in the runs table's Columns menu (metric, param, tag or attribute names).

    The menu lists the metrics, params and tags of the runs loaded when it opens, so it waits for a row first.
    """
    visible(driver, "//*[@role='row'][@row-id]")
    visible(driver, "//button[normalize-space()='Columns']").click()
    search = visible(driver, "//input[@placeholder='Search columns']")
    for name, wanted in [(name, True) for name in show] + [(name, False) for name in hide]:
        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(name)
        node = visible(
            driver,
            "//div[@data-testid='column-selector-tree']//div[contains(@class, 'tree-treenode')]"
            f"[.//span[contains(@class, 'node-content-wrapper')][normalize-space()='{name}']]",
        )
        if ("checkbox-checked" in node.get_attribute("class")) != wanted:
            node.find_element(By.XPATH, ".//span[contains(@class, 'node-content-wrapper')]").click()
        wait(driver).until(
            lambda _, node=node, wanted=wanted: ("checkbox-checked" in node.get_attribute("class")) == wanted,
            f"column {name} did not {'appear' if wanted else 'go'}",
        )
    search.send_keys(Keys.ESCAPE)
    wait(driver).until(
        lambda _: not driver.find_elements(By.XPATH, "//input[@placeholder='Search columns']"),
        "the Columns menu did not close",
    )


def runs_table(
    driver: WebDriver, columns: tuple[str, ...], run_ids: Collection[str] | None = None
) -> dict[str, dict[str, str]]:
    """The runs table's rows by run id, once `run_ids`' rows (default: every row, one at least) show `columns`.

    Columns are the grid's ids, as "tags.`atelier.state`"; a cell's text is its link's when it has one
    (the Run Name cell holds a colour swatch too). A row is split over the grid's pinned and scrolling
    parts; both carry the run id.
    """
    script = """
        const rows = {};
        for (const cell of document.querySelectorAll('[role=row][row-id] [role=gridcell][col-id]')) {
            const id = cell.closest('[row-id]').getAttribute('row-id');
            const link = cell.querySelector('a');
            (rows[id] = rows[id] || {})[cell.getAttribute('col-id')] = (link || cell).innerText.trim();
        }
        return rows;"""

    def complete(_: WebDriver) -> dict[str, dict[str, str]] | bool:
        rows = driver.execute_script(script)
        wanted = rows if run_ids is None else run_ids
        return rows if rows and all(rows.get(run, {}).get(column) for run in wanted for column in columns) else False

    return wait(driver).until(
        complete, f"the runs table never showed {columns} in {'every row' if run_ids is None else sorted(run_ids)}"
    )


def run_page_field(driver: WebDriver, name: str) -> str:
    """A value of the run page's 'About this run' box (Status, Run ID, Duration...)."""
    field = visible(driver, f"//*[@data-testid='key-value-{name}']")
    return wait(driver).until(lambda _: field.text.removeprefix(name).strip(), f"no {name} on the run page")


def run_page_tag(driver: WebDriver, key: str) -> str:
    """A tag's value as the run page's Tags list shows it."""
    tag = visible(driver, f"//*[@role='status'][@title='{key}']")
    return tag.text.removeprefix(key).lstrip().removeprefix(":").strip()  # shown as "key: value"


def open_tab(driver: WebDriver, name: str) -> None:
    """Click a run page's tab (Overview, Model metrics, Artifacts...)."""
    visible(driver, f"//*[@role='tab'][normalize-space()='{name}']").click()


def metric_chart(driver: WebDriver, metric: str) -> list[dict[str, Any]]:
    """On a run's "Model metrics" tab: the traces ({name, x, y}) drawn in `metric`'s chart, once drawn.

    MLflow 3.17 draws each run as two traces: a line with markers, and a plain line that takes no hover.
    """
    search = visible(driver, "//input[@placeholder='Search metric charts']")
    search.send_keys(metric)  # charts below the fold are drawn lazily; filtering brings this one up
    card = visible(driver, f"//*[@data-testid='experiment-view-compare-runs-card'][.//h4[@title='{metric}']]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
    script = """
        const plot = arguments[0].querySelector('.js-plotly-plot');
        return plot && plot.data && plot.data.length
            ? plot.data.map(t => ({x: Array.from(t.x || []), y: Array.from(t.y || []), name: t.name})) : null;"""
    return wait(driver).until(lambda _: driver.execute_script(script, card), f"the {metric} chart was never drawn")


def artifact_names(driver: WebDriver, expected: int = 1) -> list[str]:
    """The file names in a run's Artifacts tab (top level), once at least `expected` are listed."""
    script = """return Array.from(document.querySelectorAll('[data-testid=artifact-tree-node]'),
                                  n => n.getAttribute('artifact-name'));"""
    return wait(driver).until(
        lambda _: (names := driver.execute_script(script)) and len(names) >= expected and names,
        "the artifact list never filled",
    )


def preview_artifact(driver: WebDriver, name: str) -> None:
    """Select an artifact and wait until its preview is shown: an image loaded, or an HTML page's frame."""
    visible(driver, f"//*[@data-testid='artifact-tree-node'][@artifact-name='{name}']").click()
    if name.endswith(".png"):
        image = visible(driver, f"//img[@alt='{name}']")
        loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
        wait(driver).until(lambda _: driver.execute_script(loaded, image), f"{name} never loaded")
    else:
        visible(driver, HTML_PREVIEW)


def plotly_plots_in_preview(driver: WebDriver, expected: int) -> int:
    """How many plotly plots the HTML preview's page has drawn, once it has drawn `expected`; the first in view.

    MLflow shows an HTML artifact in a sandboxed frame that runs scripts, so only a page that embeds
    plotly.js renders offline.
    """
    driver.switch_to.frame(visible(driver, HTML_PREVIEW))
    try:
        count = (
            "return Array.from(document.querySelectorAll('.js-plotly-plot'), p => p.querySelector('.main-svg'))"
            ".filter(Boolean).length"
        )
        drawn = wait(driver).until(
            lambda _: (n := driver.execute_script(count)) >= expected and n,
            f"the preview never drew {expected} plotly plots",
        )
        driver.execute_script("document.querySelector('.js-plotly-plot').scrollIntoView()")
        return drawn
    finally:
        driver.switch_to.default_content()
