"""Shared fixtures: real data folders, a temporary store, the command line in-process, PostgreSQL, Chromium."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402

from browser import chromium, chromium_missing  # noqa: E402
from search import cli  # noqa: E402
from search.data import IDX_PLACES  # noqa: E402
from servers import PostgresServer, postgres_missing, postgres_server  # noqa: E402

FASHION_DIR = IDX_PLACES[0]


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Debian's real Fashion-MNIST files (the Makefile and .ci/run install them)."""
    assert (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(), \
        "install Debian's dataset-fashion-mnist (make test does it)"
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
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL cluster for the session (password auth on 127.0.0.1)."""
    _require(postgres_missing(), "postgresql")
    # Not tmp_path_factory: as root the cluster runs as `postgres`, which cannot enter
    # /tmp/pytest-of-root (mode 700).
    with tempfile.TemporaryDirectory(prefix="atelier-pg-") as folder, \
            postgres_server(Path(folder)) as server:
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
