"""New local MLflow stores start from a cached empty copy of MLflow's schema, not from its migrations.

MLflow makes a new sqlite tracking store by running every schema migration since its first: about
2.6 s of CPU here, paid by every new store (a user's first search in a folder, every test that makes
one). The first store made with an MLflow version leaves an empty copy of its schema in the user's
cache (`$XDG_CACHE_HOME/atelier`, else `~/.cache/atelier`), without MLflow's Default experiment, whose
artifact location was fixed when it was made; MLflow adds it back, located as for a store it makes
itself, when it first opens the copy. Where the cache cannot be written, MLflow makes stores itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

DEFAULT_EXPERIMENT_ID = 0


def prepare_new_store(path: Path) -> None:
    """Give the sqlite tracking store at `path`, if it does not exist yet, MLflow's schema from the cache."""
    if path.exists():
        return
    template = _template()
    if template is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(template, partial)
        with contextlib.suppress(FileExistsError):  # another process made the store meanwhile: theirs stands
            os.link(partial, path)
    except OSError:
        return  # MLflow makes the store itself
    finally:
        partial.unlink(missing_ok=True)


def _template() -> Path | None:
    """The cached empty schema of this MLflow version, made on first use; None where it cannot be made."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "atelier"
    template = cache / f"mlflow-{mlflow.__version__}-schema.db"
    if template.is_file():
        return template
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as folder:
            made = Path(folder) / "schema.db"
            MlflowClient(f"sqlite:///{made}").search_experiments()  # MLflow runs its migrations
            with contextlib.closing(sqlite3.connect(made)) as db, db:
                db.execute("DELETE FROM experiment_tags WHERE experiment_id = ?", (DEFAULT_EXPERIMENT_ID,))
                db.execute("DELETE FROM experiments WHERE experiment_id = ?", (DEFAULT_EXPERIMENT_ID,))
            os.replace(made, template)  # whole or not at all, whoever else makes it at the same time
    except (OSError, sqlite3.Error):
        return None
    return template
