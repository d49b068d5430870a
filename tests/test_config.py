"""Space and objective files: the shipped ones load, and every bad file fails in one helpful line."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.config.files import REPO_ROOT
from search.config.objectives import Objective, load_objective, objective_from_record, objective_record
from search.config.schema import EPOCH_METRICS, PARAMETERS
from search.config.spaces import Choice, Fixed, Range, load_space
from search.errors import SetupError

PARAMS = "[params]\n"
VALID_DATA = '[data]\nsource = "digits"\n'


def write(folder: Path, name: str, text: str) -> Path:
    """Write `text` to folder/name and return the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def setup_error(load, path: Path) -> str:
    """The message of the SetupError that loading `path` raises."""
    with pytest.raises(SetupError) as caught:
        load(str(path))
    return str(caught.value)


def test_shipped_dense_space() -> None:
    """`dense` searches the dense stack and training settings, and nothing convolutional."""
    space = load_space("dense")
    assert space.name == "dense"
    assert set(space.params) == {
        "dense_layers",
        "dense_units",
        "dense_dropout",
        "dense_batch_norm",
        "l2",
        "learning_rate",
        "batch_size",
    }
    assert space.params["dense_layers"] == Range(1, 3)
    assert space.params["dense_units"] == Choice((64, 128, 256, 512))
    assert space.params["dense_dropout"] == Range(0.0, 0.5, step=0.05)
    assert space.params["l2"] == Range(1e-7, 1e-3, log=True)
    assert space.description and "[params]" in space.text


def test_shipped_cnn_space() -> None:
    """`cnn` searches every parameter but the optimizer and its settings, the schedule, dense batch norm, batch
    norm's momentum, and what long trainings use (growing dropout, label smoothing)."""
    space = load_space("cnn")
    unsearched = {"optimizer", "weight_decay", "lr_schedule", "warmup_epochs", "dense_batch_norm"}
    unsearched |= {"batch_norm_momentum", "conv_dropout_growth", "label_smoothing"}
    assert set(PARAMETERS) - set(space.params) == unsearched
    assert space.params["conv_blocks"] == Range(1, 3)
    assert space.params["conv_filters"] == Choice((16, 32, 48, 64))
    assert space.params["conv_padding"] == Choice(("same", "valid"))
    assert space.params["conv_batch_norm"] == Choice((True, False))
    assert space.params["learning_rate"] == Range(2e-4, 5e-3, log=True)
    assert space.params["aug_erase"] == Range(0.0, 0.3, step=0.1)
    assert space.params["head"] == Choice(("flatten", "average"))


def test_shipped_objectives() -> None:
    """The shipped objectives load, name a shipped space, monitor the validation loss and prune by halving."""
    fashion = load_objective("fashion-mnist")
    assert (fashion.data.source, fashion.data.validation_fraction) == ("idx", 0.1)
    assert len(fashion.data.class_names) == 10 and fashion.data.class_names[0] == "T-shirt/top"
    assert (fashion.space, fashion.trials, fashion.max_epochs, fashion.max_params) == ("cnn", 20, 10, 2_000_000)
    digits = load_objective("digits")
    assert (digits.data.source, digits.data.validation_fraction) == ("digits", 0.2)
    assert (digits.space, digits.trials, digits.max_params) == ("dense", 10, 500_000)
    shipped = [load_objective(path.stem) for path in sorted((REPO_ROOT / "objectives").glob("*.toml"))]
    assert {objective.name for objective in shipped} >= {"fashion-mnist", "fashion-mnist-quick", "fashion-mnist-bench"}
    for objective in shipped:
        assert (objective.metric, objective.direction) == ("val_loss", "minimize")
        assert (objective.sampler, objective.pruner) == ("tpe", "halving")
        assert load_space(objective.space).name == objective.space


def test_every_shipped_space_loads_with_something_to_search() -> None:
    for path in sorted((REPO_ROOT / "spaces").glob("*.toml")):
        space = load_space(path.stem)
        assert space.params or space.hypermodel is not None, path


