"""Drawing a trial's parameters from a space: every schema parameter, per block, reproducibly."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial

from search.config.schema import PARAMETERS, Scalar
from search.config.spaces import Choice, Distribution, Fixed, Range, Space, load_space
from search.models.sampling import sample

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_space(**params: Distribution) -> Space:
    """A space built in memory, as if read from a file."""
    return Space(name="test", path=Path("test.toml"), params=params)


def pick(distribution: Distribution, index: int = 0) -> Scalar:
    """A value the distribution can produce: the index-th choice (cycling), or the high end of a range."""
    if isinstance(distribution, Choice):
        return distribution.choices[index % len(distribution.choices)]
    assert isinstance(distribution, Range)
    return distribution.high


def trial_values(space: Space, **counts: int) -> dict[str, Scalar]:
    """A FixedTrial's params: a value for every distribution the space searches, with the given block counts."""
    values: dict[str, Scalar] = dict(counts)
    for name, spec in PARAMETERS.items():
        distribution = space.params.get(name)
        if distribution is None or isinstance(distribution, Fixed) or name in counts:
            continue
        parent = spec.per or spec.requires
        count = counts.get(parent, PARAMETERS[parent].default) if parent else 1
        if spec.per is not None:
            values.update({f"{name}_{i}": pick(distribution, i) for i in range(count)})
        elif count:
            values[name] = pick(distribution)
    return values


def expected_names(counts: dict[str, int]) -> set[str]:
    """The names a sample holds for the given block counts, read off the schema."""
    names = set()
    for name, spec in PARAMETERS.items():
        if spec.requires is not None and not counts[spec.requires]:
            continue
        names |= {f"{name}_{i}" for i in range(counts[spec.per])} if spec.per else {name}
    return names


@pytest.mark.parametrize(
    ("space_name", "counts"),
    [
        ("dense", {"dense_layers": 1}),
        ("dense", {"dense_layers": 3}),
        ("cnn", {"conv_blocks": 1, "dense_layers": 0}),
        ("cnn", {"conv_blocks": 3, "dense_layers": 2}),
    ],
)
def test_shipped_space_every_parameter(space_name: str, counts: dict[str, int]) -> None:
    """Every schema parameter that applies is present: the trial's values where searched, defaults elsewhere."""
    space = load_space(space_name)
    values = trial_values(space, **counts)
    params = sample(FixedTrial(values), space)
    all_counts = {"conv_blocks": PARAMETERS["conv_blocks"].default} | counts
    assert set(params) == expected_names(all_counts)
    assert set(values) <= set(params)
    for name, value in values.items():
        assert params[name] == value and type(params[name]) is type(value), name
    for name, spec in PARAMETERS.items():
        if name not in space.params and name in params:
            assert params[name] == spec.default, name


def test_dense_space_defaults_and_no_conv() -> None:
    """`dense` leaves the convolution count at its default 0, so no conv_* parameter but the count exists."""
    space = load_space("dense")
    params = sample(FixedTrial(trial_values(space, dense_layers=2)), space)
    assert [name for name in params if name.startswith("conv_")] == ["conv_blocks"]
    assert params["conv_blocks"] == 0
    assert (params["optimizer"], params["lr_schedule"], params["aug_flip"], params["aug_erase"]) == (
        "adam",
        "constant",
        False,
        0.0,
    )
    assert (params["dense_units_0"], params["dense_units_1"]) == (64, 128)
    assert "dense_units_2" not in params


def test_per_block_parameters_follow_the_count() -> None:
    """conv_blocks = 2 gives conv_filters_0 and _1, not _2, even when the trial holds a value for it."""
    space = load_space("cnn")
    values = trial_values(space, conv_blocks=2, dense_layers=1) | {"conv_filters_2": 96, "dense_units_1": 256}
    params = sample(FixedTrial(values), space)
    assert (params["conv_filters_0"], params["conv_filters_1"]) == (16, 32)
    assert "conv_filters_2" not in params and "conv_filters" not in params
    assert params["dense_units_0"] == 64
    assert "dense_units_1" not in params and "dense_units" not in params


