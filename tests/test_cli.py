"""The command line: bad input gets one line and exit status 2 with nothing written (`atelier ui`: test_browser)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SPACE_TYPO = "[params]\nconv_filtres = 3\n"
OBJECTIVE_BAD_METRIC = '[data]\nsource = "digits"\n[search]\nmetric = "val_f1"\n'

BAD_RUNS = {
    "unknown space": (["--space", "cnnn"], "unknown space 'cnnn' (did you mean 'cnn'?)"),
    "unknown objective": (["--objective", "fashion"], "unknown objective 'fashion'"),
    "misspelt parameter": (["--space", "typo.toml"], "did you mean 'conv_filters'?"),
    "metric training does not produce": (["--objective", "metric.toml"], "training does not produce 'val_f1'"),
    "unknown sampler": (["--sampler", "grid"], "unknown sampler 'grid'"),
    "unknown pruner": (["--pruner", "pbt"], "unknown pruner 'pbt'"),
    "no trials": (["--trials", "0"], "search.trials: must be at least 1"),
    "empty data folder": (["--objective", "fashion-mnist", "--data-dir", "empty"], "no Fashion-MNIST files there"),
    "tracking URI that is not one": (["--tracking-uri", "ftp://host/x"], "is not one MLflow can use"),
    "storage of an unknown kind": (["--storage", "redis://host/0"], "is not one Optuna can use"),
}


@pytest.mark.parametrize("case", BAD_RUNS, ids=list(BAD_RUNS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, workdir: Path, atelier) -> None:
    (workdir / "typo.toml").write_text(SPACE_TYPO)
    (workdir / "metric.toml").write_text(OBJECTIVE_BAD_METRIC)
    (workdir / "empty").mkdir()
    flags, expected = BAD_RUNS[case]
    status, out, err = atelier("run", "--objective", "digits", *flags)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("atelier: error: ") and expected in err
    assert "Traceback" not in err + out
    assert not (workdir / "mlruns").exists()


BAD_FLAGS = {  # a command line argparse refuses: the line after "atelier: error: "
    "fractional seed": (
        ["run", "--seed", "1.5"],
        "--seed: invalid int value: '1.5'; give a whole number (see atelier run --help)",
    ),
    "unknown format": (
        ["show", "--format", "xml"],
        "--format: invalid choice: 'xml'; choose one of table, csv, json, markdown (see atelier show --help)",
    ),
    "unknown flag": (["run", "--sed", "3"], "--sed: unknown flag; check its spelling (see atelier run --help)"),
    "missing value": (["run", "--seed"], "--seed: expected one argument; give it a value (see atelier run --help)"),
    "missing required flag": (
        ["best"],
        "the following arguments are required: --budget; add them (see atelier best --help)",
    ),
    "no command": ([], "the following arguments are required: COMMAND; add them (see atelier --help)"),
}


@pytest.mark.parametrize("case", BAD_FLAGS, ids=list(BAD_FLAGS))
def test_bad_flag_is_one_line_naming_the_flag_and_the_fix(case: str, workdir: Path, atelier) -> None:
    """Not argparse's usage: one line, exit status 2, nothing written."""
    args, expected = BAD_FLAGS[case]
    status, out, err = atelier(*args)
    assert (status, out, err) == (2, "", f"atelier: error: {expected}\n")
    assert not list(workdir.iterdir())


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        (["--help"], "print a study's trials, best first"),
        (["run", "--help"], "--seed SEED"),
        (["show", "-h"], "--format {table,csv,json,markdown}"),
    ],
)
def test_help_is_still_the_whole_help(
    args: list[str], listed: str, atelier, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        atelier(*args)
    out = capsys.readouterr().out
    assert exited.value.code == 0 and out.startswith("usage: atelier") and "options:" in out and listed in out


def test_show_without_a_store_says_how_to_make_one(workdir: Path, atelier) -> None:
    status, _, err = atelier("show")
    assert status == 2 and "run `atelier run` first" in err and err.count("\n") == 1


@pytest.mark.e2e  # trains a first trial through the command line
def test_resuming_with_another_space_or_seed_is_refused(workdir: Path, atelier) -> None:
    (workdir / "one.toml").write_text("[params]\ndense_units = {choices = [16, 32]}\n")
    status, _, _ = atelier(
        "run",
        "--objective",
        "digits",
        "--space",
        "one.toml",
        "--study",
        "s",
        "--trials",
        "1",
        "--max-epochs",
        "1",
        "--quiet",
    )
    assert status == 0
    (workdir / "one.toml").write_text("[params]\ndense_units = {choices = [64, 128]}\n")
    status, _, err = atelier("run", "--objective", "digits", "--space", "one.toml", "--study", "s", "--trials", "2")
    assert status == 2 and "was made with a different space file" in err
    (workdir / "one.toml").write_text("[params]\ndense_units = {choices = [16, 32]}\n")
    status, _, err = atelier(
        "run", "--objective", "digits", "--space", "one.toml", "--study", "s", "--trials", "2", "--seed", "7"
    )
    assert status == 2 and "was made with different data settings (files, split or seed)" in err


def test_console_script_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "atelier"
    result = subprocess.run(
        [str(script), "run", "--objective", "nope"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("atelier: error: unknown objective 'nope'")
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [str(script), "run", "--trials", "ten"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr == (
        "atelier: error: --trials: invalid int value: 'ten'; give a whole number (see atelier run --help)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "search.cli", "show", "--format", "xml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.startswith("atelier: error: --format: invalid choice: 'xml'")
