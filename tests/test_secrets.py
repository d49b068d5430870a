"""No credential reaches the terminal, the process table or MLflow.

Every command runs with secrets in each place a URL carries them (a database URL's user-info, its
`password=` query parameter, a tracking server's basic-auth user-info), against stores that answer
(a real PostgreSQL cluster with password authentication and a real `mlflow server`) and stores that
do not (closed ports). Afterwards every MLflow param, tag, description and artifact, and every
Optuna attribute, is searched for the secrets.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from servers import PostgresServer, free_port, mlflow_server
from sklearn.datasets import load_digits

from search import cli
from search.secrets import redact, scrub, secrets_of, without_credentials

SERVER = re.compile(r"-m (mlflow server|uvicorn)\b")
TRACKING_SECRET = "trackingpw-7f3a"  # the tracking server's basic-auth password (the server has no auth: ignored)


@pytest.mark.parametrize(
    ("url", "redacted", "clean"),
    [
        ("postgresql://bob:pw99@db/optuna", "postgresql://***@db/optuna", "postgresql://db/optuna"),
        (
            "postgresql://bob@dbhost/optuna?password=secretpw",
            "postgresql://***@dbhost/optuna?password=***",
            "postgresql://dbhost/optuna",
        ),
        ("mysql://u:p%40ss@h:3306/d", "mysql://***@h:3306/d", "mysql://h:3306/d"),
        ("https://tok123@mlflow.example", "https://***@mlflow.example", "https://mlflow.example"),
        (
            "http://127.0.0.1:5000/?token=abc&x=1&api_key=k9z",
            "http://127.0.0.1:5000/?token=***&x=1&api_key=***",
            "http://127.0.0.1:5000/?x=1",
        ),
        ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
    ],
)
def test_every_credential_form_is_hidden(url: str, redacted: str, clean: str) -> None:
    assert redact(url) == redacted
    assert without_credentials(url) == clean
    message = f"cannot open {url} (the server said: password for {url.split('//')[1]} was refused)"
    scrubbed = scrub(message, secrets_of(url))
    for secret in secrets_of(url):
        assert secret not in scrubbed
    assert "cannot open" in scrubbed and "refused" in scrubbed


def test_a_user_name_of_a_database_is_not_taken_for_a_secret() -> None:
    assert secrets_of("postgresql://atelier@db/optuna?password=pw99") == ["pw99", "pw99"]
    assert scrub("atelier: error: x", secrets_of("postgresql://atelier@db/optuna")) == "atelier: error: x"


class Recorder:
    """Runs `atelier` in-process, capturing file descriptors 1 and 2 (workers write there too)."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.outputs: list[tuple[list[str], int, str]] = []

    def __call__(self, *args: str) -> tuple[int, str]:
        status = cli.main(list(args))
        out, err = self.capfd.readouterr()
        self.outputs.append((list(args), status, out + err))
        return status, out + err


