"""Shared fixtures: real data folders, a temporary store, the command line in-process, PostgreSQL, Chromium,
the shared digits store, and the fixtures made in the background (tests/background.py)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from background import Background, Prepared  # noqa: E402
from browser import chromium, chromium_missing  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from servers import PostgresServer, postgres_missing, postgres_server  # noqa: E402
from stores import digits_searches  # noqa: E402

from search import cli  # noqa: E402
from search.data import IDX_PLACES  # noqa: E402

FASHION_DIR = IDX_PLACES[0]
# Fixtures made in the background by another interpreter calling "MODULE:FUNCTION"(folder) for each, one after
# another from the session's start, when a selected test uses them (tests/background.py); listed in the
# order the tests that read them run (see pytest_collection_modifyitems).
BACKGROUND = {
    "bench_run": "test_bench:run_bench",
    "browser_store": "test_browser:search_for_the_browser",
    "shared_study": "test_distributed:share_one_study",
    "folder_searches": "test_folder_e2e:search_folders",
    "hypermodel_searches": "test_hypermodel:search_and_promote_hypermodels",
    "promotion_store": "test_promote:promote_studies",
    "parts_promotion": "test_promote:search_and_promote_with_a_loader",
    "hygiene": "test_promotion_hygiene:promote_twice_and_predict",
    "search_cases": "test_search:run_search_cases",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules whose tests read a background fixture run last, in their order, so it is made meanwhile."""
    waiting = {item.module for item in items if set(item.fixturenames) & set(BACKGROUND)}
    items.sort(key=lambda item: item.module in waiting)  # stable: the order within each group is kept


@pytest.fixture(scope="session", autouse=True)
def background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """Start making the background fixtures that the selected tests use; kill what runs on at the session's end."""
    used = {name for item in request.session.items for name in item.fixturenames}
    jobs = {name: (function, tmp_path_factory.mktemp(name)) for name, function in BACKGROUND.items() if name in used}
    started = Background(jobs, tmp_path_factory.mktemp("background"))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Debian's real Fashion-MNIST files (the Makefile and .ci/run install them)."""
    assert (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(), (
        "install Debian's dataset-fashion-mnist (make test does it)"
    )
    return FASHION_DIR


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, like a user's fresh project; mlruns/ is made here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def atelier(capsys: pytest.CaptureFixture[str]):
    """Run `atelier ARGS...` in-process; returns (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        status = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Real searches on the digits, shared by test_search, test_study_report and test_warm_start, which only
    read them: the folder `stores.digits_searches` made, and what each search printed.

    Made here, not in the background: the background interpreter is the longer of the suite's two paths.
    """
    folder = tmp_path_factory.mktemp("digits_store")
    return Prepared(folder, digits_searches(folder))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL cluster for the session (password auth on 127.0.0.1)."""
    _require(postgres_missing(), "postgresql")
    # Not tmp_path_factory: as root the cluster runs as `postgres`, which cannot enter
    # /tmp/pytest-of-root (mode 700).
    with tempfile.TemporaryDirectory(prefix="atelier-pg-") as folder, postgres_server(Path(folder)) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """Debian's Chromium, headless under Selenium, for the session."""
    _require(chromium_missing(), "chromium and chromium-driver")
    with chromium() as driver:
        yield driver


def _require(missing: str | None, packages: str) -> None:
    """Skip locally when a system component is missing (`missing` says why); fail under CI, which installs it."""
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (.ci/run must install {packages})", pytrace=False)
        pytest.skip(missing)
