"""Shared fixtures: real data folders, a temporary store, and the command line in-process."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from search import cli  # noqa: E402
from search.data import IDX_PLACES  # noqa: E402

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
