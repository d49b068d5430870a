"""What the tests open in a working folder after `atelier run`: its Optuna journal study, its MLflow store."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import optuna
from mlflow import MlflowClient

from search import cli


def journal_storage(workdir: Path) -> optuna.storages.JournalStorage:
    """The folder's default Optuna store, mlruns/optuna.journal."""
    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "mlruns" / "optuna.journal"))
    )


def journal_study(workdir: Path, name: str) -> optuna.Study:
    """The study `name` in the folder's default Optuna store, mlruns/optuna.journal."""
    return optuna.load_study(study_name=name, storage=journal_storage(workdir))


def local_client(workdir: Path) -> MlflowClient:
    """An MLflow client on the folder's default tracking store, mlruns/mlflow.db."""
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def atelier_case(folder: Path, *args: object) -> dict[str, object]:
    """Run `atelier ARGS...` in-process in `folder`, whatever its end: its exit status, stdout and stderr."""
    before, out, err = Path.cwd(), io.StringIO(), io.StringIO()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main([str(arg) for arg in args])
    finally:
        os.chdir(before)
    return {"status": status, "out": out.getvalue(), "err": err.getvalue()}


def atelier_in(folder: Path, *args: object) -> str:
    """Run `atelier ARGS...` in-process with `folder` as the working folder; assert it exits 0; its stdout.

    For module- and session-scoped fixtures, which cannot use the function-scoped `workdir` and `atelier`.
    """
    before, printed = Path.cwd(), io.StringIO()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            status = cli.main([str(arg) for arg in args])
    finally:
        os.chdir(before)
    assert status == 0, f"atelier {' '.join(map(str, args))} exited {status}:\n{printed.getvalue()[-2000:]}"
    return printed.getvalue()


def digits_searches(folder: Path) -> dict[str, str]:
    """The shared digits store (conftest's `digits_store`), made in `folder`; what each search printed.

    `second` first (2 random trials of up to 3 epochs: the store's first study, so it holds the data
    report); then `digits-dense`, TPE and Hyperband pruning (fewer trials pruned than by the default, so the
    report has importances) with up to 4 epochs: 6 trials ("first"), resumed to 8 ("resume", not quiet),
    then run once more with the target met ("again").
    """
    search = ("run", "--objective", "digits", "--workers", "1", "--pruner", "hyperband")
    printed = {
        "second": atelier_in(
            folder, *search, "--study", "second", "--trials", 2, "--max-epochs", 3, "--sampler", "random", "--quiet"
        )
    }
    printed["first"] = atelier_in(folder, *search, "--trials", 6, "--max-epochs", 4, "--quiet")
    printed["resume"] = atelier_in(folder, *search, "--trials", 8, "--max-epochs", 4)
    printed["again"] = atelier_in(folder, *search, "--trials", 8, "--max-epochs", 4)
    return printed
