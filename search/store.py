"""Where a search keeps its records: an Optuna storage and an MLflow tracking URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from search.errors import SetupError
from search.tracking import check_tracking_uri, redact, sqlite_database

JOURNAL_FILE = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120  # a trial silent for GRACE_SECONDS is an orphan


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

        try:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=HEARTBEAT_SECONDS,
                              grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=OrphanHandler(self.tracking))
        except Exception as error:
            raise SetupError(f"cannot open Optuna storage {redact(url)} ({type(error).__name__}); "
                             "check that the database server runs and the URL is right") from None

    def existing_storage(self) -> BaseStorage:
        """The storage of searches already run; a SetupError when there is none."""
        if self.storage_url is None and not (self.folder / JOURNAL_FILE).is_file():
            raise SetupError(f"no studies in {self.folder}; run `atelier run` first, or pass --store or --storage")
        return self.storage()

    def check_tracking_exists(self) -> None:
        """Refuse to open a local MLflow store that no search has made yet (opening it would create it)."""
        database = sqlite_database(self.tracking)
        if database is not None and not database.is_file():
            raise SetupError(f"no MLflow store at {database}; run `atelier run` first, or pass --store "
                             "or --tracking-uri")

    def check(self) -> Store:
        """Refuse a storage URL or tracking URI of an unknown kind before anything is written."""
        check_tracking_uri(self.tracking)
        if self.storage_url and urlparse(self.storage_url).scheme:
            scheme = urlparse(self.storage_url).scheme.split("+")[0]
            if scheme not in RDB_SCHEMES:
                raise SetupError(f"storage '{redact(self.storage_url)}' is not one Optuna can use; give a journal "
                                 "file path, sqlite:///path.db or postgresql://user@host/db")
        return self
