"""Where a search keeps its records: an Optuna storage and an MLflow tracking URI."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import optuna
import requests
from mlflow.exceptions import MlflowException
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from requests.exceptions import RequestException
from sqlalchemy import create_engine, event
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from search.errors import SetupError
from search.paths import check_name
from search.secrets import redact
from search.tracking import check_tracking_uri, sqlite_database

JOURNAL_FILE = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120  # a trial silent for GRACE_SECONDS is an orphan
RECONNECT_SECONDS = 120  # how long a lost database connection is retried before the search stops
TRACKING_CHECK_SECONDS = 10
SCHEMA_ATTEMPTS = 3  # two machines opening a new database race to make its tables


@dataclass(frozen=True)
class Store:
    """Where a search keeps its records: an Optuna storage and an MLflow tracking URI."""

    folder: Path
    storage_url: str | None = None
    tracking_uri: str | None = None

    @property
    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.folder / 'mlflow.db').resolve()}"

    def storage(self) -> BaseStorage:
        """The Optuna storage: a journal file that several local processes can share, by default."""
        url = self.storage_url
        if url is None or not urlparse(url).scheme:
            path = Path(url) if url else self.folder / JOURNAL_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        from search.recovery import OrphanHandler

        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                storage = RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    heartbeat_stale_trial_callback=OrphanHandler(self.tracking),
                )
                break
            except IntegrityError:  # another machine made the schema of a new database at this moment
                if attempt == SCHEMA_ATTEMPTS - 1:
                    raise
                time.sleep(1)
            except Exception as error:
                raise SetupError(
                    f"cannot open Optuna storage {redact(url)} ({type(error).__name__}); "
                    "check that the database server runs and the URL is right"
                ) from None
        event.listen(storage.engine, "do_connect", _reconnect_with_backoff)
        return storage

    def outage(self, error: BaseException) -> str | None:
        """A clear message when `error` (or its cause) means the storage or tracking server stopped answering."""
        while error is not None:
            if isinstance(error, OperationalError) and urlparse(self.storage_url or "").scheme:
                return (
                    f"the Optuna storage {redact(self.storage_url)} stopped answering (retried for "
                    f"{RECONNECT_SECONDS} s); nothing recorded is lost: run the same command when it is back"
                )
            if isinstance(error, (MlflowException, RequestException)) and any(
                sign in str(error) for sign in ("Max retries exceeded", "timeout exception")
            ):
                return (
                    f"the MLflow tracking server {redact(self.tracking)} stopped answering (retried with "
                    "backoff); nothing recorded is lost: run the same command when it is back"
                )
            error = error.__cause__ or error.__context__
        return None

    def existing_storage(self) -> BaseStorage:
        """The storage of searches already run; a SetupError when there is none."""
        if self.storage_url is None and not (self.folder / JOURNAL_FILE).is_file():
            raise SetupError(f"no studies in {self.folder}; run `atelier run` first, or pass --store or --storage")
        return self.storage()

    def check_tracking_exists(self) -> None:
        """Refuse to open a local MLflow store that no search has made yet (opening it would create it)."""
        database = sqlite_database(self.tracking)
        if database is not None and not database.is_file():
            raise SetupError(
                f"no MLflow store at {database}; run `atelier run` first, or pass --store or --tracking-uri"
            )

    def check(self) -> Store:
        """Refuse a storage or tracking location that cannot work, before anything is written."""
        check_tracking_uri(self.tracking)
        if self.storage_url and urlparse(self.storage_url).scheme:
            scheme = urlparse(self.storage_url).scheme.split("+")[0]
            if scheme not in RDB_SCHEMES:
                raise SetupError(
                    f"storage '{redact(self.storage_url)}' is not one Optuna can use; give a journal "
                    "file path, sqlite:///path.db or postgresql://user@host/db"
                )
        else:
            journal = Path(self.storage_url) if self.storage_url else self.folder / JOURNAL_FILE
            flag = "--storage" if self.storage_url else "--store"
            for folder in (journal.parent, *journal.parent.parents):
                if folder.exists() and not folder.is_dir():
                    raise SetupError(f"{folder} is a file, not a folder; give {flag} a folder path")
        self._check_tracking_answers()
        return self

    def _check_tracking_answers(self) -> None:
        """A tracking server or database named by URI must answer now, not after the study is written."""
        uri = self.tracking
        scheme = urlparse(uri).scheme.split("+")[0]
        try:
            if scheme in ("http", "https"):
                requests.get(f"{uri.rstrip('/')}/health", timeout=TRACKING_CHECK_SECONDS).raise_for_status()
            elif scheme in ("postgresql", "mysql"):
                engine = create_engine(uri)
                try:
                    with engine.connect():
                        pass
                finally:
                    engine.dispose()
        except (RequestException, SQLAlchemyError) as error:
            raise SetupError(
                f"the MLflow tracking store {redact(uri)} does not answer ({type(error).__name__}); "
                "check that the server runs and the URI is right"
            ) from None


def _reconnect_with_backoff(dialect, record, cargs, cparams):
    """SQLAlchemy `do_connect` hook of a storage that has answered once: retry a lost server with backoff.

    A restart of the database server then does not end a long search; one that stays away for
    RECONNECT_SECONDS does. (A wrong URL fails at once, when the storage is first opened.)
    """
    deadline, delay = time.monotonic() + RECONNECT_SECONDS, 1.0
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 16.0)


def latest_study_name(storage: BaseStorage) -> str:
    """The study whose first trial started last; among studies without trials, the newest."""
    summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        raise SetupError("the store holds no study yet; run `atelier run` first")
    order = {id(s): (s.datetime_start or datetime.min, index) for index, s in enumerate(summaries)}
    return max(summaries, key=lambda s: order[id(s)]).study_name


def load_existing_study(store: Store, name: str | None) -> optuna.Study:
    """The study called `name` (default: the most recent) in the store, or a SetupError naming what is wrong."""
    if name is not None:
        check_name(name, "--study")
    storage = store.check().existing_storage()
    name = name or latest_study_name(storage)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SetupError(f"unknown study '{name}'; see the studies with `atelier show` or pass --study") from None