BAD_SPACES = [
    ("empty-file", "", "no [params] table and no hypermodel: nothing to search", 'hypermodel = "package.module:build"'),
    ("description-only", 'description = "mine"', "no [params] table", "add [params] with at least one parameter"),
    ("empty-params", PARAMS, "params: the table is empty: nothing to search", "add at least one parameter"),
    ("unknown-parameter", PARAMS + "conv_filtres = 32", "params.conv_filtres", "did you mean 'conv_filters'"),
    ("unknown-top-level-key", "dense_layers = 2", "dense_layers", "known: description, params"),
    ("params-not-a-table", "params = 3", "params", "must be a table"),
    ("low-above-high", PARAMS + "dense_layers = {low = 3, high = 1}", "params.dense_layers", "swap them"),
    ("empty-choices", PARAMS + "dense_units = {choices = []}", "params.dense_units", "list at least one value"),
    ("str-given-int", PARAMS + "conv_padding = 3", "params.conv_padding", "expected str, got int 3; fix the value"),
    ("int-given-str", PARAMS + 'dense_layers = "two"', "params.dense_layers", "expected int, got str 'two'"),
    ("int-given-bool", PARAMS + "dense_layers = true", "params.dense_layers", "expected int, got bool"),
    (
        "choice-not-an-option",
        PARAMS + 'conv_padding = {choices = ["same", "full"]}',
        "params.conv_padding",
        "'full' is not one of 'same', 'valid'",
    ),
    (
        "choice-wrong-type",
        PARAMS + "dense_units = {choices = [64, 12.5]}",
        "params.dense_units",
        "expected int, got float",
    ),
    ("range-on-bool", PARAMS + "conv_batch_norm = {low = 0, high = 1}", "params.conv_batch_norm", "{choices = [...]}"),
    ("range-on-str", PARAMS + "optimizer = {low = 0, high = 1}", "params.optimizer", "{choices = [...]}"),
    ("log-low-zero", PARAMS + "l2 = {low = 0.0, high = 1e-3, log = true}", "params.l2", "needs low > 0"),
    (
        "log-and-step",
        PARAMS + "learning_rate = {low = 1e-4, high = 1e-2, log = true, step = 1e-4}",
        "params.learning_rate",
        "either log = true or a step",
    ),
    ("log-not-bool", PARAMS + 'l2 = {low = 1e-7, high = 1e-3, log = "yes"}', "params.l2.log", "true or false"),
    (
        "fractional-int-step",
        PARAMS + "dense_units = {low = 32, high = 256, step = 0.5}",
        "params.dense_units.step",
        "must be an integer",
    ),
    (
        "negative-step",
        PARAMS + "dense_dropout = {low = 0.0, high = 0.5, step = -0.1}",
        "params.dense_dropout.step",
        "positive number",
    ),
    ("constant-above-maximum", PARAMS + "conv_blocks = 9", "params.conv_blocks", "above the maximum 8"),
    ("constant-below-minimum", PARAMS + "learning_rate = 0.0", "params.learning_rate", "below the minimum 1e-07"),
    (
        "range-above-maximum",
        PARAMS + "dense_dropout = {low = 0.0, high = 0.95}",
        "params.dense_dropout.high",
        "above the maximum 0.9",
    ),
    ("malformed-toml", PARAMS + "dense_layers = {low = 1, high = 3", "line 2", "fix the syntax"),
    (
        "unknown-range-key",
        PARAMS + "dense_layers = {low = 1, hihg = 3}",
        "params.dense_layers.hihg",
        "did you mean 'high'",
    ),
    (
        "unknown-choice-key",
        PARAMS + "dense_units = {choices = [64], log = true}",
        "params.dense_units.log",
        "known: choices",
    ),
    ("missing-high", PARAMS + "dense_layers = {low = 1}", "params.dense_layers", "needs both low and high"),
    (
        "block-beyond-the-count",
        PARAMS + "conv_blocks = {low = 1, high = 2}\nconv_filters_2 = {choices = [64]}",
        "params.conv_filters_2",
        "block 2 does not exist: conv_blocks is at most 2",
    ),
    ("block-of-a-plain-parameter", PARAMS + "learning_rate_0 = 0.1", "params.learning_rate_0", "unknown parameter"),
    (
        "block-value-invalid",
        PARAMS + "conv_blocks = 1\nconv_filters_0 = 0",
        "params.conv_filters_0",
        "below the minimum",
    ),
    ("reference-not-a-table", "reference = 3\n" + PARAMS, "reference", "must be a table"),
    (
        "reference-outside-a-range",
        PARAMS + "learning_rate = {low = 1e-3, high = 1e-2, log = true}\n[reference]\nlearning_rate = 0.5",
        "reference.learning_rate",
        "0.5 is outside the space's range 0.001 to 0.01",
    ),
    (
        "reference-not-a-choice",
        PARAMS + "conv_blocks = 2\nconv_filters_1 = {choices = [64, 96]}\n[reference]\nconv_filters_1 = 32",
        "reference.conv_filters_1",
        "outside the space's choices [64, 96]",
    ),
    (
        "reference-against-a-fixed-value",
        PARAMS + "dense_layers = 2\n[reference]\ndense_layers = 1",
        "reference.dense_layers",
        "fixed value 2",
    ),
    ("reference-unknown", PARAMS + "[reference]\nlearnig_rate = 0.1", "reference.learnig_rate", "did you mean"),
]