@pytest.fixture(scope="module")
def servers(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An Optuna database and an `mlflow server` on another database, each reached with its secret."""
    postgres.create_database("optuna_secrets")
    postgres.create_database("mlflow_secrets")
    with mlflow_server(postgres.url("mlflow_secrets"), tmp_path_factory.mktemp("artifacts")) as tracking:
        yield {
            "storage": postgres.url("optuna_secrets"),  # the password in the user-info
            "storage_query": f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/optuna_secrets"
            f"?password={postgres.password}",
            "tracking": tracking.replace("http://", f"http://bob:{TRACKING_SECRET}@"),
            "tracking_db": postgres.url("mlflow_secrets"),
        }


@pytest.mark.e2e
def test_no_command_shows_or_records_a_secret(
    servers: dict[str, str], postgres: PostgresServer, workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    atelier, secrets = Recorder(capfd), (postgres.password, TRACKING_SECRET)
    np.save(workdir / "x.npy", (load_digits().images[:5] * 16).clip(0, 255).astype(np.uint8))
    tracking = ("--tracking-uri", servers["tracking"])
    for storage in (servers["storage"], servers["storage_query"]):  # the second resumes the study, its target met
        store = ("--storage", storage, *tracking)
        status, output = atelier(
            "run",
            "--objective",
            "digits",
            "--study",
            "secrets",
            "--trials",
            "2",
            "--max-epochs",
            "2",
            "--workers",
            "1",
            *store,
        )
        assert status == 0, output
        assert atelier("show", "--study", "secrets", *store)[0] == 0
        assert atelier("report", "--study", "secrets", *store)[0] == 0
    assert (
        atelier("promote", "--study", "secrets", "--model-name", "secrets", "--storage", servers["storage"], *tracking)[
            0
        ]
        == 0
    )
    assert atelier("predict", "--model", "models:/secrets@champion", "--input", "x.npy", *tracking)[0] == 0
    assert (
        atelier(
            "bench",
            "--objective",
            "digits",
            "--seeds",
            "1",
            "--budget-epochs",
            "2",
            "--strategies",
            "atelier",
            "--memory-trials",
            "--output",
            "bench",
            *tracking,
        )[0]
        == 0
    )
    closed_storage = f"postgresql://atelier:{postgres.password}@127.0.0.1:1/optuna"
    closed_query = f"postgresql://atelier@127.0.0.1:1/optuna?password={postgres.password}"
    closed_tracking = f"http://bob:{TRACKING_SECRET}@127.0.0.1:1"
    for command in (("run", "--objective", "digits"), ("show",), ("report",), ("promote",)):
        for storage in (closed_storage, closed_query):
            assert atelier(*command, "--storage", storage, *tracking)[0] == 2
    for command in (
        ("run", "--objective", "digits"),
        ("report",),
        ("promote",),
        ("predict", "--input", "x.npy"),
        ("ui",),
    ):
        assert atelier(*command, "--storage", servers["storage"], "--tracking-uri", closed_tracking)[0] == 2
    assert atelier("bench", "--objective", "digits", "--tracking-uri", closed_tracking)[0] == 2

    for args, _, output in atelier.outputs:
        for secret in secrets:
            assert secret not in output, f"atelier {' '.join(args)} showed a secret:\n{output}"
    recorded = _mlflow_record(MlflowClient(servers["tracking"])) + _optuna_record(servers["storage"])
    assert len(recorded) > 100  # params, tags, descriptions and artifacts were read
    for secret in secrets:
        assert not [text for text in recorded if secret in text]


@pytest.mark.e2e
def test_atelier_ui_keeps_the_store_off_the_command_line(
    servers: dict[str, str], postgres: PostgresServer, workdir: Path
) -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "atelier"),
            "ui",
            "--port",
            str(port),
            "--tracking-uri",
            servers["tracking_db"],
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first_line = server.stdout.readline()
        assert first_line.startswith(f"MLflow UI at http://127.0.0.1:{port}")
        assert postgres.password not in first_line
        deadline, seen = time.monotonic() + 60, set()
        while time.monotonic() < deadline and not any("uvicorn" in line for line in seen):  # server, then its app
            # The server's processes (the atelier command line the user typed is theirs, and exec'd away).
            seen |= {line for pid in _group(server.pid) if SERVER.search(line := _command_line(pid))}
            time.sleep(0.5)
        assert any("mlflow server" in line for line in seen) and any("uvicorn" in line for line in seen), seen
        assert not [line for line in seen if postgres.password in line]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _group(group: int) -> list[int]:
    """The processes of a process group (the server and whatever it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == group:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                continue
    return pids


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def _mlflow_record(client: MlflowClient) -> list[str]:
    """Every text MLflow holds: experiment tags, run params, tags and descriptions, artifacts, registry entries."""
    texts = []
    for experiment in client.search_experiments():
        texts += [experiment.name, *experiment.tags.values()]
        for run in client.search_runs([experiment.experiment_id], max_results=1000):
            texts += [*run.data.params.values(), *run.data.tags.values()]
            with tempfile.TemporaryDirectory() as folder:
                local = Path(client.download_artifacts(run.info.run_id, "", folder))
                texts += [path.read_bytes().decode(errors="replace") for path in local.rglob("*") if path.is_file()]
    for model in client.search_registered_models():
        texts += [model.description or "", *model.tags.values()]
        for version in client.search_model_versions(f"name = '{model.name}'"):
            texts += [version.description or "", version.source, *version.tags.values()]
    return texts


def _optuna_record(storage: str) -> list[str]:
    """Every attribute Optuna holds for the studies in `storage`."""
    texts = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        texts += [str(value) for value in study.user_attrs.values()]
        for trial in study.get_trials(deepcopy=False):
            texts += [str(value) for value in (*trial.user_attrs.values(), *trial.system_attrs.values())]
    return texts
