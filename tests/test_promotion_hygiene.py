"""Promotion that can be repeated and a terminal that stays quiet.

Two refit promotions of the same trial give the same test predictions; `atelier promote` and
`atelier predict` print only atelier's own lines unless asked for more (`--verbose`); the registered
model predicts without drawing anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from background import Background, Prepared
from sklearn.datasets import load_digits
from stores import atelier_case

pytestmark = pytest.mark.e2e
ATELIER = str(Path(sys.executable).parent / "atelier")
OWN_LINES = ("baseline:", "evaluated once", "trial ", "test:", "gate ", "model:")  # what promote prints
SERVED = (  # the registered model loaded and used as MLflow serves it, twice
    "import mlflow, numpy as np; mlflow.set_tracking_uri('sqlite:///mlruns/mlflow.db'); "
    "m = mlflow.pyfunc.load_model('models:/first@champion'); m.predict(np.load('x.npy')); "
    "m.predict(np.load('x.npy')[:3])"
)


def promote_twice_and_predict(folder: Path) -> dict[str, dict[str, object]]:
    """A digits study, its best trial promoted twice with --refit, then labels asked of the champion, each
    command in a fresh process (as a user runs them); what each printed, by name.

    Run in the background (conftest.BACKGROUND).
    """
    search = ("run", "--objective", "digits", "--trials", 2, "--max-epochs", 2, "--workers", 1, "--pruner", "none")
    ran = {"run": atelier_case(folder, *search, "--quiet")}
    np.save(folder / "x.npy", (load_digits().images[:20, :, :, None] * 16).clip(0, 255).astype(np.uint8))
    predict = ("predict", "--model", "models:/first@champion", "--input", "x.npy", "--format", "csv")
    commands = {
        "first": [ATELIER, "promote", "--trial", "0", "--refit", "--model-name", "first"],
        "second": [ATELIER, "promote", "--trial", "0", "--refit", "--model-name", "second"],
        "quiet": [ATELIER, *predict],
        "verbose": [ATELIER, *predict, "--verbose"],
        "served": [sys.executable, "-c", SERVED],
    }
    for name, command in commands.items():
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        ran[name] = {"status": done.returncode, "out": done.stdout, "err": done.stderr}
    return ran


@pytest.fixture(scope="module")
def hygiene(background: Background) -> Prepared:
    return background.result("hygiene")


@pytest.fixture(scope="module")
def promoted(hygiene: Prepared) -> Path:
    """The folder `promote_twice_and_predict` searched and promoted in; both promotions succeeded."""
    for name in ("run", "first", "second"):
        assert hygiene.printed[name]["status"] == 0, hygiene.printed[name]["err"]
    return hygiene.folder


def test_two_promotions_of_a_trial_predict_the_same(promoted: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{promoted / 'mlruns' / 'mlflow.db'}")
    x = np.load(promoted / "x.npy")
    first = mlflow.pyfunc.load_model("models:/first/1").predict(x)
    second = mlflow.pyfunc.load_model("models:/second/1").predict(x)
    assert first.shape == (20, 10) and np.array_equal(first, second)


def test_promote_prints_only_its_own_lines(hygiene: Prepared, promoted: Path) -> None:
    for name in ("first", "second"):
        assert hygiene.printed[name]["err"] == ""
        lines = hygiene.printed[name]["out"].splitlines()
        assert lines and all(line.startswith(OWN_LINES) for line in lines), lines


def test_predict_prints_its_table_alone_and_verbose_shows_tensorflow(hygiene: Prepared, promoted: Path) -> None:
    quiet, verbose = hygiene.printed["quiet"], hygiene.printed["verbose"]
    assert quiet["status"] == 0 and quiet["err"] == "", quiet["err"]
    assert quiet["out"].splitlines()[0] == "image,label,class,probability" and len(quiet["out"].splitlines()) == 21
    assert verbose["status"] == 0 and verbose["out"] == quiet["out"]
    assert "tensorflow" in verbose["err"].lower() or "cpu_feature_guard" in verbose["err"], verbose["err"]


def test_the_registered_model_predicts_silently(hygiene: Prepared, promoted: Path) -> None:
    served = hygiene.printed["served"]
    assert served["status"] == 0, served["err"]
    assert served["out"] == ""  # no progress bar, no step counts