@pytest.mark.parametrize(
    ("text", "key", "hint"), [case[1:] for case in BAD_SPACES], ids=[case[0] for case in BAD_SPACES]
)
def test_bad_space(tmp_path: Path, text: str, key: str, hint: str) -> None:
    """A bad space file fails with one line naming the file, the key and the fix."""
    path = write(tmp_path, "bad.toml", text + "\n")
    message = setup_error(load_space, path)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert key in message
    assert hint in message


BAD_OBJECTIVES = [
    ("missing-data", "[search]\ntrials = 3\n", "data", "missing [data] table"),
    ("missing-source", "[data]\nvalidation_fraction = 0.2\n", "data.source", "use one of idx, csv, digits, loader"),
    ("unknown-source", '[data]\nsource = "ftp"\n', "data.source", "unknown source 'ftp'; use one of idx"),
    ("unknown-data-key", VALID_DATA + "validation = 0.2\n", "data.validation", "did you mean 'validation_fraction'"),
    ("unknown-search-key", VALID_DATA + "[search]\ntrails = 10\n", "search.trails", "did you mean 'trials'"),
    ("unknown-top-level-key", VALID_DATA + "[serach]\ntrials = 10\n", "serach", "did you mean 'search'"),
    (
        "metric-not-produced",
        VALID_DATA + '[search]\nmetric = "val_f1"\n',
        "search.metric",
        "monitor one of loss, accuracy, val_loss, val_accuracy",
    ),
    ("unknown-sampler", VALID_DATA + '[search]\nsampler = "grid"\n', "search.sampler", "use one of tpe, random"),
    ("unknown-pruner", VALID_DATA + '[search]\npruner = "pbt"\n', "search.pruner", "use one of halving, asha"),
    (
        "validation-fraction-one",
        '[data]\nsource = "digits"\nvalidation_fraction = 1\n',
        "data.validation_fraction",
        "between 0 and 1",
    ),
    (
        "validation-fraction-zero",
        '[data]\nsource = "digits"\nvalidation_fraction = 0.0\n',
        "data.validation_fraction",
        "between 0 and 1",
    ),
    (
        "validation-fraction-above-one",
        '[data]\nsource = "digits"\nvalidation_fraction = 1.5\n',
        "data.validation_fraction",
        "between 0 and 1",
    ),
    ("zero-trials", VALID_DATA + "[search]\ntrials = 0\n", "search.trials", "at least 1"),
    ("trials-as-text", VALID_DATA + '[search]\ntrials = "ten"\n', "search.trials", "expected int, got str 'ten'"),
    ("trials-as-float", VALID_DATA + "[search]\ntrials = 10.0\n", "search.trials", "expected int, got float"),
    ("max-epochs-as-bool", VALID_DATA + "[search]\nmax_epochs = true\n", "search.max_epochs", "expected int, got bool"),
    ("zero-timeout", VALID_DATA + "[search]\ntimeout = 0\n", "search.timeout", "positive number of seconds"),
    ("csv-without-train", '[data]\nsource = "csv"\n', "data.train", 'train = "path/to/train.csv"'),
    (
        "loader-without-function",
        '[data]\nsource = "loader"\nloader = "pkg.mod"\n',
        "data.loader",
        "package.module:function",
    ),
    ("one-class-name", '[data]\nsource = "digits"\nclass_names = ["a"]\n', "data.class_names", "at least two"),
    ("negative-subsample", '[data]\nsource = "digits"\nsubsample = -5\n', "data.subsample", "fraction in (0, 1]"),
    ("malformed-toml", "[data\nsource = 1\n", "line 1", "fix the syntax"),
    ("margin-above-one", VALID_DATA + "[promotion]\nmargin = 1.5\n", "promotion.margin", "from 0 up to 1"),
    ("unknown-promotion-key", VALID_DATA + "[promotion]\nmargn = 0.1\n", "promotion.margn", "did you mean 'margin'"),
    ("zero-refit-seconds", VALID_DATA + "[promotion]\nrefit_seconds = 0\n", "promotion.refit_seconds", "positive"),
    (
        "refit-seconds-as-text",
        VALID_DATA + '[promotion]\nrefit_seconds = "4m"\n',
        "promotion.refit_seconds",
        "expected float, got str '4m'",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "hint"), [case[1:] for case in BAD_OBJECTIVES], ids=[case[0] for case in BAD_OBJECTIVES]
)
def test_bad_objective(tmp_path: Path, text: str, key: str, hint: str) -> None:
    """A bad objective file fails with one line naming the file, the key and the fix."""
    path = write(tmp_path, "bad.toml", text)
    message = setup_error(load_objective, path)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert key in message
    assert hint in message


