"""Real servers for tests: a throw-away PostgreSQL cluster and an `mlflow server` process."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from search.record.sqlite_schema import prepare_new_store
from search.record.tracking import sqlite_database

PG_USER = "atelier"
START_TIMEOUT_S = 60


def wait_for_http(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until `url` answers; fail the test when `server` exits first or nothing answers in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {seconds} s")


@contextmanager
def served_model(uri: str, tracking_uri: str, cwd: Path) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """`mlflow models serve` of a registered model on a free port of 127.0.0.1, as its users start it; yields a
    function that posts images to it (JSON, `{"inputs": ...}`) and returns its predictions."""
    port = free_port()
    environment = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,  # and uvicorn on the PATH:
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def ask(images: np.ndarray) -> np.ndarray:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return np.asarray(json.loads(response.read())["predictions"])

    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server)
        yield ask
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout first, then PATH)."""
    found = list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))  # folders named 9.6, 15...
    if found:
        return max(found, key=lambda initdb: float(initdb.parts[-3])).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_missing() -> str | None:
    """Why `postgres_server` cannot run here, or None when it can."""
    if _pg_bin() is None:
        return "PostgreSQL not installed: apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "PostgreSQL refuses to run as root, and runuser is missing"
    return None


@dataclass(frozen=True)
class PostgresServer:
    """A running cluster reached over TCP with a password."""

    port: int
    password: str
    pg_ctl: tuple[str, ...]  # the pg_ctl command, run as the cluster's owner
    data: Path
    log: Path
    options: str
    user: str = PG_USER
    host: str = "127.0.0.1"

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        started = subprocess.run(
            [
                *self.pg_ctl,
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                self.options,
            ],
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start (pg_ctl waits {START_TIMEOUT_S} s): "
                f"{started.stdout.strip()} {started.stderr.strip()}\n{_tail(self.log)}"
            )

    def stop(self) -> None:
        """Stop the cluster at once (open connections are cut)."""
        subprocess.run([*self.pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w"], capture_output=True)

    def url(self, database: str) -> str:
        """The plain `postgresql://` URL of `database`, as a user writes it (SQLAlchemy picks psycopg 3)."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name`."""
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres", autocommit=True
        ) as conn:  # CREATE DATABASE needs autocommit
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@contextmanager
def postgres_server(folder: Path) -> Iterator[PostgresServer]:
    """Init a cluster in `folder`, serve it on 127.0.0.1 only, stop it on exit.

    As root the cluster runs as the `postgres` user, so `folder`'s parents must be
    searchable by it (pytest's tmp folders under /tmp/pytest-of-root are not).
    """
    pg_bin = _pg_bin()
    if pg_bin is None:
        raise RuntimeError("PostgreSQL not installed: apt-get install postgresql")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, sockets, log, pwfile = (folder / "data", folder / "socket", folder / "postgres.log", folder / "pwfile")
    password = secrets.token_urlsafe(16)
    sockets.mkdir(parents=True)
    pwfile.write_text(password + "\n")
    if as_pg:
        for path in (folder, sockets, pwfile):
            shutil.chown(path, "postgres", "postgres")
    folder.chmod(0o700)
    pwfile.chmod(0o600)

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_pg, *args], capture_output=True, text=True, check=False)

    init = pg(
        str(pg_bin / "initdb"),
        "-D",
        str(data),
        f"--username={PG_USER}",
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "--no-sync",
        "--encoding=UTF8",
        "--locale=C",
    )
    pwfile.unlink()
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{init.stderr[-3000:]}")
    port = free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    server = PostgresServer(
        port=port, password=password, pg_ctl=(*as_pg, str(pg_bin / "pg_ctl")), data=data, log=log, options=options
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, workers: int = 1) -> Iterator[str]:
    """Run `mlflow server` on `backend_uri`, serving artifacts from `artifacts`; yields its URL.

    Clients reach artifacts through the server (mlflow-artifacts:/), so they need no file access.
    """
    database = sqlite_database(backend_uri)
    if database is not None:
        prepare_new_store(database)  # as atelier makes a local store: the schema without MLflow's migrations
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with tempfile.NamedTemporaryFile(prefix="mlflow-server-", suffix=".log") as log:
        # No job runner: it is one more process importing MLflow, for GenAI jobs atelier never runs.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            _wait_healthy(proc, url, Path(log.name))
            yield url
        finally:
            _stop_group(proc)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Return once GET /health answers 200; raise with the log's tail if the server dies or stalls."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow server gave no /health within {START_TIMEOUT_S} s:\n{_tail(log)}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn and its workers); SIGKILL what is left after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers, or a leader that ignored SIGTERM
    except ProcessLookupError:
        pass
    proc.wait()
