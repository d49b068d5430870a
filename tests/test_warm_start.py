"""`atelier run --warm-start STUDY`: a copy of the shared digits store, searched again from its best trials."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from background import Prepared
from optuna.trial import TrialState
from stores import atelier_case, journal_storage, journal_study

from search.engine.warm_start import SOURCE_ATTR, WARM_START_TRIALS

pytestmark = pytest.mark.e2e  # real searches through the command line
SOURCE = "digits-dense"  # the shared store's study of 8 trials (stores.digits_searches)
SEARCH = ("run", "--objective", "digits", "--workers", "1", "--max-epochs", "1", "--quiet")


@pytest.fixture(scope="module")
def store(digits_store: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared digits store, so the searches here leave the shared one as the other tests read it."""
    folder = tmp_path_factory.mktemp("warm")
    shutil.copytree(digits_store.folder / "mlruns", folder / "mlruns")
    return folder


@pytest.fixture(scope="module")
def warm(store: Path) -> dict[str, dict[str, object]]:
    """A warm-started study of 3 trials (the 3 queued), then resumed to 4 with the same flag."""
    ran = {"first": atelier_case(store, *SEARCH, "--study", "warm", "--trials", 3, "--warm-start", SOURCE)}
    ran["resumed"] = atelier_case(store, *SEARCH, "--study", "warm", "--trials", 4, "--warm-start", SOURCE)
    return ran


def _best_completed(store: Path) -> list[optuna.trial.FrozenTrial]:
    source = journal_study(store, SOURCE)
    completed = [t for t in source.trials if t.state is TrialState.COMPLETE]
    return sorted(completed, key=lambda t: t.value)[:WARM_START_TRIALS]  # digits-dense minimizes val_loss


def test_the_first_trials_are_the_earlier_studys_best(store: Path, warm: dict[str, dict[str, object]]) -> None:
    assert warm["first"]["status"] == 0, warm["first"]["err"]
    best = _best_completed(store)
    trials = journal_study(store, "warm").trials
    queued = [t for t in trials if SOURCE_ATTR in t.user_attrs]
    assert [t.number for t in queued] == list(range(len(best)))  # queued first, in order of their value
    assert [t.params for t in queued] == [t.params for t in best]
    assert [t.user_attrs[SOURCE_ATTR] for t in queued] == [f"{SOURCE}#{t.number}" for t in best]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in queued)


def test_a_resumed_study_is_not_queued_again(store: Path, warm: dict[str, dict[str, object]]) -> None:
    assert warm["resumed"]["status"] == 0, warm["resumed"]["err"]
    trials = journal_study(store, "warm").trials
    assert len(trials) == 4 and len([t for t in trials if SOURCE_ATTR in t.user_attrs]) == len(_best_completed(store))
    assert not [t for t in trials if t.state is TrialState.WAITING]


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (("--study", "other", "--warm-start", "nowhere"), "unknown study 'nowhere' to warm-start from"),
        (("--study", "other", "--warm-start", "other"), "study 'other' cannot warm-start from itself"),
        (("--study", "other", "--space", "cnn-fast", "--warm-start", SOURCE), "searched space 'dense'"),
        (("--study", "other", "--warm-start", "second/.."), "--warm-start"),
    ],
    ids=["unknown", "itself", "other-space", "bad-name"],
)
def test_a_bad_warm_start_is_one_line_and_writes_nothing(
    store: Path, warm: dict[str, dict[str, object]], flags: tuple[str, ...], problem: str
) -> None:
    studies = {s.study_name for s in optuna.get_all_study_summaries(journal_storage(store))}
    ran = atelier_case(store, *SEARCH, "--trials", 2, *flags)
    assert ran["status"] == 2 and ran["out"] == ""
    [line] = ran["err"].splitlines()
    assert problem in line
    after = {s.study_name for s in optuna.get_all_study_summaries(journal_storage(store))}
    assert after == studies