def test_unknown_space_name_lists_known_names() -> None:
    """An unknown name suggests the closest one and lists the shipped spaces."""
    with pytest.raises(SetupError) as caught:
        load_space("dnese")
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown space 'dnese' (did you mean 'dense'?)" in message
    assert "choose one of: " in message and "cnn" in message and "dense" in message


def test_unknown_objective_name_lists_known_names() -> None:
    """The same for objectives."""
    with pytest.raises(SetupError, match=r"unknown objective 'mnist'.*choose one of: .*digits.*fashion-mnist"):
        load_objective("mnist")


@pytest.mark.parametrize("load", [load_space, load_objective])
def test_missing_toml_path(tmp_path: Path, load) -> None:
    """A path to a .toml file that does not exist is an error naming that path."""
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(SetupError, match="does not exist; check the path") as caught:
        load(str(missing))
    assert str(missing) in str(caught.value)


def test_name_resolution_prefers_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is looked up in ./spaces first, shadowing atelier's own file of the same name."""
    write(tmp_path, "spaces/mine.toml", "[params]\nbatch_size = 32\n")
    write(tmp_path, "spaces/dense.toml", "[params]\ndense_layers = {low = 4, high = 5}\n")
    monkeypatch.chdir(tmp_path)
    mine = load_space("mine")
    assert mine.path.resolve() == (tmp_path / "spaces" / "mine.toml").resolve()
    assert mine.params == {"batch_size": Fixed(32)}
    dense = load_space("dense")
    assert dense.path.resolve() == (tmp_path / "spaces" / "dense.toml").resolve()
    assert dense.params == {"dense_layers": Range(4, 5)}
    assert load_space("cnn").path.parent.parent != tmp_path
    with pytest.raises(SetupError, match=r"choose one of: cnn, .*dense, mine"):
        load_space("nothing")


def test_space_path_without_suffix_from_folder(tmp_path: Path) -> None:
    """A path with a folder is read as it is, whatever its name."""
    path = write(tmp_path, "custom.toml", 'description = "tiny"\n[params]\nl2 = 0\n')
    space = load_space(str(path))
    assert (space.name, space.description) == ("custom", "tiny")


@pytest.mark.parametrize("metric", EPOCH_METRICS)
def test_direction_follows_metric(tmp_path: Path, metric: str) -> None:
    """Losses are minimized, accuracies maximized."""
    path = write(tmp_path, "o.toml", VALID_DATA + f'[search]\nmetric = "{metric}"\n')
    objective = load_objective(str(path))
    assert objective.metric == metric
    assert objective.direction == ("minimize" if "loss" in metric else "maximize")