def test_a_block_of_its_own_draws_from_its_own_range(tmp_path: Path) -> None:
    """`conv_filters_2 = {...}` bounds block 2 only; the other blocks draw from `conv_filters`."""
    path = tmp_path / "widening.toml"
    path.write_text(
        "[params]\nconv_blocks = 3\nconv_filters = {choices = [8, 16]}\nconv_filters_2 = {choices = [64, 96]}\n"
    )
    space = load_space(str(path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [sample(study.ask(), space) for _ in range(20)]
    assert {d["conv_filters_0"] for d in drawn} | {d["conv_filters_1"] for d in drawn} == {8, 16}
    assert {d["conv_filters_2"] for d in drawn} == {64, 96}
    assert space.distribution("conv_filters_1") == Choice((8, 16)) and space.distribution("l2") == Fixed(0.0)


def test_the_reference_is_the_first_trial_of_cnn_best() -> None:
    """cnn-best's [reference] (the hand-made model) is a configuration of the space: enqueued, it is drawn as is."""
    space = load_space("cnn-best")
    study = optuna.create_study()
    study.enqueue_trial(dict(space.reference))
    first = sample(study.ask(), space)
    assert {name: first[name] for name in space.reference} == dict(space.reference)
    assert (first["conv_filters_0"], first["conv_filters_1"], first["conv_filters_2"]) == (32, 64, 128)


def test_requires_drops_parameters_of_absent_blocks() -> None:
    """With zero conv blocks and zero dense layers, nothing that describes them is drawn or returned."""
    space = make_space(
        conv_blocks=Range(0, 2),
        conv_filters=Choice((8, 16)),
        conv_dropout=Range(0.0, 0.5),
        dense_layers=Range(0, 2),
        dense_units=Choice((32, 64)),
        dense_batch_norm=Choice((True,)),
    )
    params = sample(FixedTrial({"conv_blocks": 0, "dense_layers": 0}), space)
    assert params["conv_blocks"] == 0 and params["dense_layers"] == 0
    assert not [
        name for name in params if name.startswith(("conv_", "dense_")) and name not in ("conv_blocks", "dense_layers")
    ]
    with_blocks = sample(
        FixedTrial(
            {
                "conv_blocks": 1,
                "dense_layers": 1,
                "conv_filters_0": 16,
                "conv_dropout": 0.25,
                "dense_units_0": 32,
                "dense_batch_norm": True,
            }
        ),
        space,
    )
    assert with_blocks["conv_padding"] == "same" and with_blocks["conv_dropout"] == 0.25
    assert with_blocks["dense_batch_norm"] is True and with_blocks["dense_dropout"] == 0.0


def test_a_missing_value_is_an_error() -> None:
    """A FixedTrial lacking a searched parameter cannot be silently filled with a default."""
    space = load_space("dense")
    values = trial_values(space, dense_layers=2)
    del values["dense_units_1"]
    with pytest.raises(ValueError, match="dense_units_1"):
        sample(FixedTrial(values), space)


@pytest.mark.parametrize("space_name", ["dense", "cnn"])
def test_trial_params_rebuild_the_same_dict(space_name: str) -> None:
    """Promotion re-samples a stored trial's params through FixedTrial and gets exactly what the trial used."""
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    counts = set()
    for _ in range(20):
        trial = study.ask()
        drawn = sample(trial, space)
        rebuilt = sample(FixedTrial(trial.params), space)
        assert rebuilt == drawn
        assert {k: type(v) for k, v in rebuilt.items()} == {k: type(v) for k, v in drawn.items()}
        study.tell(trial, 0.0)
        counts.add((drawn["conv_blocks"], drawn["dense_layers"]))
    assert len(counts) > 1


def test_fixed_values_are_returned_but_not_suggested() -> None:
    """A constant reaches the model's params but is not an Optuna parameter of the trial."""
    space = make_space(
        optimizer=Fixed("sgd"),
        batch_size=Fixed(32),
        dense_layers=Range(1, 2),
        dense_units=Fixed(48),
        learning_rate=Range(1e-4, 1e-2, log=True),
    )
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = sample(trial, space)
    assert (params["optimizer"], params["batch_size"], params["dense_units_0"]) == ("sgd", 32, 48)
    varying = {name for name, dist in space.params.items() if not isinstance(dist, Fixed)}
    assert set(trial.params) == {"dense_layers", "learning_rate"} == varying
    assert sample(FixedTrial(trial.params), space) == params


def draws(space: Space, name: str, n: int = 200) -> list[Scalar]:
    """`n` values of one parameter drawn by a seeded random sampler."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    return [sample(study.ask(), space)[name] for _ in range(n)]


def test_float_range_respects_step() -> None:
    """dense_dropout in steps of 0.05 within [0, 0.5], as the shipped spaces give it."""
    values = draws(load_space("dense"), "dense_dropout")
    assert all(type(v) is float and 0.0 <= v <= 0.5 for v in values)
    assert all(math.isclose(v / 0.05, round(v / 0.05), abs_tol=1e-9) for v in values)
    assert len(set(round(v / 0.05) for v in values)) == 11


def test_int_range_respects_step() -> None:
    """An integer range with a step only yields integers on that grid."""
    values = draws(make_space(dense_units=Range(32, 256, step=32)), "dense_units_0")
    assert all(type(v) is int and v % 32 == 0 and 32 <= v <= 256 for v in values)
    assert set(values) == set(range(32, 257, 32))


def test_log_range_draws_on_a_log_scale() -> None:
    """l2 in [1e-7, 1e-3] on a log scale: most draws sit below 1e-4, which a linear scale would rarely give."""
    values = draws(load_space("dense"), "l2")
    assert all(type(v) is float and 1e-7 <= v <= 1e-3 for v in values)
    assert sum(v < 1e-4 for v in values) > 0.6 * len(values)
    assert min(values) < 1e-6
