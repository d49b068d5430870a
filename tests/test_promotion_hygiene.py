"""Promotion that can be repeated and a terminal that stays quiet.

Two refit promotions of the same trial give the same test predictions; `atelier promote` and
`atelier predict` print only atelier's own lines unless asked for more (`--verbose`); the registered
model predicts without drawing anything.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

from search import cli

pytestmark = pytest.mark.e2e
ATELIER = str(Path(sys.executable).parent / "atelier")
OWN_LINES = ("baseline:", "evaluated once", "trial ", "test:", "gate ", "model:")  # what promote prints


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A digits study, its best trial promoted twice with --refit in fresh processes (as a user runs them)."""
    folder = tmp_path_factory.mktemp("hygiene")
    assert (
        cli.main(
            [
                "run",
                "--objective",
                "digits",
                "--trials",
                "2",
                "--max-epochs",
                "2",
                "--workers",
                "1",
                "--pruner",
                "none",
                "--quiet",
                "--store",
                str(folder / "mlruns"),
            ]
        )
        == 0
    )
    for name in ("first", "second"):
        done = subprocess.run(
            [ATELIER, "promote", "--trial", "0", "--refit", "--model-name", name],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        (folder / f"{name}.out").write_text(done.stdout)
        (folder / f"{name}.err").write_text(done.stderr)
    np.save(folder / "x.npy", (load_digits().images[:20, :, :, None] * 16).clip(0, 255).astype(np.uint8))
    yield folder


def test_two_promotions_of_a_trial_predict_the_same(promoted: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{promoted / 'mlruns' / 'mlflow.db'}")
    x = np.load(promoted / "x.npy")
    first = mlflow.pyfunc.load_model("models:/first/1").predict(x)
    second = mlflow.pyfunc.load_model("models:/second/1").predict(x)
    assert first.shape == (20, 10) and np.array_equal(first, second)


def test_promote_prints_only_its_own_lines(promoted: Path) -> None:
    for name in ("first", "second"):
        assert (promoted / f"{name}.err").read_text() == ""
        lines = (promoted / f"{name}.out").read_text().splitlines()
        assert lines and all(line.startswith(OWN_LINES) for line in lines), lines


def test_predict_prints_its_table_alone_and_verbose_shows_tensorflow(promoted: Path) -> None:
    quiet = subprocess.run(
        [ATELIER, "predict", "--model", "models:/first@champion", "--input", "x.npy", "--format", "csv"],
        cwd=promoted,
        capture_output=True,
        text=True,
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert quiet.stdout.splitlines()[0] == "image,label,class,probability" and len(quiet.stdout.splitlines()) == 21
    verbose = subprocess.run(
        [ATELIER, "predict", "--model", "models:/first@champion", "--input", "x.npy", "--format", "csv", "--verbose"],
        cwd=promoted,
        capture_output=True,
        text=True,
    )
    assert verbose.returncode == 0 and verbose.stdout == quiet.stdout
    assert "tensorflow" in verbose.stderr.lower() or "cpu_feature_guard" in verbose.stderr, verbose.stderr


def test_the_registered_model_predicts_silently(promoted: Path) -> None:
    code = (
        "import mlflow, numpy as np; mlflow.set_tracking_uri('sqlite:///mlruns/mlflow.db'); "
        "m = mlflow.pyfunc.load_model('models:/first@champion'); m.predict(np.load('x.npy')); "
        "m.predict(np.load('x.npy')[:3])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=promoted, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # no progress bar, no step counts