def test_direction_of_dataclass() -> None:
    """`direction` is a property of the dataclass itself, not of file loading."""
    base = load_objective("digits")
    assert Objective(base.name, base.path, base.data, metric="val_loss").direction == "minimize"
    assert Objective(base.name, base.path, base.data, metric="val_accuracy").direction == "maximize"


def test_float_params_given_as_ints_become_floats(tmp_path: Path) -> None:
    """Integer constants, bounds, steps and choices of float parameters are stored as floats."""
    path = write(
        tmp_path,
        "s.toml",
        "[params]\nl2 = 0\nlearning_rate = 1\ndense_dropout = {choices = [0]}\n"
        "aug_erase = {low = 0, high = 1, step = 1}\n",
    )
    params = load_space(str(path)).params
    assert params["l2"] == Fixed(0.0) and type(params["l2"].value) is float
    assert params["learning_rate"] == Fixed(1.0) and type(params["learning_rate"].value) is float
    assert params["dense_dropout"] == Choice((0.0,)) and type(params["dense_dropout"].choices[0]) is float
    erase = params["aug_erase"]
    assert erase == Range(0.0, 1.0, step=1.0)
    assert [type(v) for v in (erase.low, erase.high, erase.step)] == [float, float, float]


def test_int_params_keep_ints(tmp_path: Path) -> None:
    """Integer parameters stay integers, steps included."""
    path = write(
        tmp_path,
        "s.toml",
        "[params]\ndense_layers = 2\ndense_units = {low = 32, high = 256, step = 32}\n"
        "conv_filters = {choices = [16, 32]}\n",
    )
    params = load_space(str(path)).params
    assert params["dense_layers"] == Fixed(2) and type(params["dense_layers"].value) is int
    units = params["dense_units"]
    assert units == Range(32, 256, step=32)
    assert [type(v) for v in (units.low, units.high, units.step)] == [int, int, int]
    assert all(type(v) is int for v in params["conv_filters"].choices)


def test_objective_numbers_are_typed(tmp_path: Path) -> None:
    """An integer timeout becomes seconds as a float; an image count above 1 stays an int subsample."""
    path = write(
        tmp_path,
        "o.toml",
        '[data]\nsource = "digits"\nsubsample = 500\nvalidation_fraction = 0.25\n[search]\ntimeout = 60\ntrials = 3\n',
    )
    objective = load_objective(str(path))
    assert objective.timeout == 60.0 and type(objective.timeout) is float
    assert objective.data.subsample == 500 and type(objective.data.subsample) is int
    assert (objective.trials, objective.data.validation_fraction) == (3, 0.25)
    assert (objective.space, objective.metric, objective.sampler) == ("cnn", "val_loss", "tpe")


def test_objective_data_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    """`dir`, `train` and `test` resolve against the objective file's folder, not the working folder."""
    path = write(tmp_path, "sub/o.toml", '[data]\nsource = "csv"\ntrain = "data/train.csv"\ndir = "/abs"\n')
    data = load_objective(str(path)).data
    assert data.train == (tmp_path / "sub" / "data" / "train.csv").resolve()
    assert data.dir == Path("/abs")


def test_objective_record_keeps_every_resolved_setting(tmp_path: Path) -> None:
    """What a study records rebuilds the very objective, data paths, class names and margin included."""
    write(tmp_path, "data/train.csv", "label,pixel1\n")
    path = write(
        tmp_path,
        "csv.toml",
        '[data]\nsource = "csv"\ntrain = "data/train.csv"\nclass_names = ["a", "b"]\n'
        "[search]\nseed = 4\n[promotion]\nmargin = 0.02\nrefit_seconds = 90\n",
    )
    for objective in (load_objective(str(path)), load_objective("fashion-mnist")):
        assert objective_from_record(objective_record(objective)) == objective
    assert objective_from_record(objective_record(load_objective(str(path)))).data.train == tmp_path / "data/train.csv"
