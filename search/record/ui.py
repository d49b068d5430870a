"""`atelier ui`: the MLflow UI on a store, served by this very process."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from search.record.store import Store
from search.record.tracking import runs_page


def serve_ui(store: Store, host: str, port: int, say: Callable[[str], None]) -> NoReturn:
    """Say where the UI and the trials are, then become MLflow's server on `store`: Ctrl-C and signals reach it."""
    store.check_tracking_exists()
    url = f"http://{host}:{port}"
    say(f"MLflow UI at {url}; trials at {runs_page(store.tracking, url)}\n(Ctrl-C stops it)")
    # The store's URI goes through the environment: on the command line `ps` would show it to every user.
    os.environ["MLFLOW_BACKEND_STORE_URI"] = store.tracking
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # no GenAI jobs: no 7 idle processes
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port)]
    command += ["--workers", "1"]  # one user: one worker is plenty
    os.execv(sys.executable, command)
