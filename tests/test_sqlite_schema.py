"""New local MLflow stores start from a cached empty schema: the same store MLflow makes, without its migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from search.record.sqlite_schema import prepare_new_store
from search.record.tracking import Tracker


def _schema(path: Path) -> tuple[dict[str, list[str]], list[tuple[str]]]:
    """The tables and indexes of a sqlite database, each its SQL's clauses sorted (MLflow's own migrations
    list a table's constraints in varying order from one store to the next), and its Alembic revision."""
    with sqlite3.connect(path) as db:
        objects = db.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        revision = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return {
        name: sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()) for name, sql in objects
    }, revision


def test_a_new_store_is_the_schema_mlflow_makes_with_its_own_default_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    by_mlflow = tmp_path / "by-mlflow" / "mlflow.db"
    MlflowClient(f"sqlite:///{by_mlflow}").search_experiments()
    first, second = tmp_path / "first" / "mlflow.db", tmp_path / "second" / "mlflow.db"
    Tracker(f"sqlite:///{first}").experiment("one", {})
    [template] = (tmp_path / "cache" / "atelier").iterdir()
    assert template.name.endswith("-schema.db")
    with sqlite3.connect(template) as db:
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    tracker = Tracker(f"sqlite:///{second}")
    assert _schema(second) == _schema(first) == _schema(by_mlflow)
    experiment_id = tracker.experiment("two", {})
    run = tracker.client.create_run(experiment_id)
    tracker.client.log_metric(run.info.run_id, "val_accuracy", 0.5)
    assert tracker.client.get_run(run.info.run_id).data.metrics == {"val_accuracy": 0.5}
    default = tracker.client.get_experiment("0")
    expected = MlflowClient(f"sqlite:///{by_mlflow}").get_experiment("0")
    assert (default.name, default.artifact_location) == ("Default", expected.artifact_location)


def test_an_existing_store_is_left_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = tmp_path / "mlflow.db"
    Tracker(f"sqlite:///{store}").experiment("kept", {})
    before = store.read_bytes()
    prepare_new_store(store)
    assert store.read_bytes() == before


def test_without_a_writable_cache_mlflow_makes_the_store_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    tracker = Tracker(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    assert tracker.client.get_experiment(tracker.experiment("made", {})).name == "made"
    assert [path.name for path in (tmp_path / "store").iterdir()] == ["mlflow.db"]
