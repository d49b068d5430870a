"""Where a search keeps its records: an Optuna storage and an MLflow tracking URI."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import optuna
import requests
from mlflow.exceptions import MlflowException
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from requests.exceptions import RequestException
from sqlalchemy import create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError

from search.errors import SetupError
from search.paths import check_name
from search.record.tracking import check_tracking_uri, sqlite_database
from search.secrets import redact

JOURNAL_FILE = "optuna.journal"
# A journal's lock is a symlink to the journal, held for the milliseconds of one append; one left by a killed
# command is broken once the journal has not changed for this long. The journal's path is made absolute:
# Optuna's lock links to the path as given, and a relative link dangles, which Optuna takes for a lock being
# released and waits on forever (a SIGKILL mid-append hung the next command).
JOURNAL_LOCK_GRACE_SECONDS = 10
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
    def image_cache(self) -> Path:
        """Where a folder's images are decoded once for every search and promotion of this store."""
        return self.folder / "image-cache"

    def checkpoints(self, study_name: str) -> Path:
        """Where the study's paused trials keep their checkpoints."""
        return self.folder / "checkpoints" / study_name

    @property
    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.folder / 'mlflow.db').resolve()}"

    def storage(self) -> BaseStorage:
        """The Optuna storage: a journal file that several local processes can share, by default."""
        url = self.storage_url
        if url is None or not urlparse(url).scheme:
            path = (Path(url) if url else self.folder / JOURNAL_FILE).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = JournalFileSymlinkLock(str(path), grace_period=JOURNAL_LOCK_GRACE_SECONDS)
            return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
        from search.engine.recovery import OrphanHandler

        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                storage = ReconnectingRDBStorage(
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


class ReconnectingRDBStorage(RDBStorage):
    """An RDBStorage whose calls outlive a database restart: a call cut by a lost connection is made again.

    `pool_pre_ping` and `_reconnect_with_backoff` cover connections lost between calls; a query in
    flight when the server goes down fails instead (psycopg's AdminShutdown), and is retried here on a
    new connection until RECONNECT_SECONDS have passed. The cut transaction was rolled back, so a call
    is made again whole (a write whose commit reached the server just as it stopped is the rare case
    made twice).
    """


def _remade_after_disconnects(method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self: RDBStorage, *args, **kwargs):
        deadline = time.monotonic() + RECONNECT_SECONDS
        while True:
            try:
                return method(self, *args, **kwargs)
            except StorageInternalError as error:
                if not _connection_lost(error) or time.monotonic() > deadline:
                    raise
                time.sleep(1)  # the pool dropped the cut connection; the next checkout reconnects

    return call


def _connection_lost(error: BaseException | None) -> bool:
    """Whether a lost connection (not bad data, not a constraint) lies behind `error`."""
    while error is not None:
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__ or error.__context__
    return False


_STORAGE_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
)  # fmt: skip (the last four are what Optuna's cache calls instead of their public forms)
for _name in _STORAGE_CALLS:
    setattr(ReconnectingRDBStorage, _name, _remade_after_disconnects(getattr(RDBStorage, _name)))


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
