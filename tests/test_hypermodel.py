"""KerasTuner hypermodels run by atelier: the adapter's semantics against KerasTuner's own, then real searches."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import hypermodels
import keras_tuner
import numpy as np
import optuna
import pytest
from background import Background, Prepared
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial
from stores import atelier_case, journal_study, local_client

from search.backend import keras
from search.config.objectives import load_objective
from search.config.spaces import HypermodelRef, load_space
from search.data import load_search_data
from search.engine.train import fit
from search.errors import SetupError
from search.models.hypermodel import Hypermodel, TrialHyperParameters, fit_labels, training_params

optuna.logging.set_verbosity(optuna.logging.WARNING)

Declare = Callable[[keras_tuner.HyperParameters], object]
HERE = Path(__file__).parent
PROBABILITIES = np.arange(20_000) / 20_000  # KerasTuner draws a value from a probability in [0, 1)
DRAWS = 300  # trials of a study drawing through the adapter


def ref(name: str) -> HypermodelRef:
    return HypermodelRef(f"hypermodels:{name}", HERE)


def kerastuner_values(declare: Declare) -> set:
    """Every value KerasTuner's own hyperparameter produces, over a fine grid of its probabilities."""
    hp = keras_tuner.HyperParameters()
    declare(hp)
    (hyperparameter,) = hp.space
    return {_rounded(hyperparameter.prob_to_value(p)) for p in PROBABILITIES}


def adapter_values(declare: Declare) -> set:
    """Every value the adapter produces: each point of the Optuna distribution it suggests, fed back as a FixedTrial."""
    name, distribution = _suggested(declare)
    return {_rounded(declare(TrialHyperParameters(FixedTrial({name: value})))) for value in _support(distribution)}


def _suggested(declare: Declare) -> tuple[str, BaseDistribution]:
    trial = optuna.create_study().ask()
    declare(TrialHyperParameters(trial))
    ((name, distribution),) = trial.distributions.items()
    return name, distribution


def _support(distribution: BaseDistribution) -> list:
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    assert isinstance(distribution, FloatDistribution) and distribution.step is not None
    count = round((distribution.high - distribution.low) / distribution.step)
    return [distribution.low + k * distribution.step for k in range(count + 1)]


def _rounded(value: object) -> object:
    return round(value, 9) if isinstance(value, float) else value


FINITE = {
    "int-step": lambda hp: hp.Int("x", 6, 13, step=3),
    "int-docs-units": lambda hp: hp.Int("x", min_value=32, max_value=512, step=32),
    "int-log-step-multiplies": lambda hp: hp.Int("x", 2, 32, step=2, sampling="log"),
    "int-log-step-3": lambda hp: hp.Int("x", 1, 100, step=3, sampling="log"),
    "int-reverse-log-step": lambda hp: hp.Int("x", 1, 33, step=2, sampling="reverse_log"),
    "int-log": lambda hp: hp.Int("x", 1, 60, sampling="log"),
    "int-reverse-log": lambda hp: hp.Int("x", 1, 60, sampling="reverse_log"),
    "float-step-kerastuner-floor": lambda hp: hp.Float("x", 0.0, 1.0, step=0.2),
    "float-step-augment": lambda hp: hp.Float("x", 0.0, 0.5, step=0.05),
    "float-log-step": lambda hp: hp.Float("x", 0.001, 10, step=10, sampling="log"),
    "float-reverse-log-step": lambda hp: hp.Float("x", 0.5, 8.0, step=2, sampling="reverse_log"),
    "choice-ordered": lambda hp: hp.Choice("x", [16, 32, 64]),
    "choice-str": lambda hp: hp.Choice("x", ["relu", "tanh"]),
    "boolean": lambda hp: hp.Boolean("x"),
}


def adapter_draws(declare: Declare, count: int = DRAWS) -> list:
    """What the adapter returns over `count` real trials of a study (random sampler, seeded)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = []
    for _ in range(count):
        trial = study.ask()
        drawn.append(_rounded(declare(TrialHyperParameters(trial))))
        study.tell(trial, 0.0)
    return drawn


@pytest.mark.parametrize("declare", FINITE.values(), ids=FINITE.keys())
def test_the_adapter_draws_from_exactly_the_values_kerastuner_draws_from(declare: Declare) -> None:
    """Real draws land in KerasTuner's values (and cover a small set); the registered distribution yields them all."""
    theirs = kerastuner_values(declare)
    drawn = set(adapter_draws(declare))
    assert drawn <= theirs, f"drawn but never KerasTuner's: {sorted(drawn - theirs, key=str)}"
    if len(theirs) <= 20:  # log-uniform draws over 60 integers rarely reach the top ones in 300 trials
        assert drawn == theirs, f"never drawn: {sorted(theirs - drawn, key=str)}"
    assert adapter_values(declare) == theirs  # each point of Optuna's distribution, fed back, is KerasTuner's


def test_a_log_step_is_a_multiplier_as_kerastuner_documents() -> None:
    assert adapter_values(FINITE["int-log-step-multiplies"]) == {2, 4, 8, 16, 32}
    assert adapter_values(FINITE["float-log-step"]) == {0.001, 0.01, 0.1, 1.0, 10.0}


CONTINUOUS = {
    "float-linear": lambda hp: hp.Float("x", 0.1, 0.9),
    "float-log": lambda hp: hp.Float("x", 1e-4, 1e-2, sampling="log"),
    "float-reverse-log": lambda hp: hp.Float("x", 0.5, 0.999, sampling="reverse_log"),
}


@pytest.mark.parametrize("declare", CONTINUOUS.values(), ids=CONTINUOUS.keys())
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_continuous_values_have_kerastuners_distribution(declare: Declare, q: float) -> None:
    """The adapter's value at each quantile of Optuna's distribution is KerasTuner's at the same probability."""
    name, distribution = _suggested(declare)
    low, high = distribution.low, distribution.high
    mirrored = name.endswith(":mirrored")  # reverse_log: Optuna draws min + max - value on a log scale
    u = 1 - q if mirrored else q
    drawn = low * (high / low) ** u if distribution.log else low + u * (high - low)
    ours = declare(TrialHyperParameters(FixedTrial({name: drawn})))
    hp = keras_tuner.HyperParameters()
    declare(hp)
    assert ours == pytest.approx(hp.space[0].prob_to_value(q))


def test_reverse_log_is_drawn_as_its_mirror_image_on_a_log_scale() -> None:
    name, distribution = _suggested(CONTINUOUS["float-reverse-log"])
    assert name == "x:mirrored" and distribution == FloatDistribution(0.5, 0.999, log=True)


def declare_branches(hp: keras_tuner.HyperParameters) -> dict[str, object]:
    """Two branches that reuse names with other types: KerasTuner counts them as other hyperparameters."""
    kind = hp.Choice("kind", ["a", "b"])
    with hp.conditional_scope("kind", ["a"]):
        width = hp.Int("width", 1, 4)
    with hp.conditional_scope("kind", ["b"]):
        width_b = hp.Choice("width", ["narrow", "wide"])
    rate = hp.Float("rate", 0.0, 0.5, parent_name="kind", parent_values=["b"])
    return {"kind": kind, "width": width if kind == "a" else width_b, "rate": rate}


def test_inactive_hyperparameters_return_none_and_are_neither_drawn_nor_in_values() -> None:
    hp = TrialHyperParameters(FixedTrial({"kind": "a", "kind:a/width": 3}))
    assert declare_branches(hp) == {"kind": "a", "width": 3, "rate": None}
    assert hp.values == {"kind": "a", "width": 3}
    assert hp.trial.params == {"kind": "a", "kind:a/width": 3}
    assert [p.name for p in hp.space] == ["kind", "width", "width", "rate"]


def test_the_adapter_agrees_with_kerastuner_given_the_same_values() -> None:
    """KerasTuner with `values` set (as its oracle does) and the adapter on a FixedTrial build the same."""
    for kind, params in (("b", {"kind:b/width": "wide", "kind:b/rate": 0.25}), ("a", {"kind:a/width": 2})):
        ours = TrialHyperParameters(FixedTrial({"kind": kind} | params))
        theirs = keras_tuner.HyperParameters()
        theirs.values = {"kind": kind} | {name.split("/")[-1]: value for name, value in params.items()}
        assert declare_branches(ours) == declare_branches(theirs)
        assert ours.values == theirs.values
        assert [(p.name, p.conditions) for p in ours.space] == [(p.name, p.conditions) for p in theirs.space]


def test_conditional_names_keep_each_branch_apart_across_trials() -> None:
    """Optuna refuses one name with two kinds of distribution in a study; conditional names never collide."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        values = declare_branches(TrialHyperParameters(trial))
        expected = {"kind", "kind:a/width"} if values["kind"] == "a" else {"kind", "kind:b/width", "kind:b/rate"}
        assert set(trial.params) == expected
        study.tell(trial, 0.0)
    assert {t.params["kind"] for t in study.trials} == {"a", "b"}


def test_a_name_asked_for_again_returns_its_first_value() -> None:
    trial = optuna.create_study().ask()
    hp = TrialHyperParameters(trial)
    first = hp.Int("units", 1, 100)
    with hp.name_scope("block"):
        scoped = hp.Int("units", 1, 100)
    hp.Fixed("deep", True)
    with hp.conditional_scope("deep", [True]):
        assert hp.Int("depth", 1, 3) == hp.Int("depth", 1, 3)
    assert hp.Int("units", 500, 600) == first  # KerasTuner too: the name already holds a value
    assert hp.get("block/units") == scoped
    assert set(trial.params) == {"units", "block/units", "deep:True/depth"}


def test_fixed_values_are_kept_but_not_suggested_and_it_is_kerastuners_class() -> None:
    trial = optuna.create_study().ask()
    hp = TrialHyperParameters(trial)
    assert isinstance(hp, keras_tuner.HyperParameters)
    assert hp.Fixed("optimizer", "adam") == "adam"
    assert hp.Int("units", 8, 8) == 8
    assert hp.values == {"optimizer": "adam", "units": 8} and set(trial.params) == {"units"}
    assert TrialHyperParameters(FixedTrial({"units": 8})).Fixed("optimizer", "adam") == "adam"


def test_promotion_rebuilds_a_trials_values_from_its_params() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for name in ("build_model", "build_by_type", "MyHyperModel", "build_augmented"):
        hypermodel = Hypermodel(ref(name))
        trial = study.ask()
        drawn = TrialHyperParameters(trial)
        model = hypermodel.model(drawn, hypermodels.DIGITS_SHAPE)
        again = TrialHyperParameters(FixedTrial(trial.params))
        rebuilt = hypermodel.model(again, hypermodels.DIGITS_SHAPE)
        assert again.values == drawn.values and rebuilt.count_params() == model.count_params()
        study.tell(trial, 0.0)
        keras.backend.clear_session()


COMPILING = """
import keras

def uncompiled(hp):
    return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])

def compiled_without_accuracy(hp):
    model = uncompiled(hp)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model
"""


def compiled(hypermodel: HypermodelRef) -> keras.Model:
    """The hypermodel's model with KerasTuner's default values, for 8x8 images."""
    return Hypermodel(hypermodel).model(keras_tuner.HyperParameters(), (8, 8, 1))


def test_compiling_labels_and_batch_size_follow_the_hypermodel(tmp_path: Path) -> None:
    (tmp_path / "hm_compiling.py").write_text(COMPILING)
    labels = np.array([0, 3, 9])
    model = compiled(HypermodelRef("hm_compiling:uncompiled", tmp_path))
    assert model.built and model.get_compile_config()["metrics"] == ["accuracy"]
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert fit_labels(model, labels, 10) is labels
    model = compiled(HypermodelRef("hm_compiling:compiled_without_accuracy", tmp_path))
    assert model.get_compile_config()["metrics"] == ["accuracy"]
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    categorical = compiled(ref("build_model"))
    assert fit_labels(categorical, labels, 10).tolist() == keras.utils.to_categorical(labels, 10).tolist()
    assert training_params(TrialHyperParameters(FixedTrial({"units": 32, "batch_size": 16}))) == {"batch_size": 128}
    hp = TrialHyperParameters(FixedTrial({"units": 32, "batch_size": 16}))
    Hypermodel(ref("MyHyperModel")).model(hp, (8, 8, 1))
    assert training_params(hp) == {"batch_size": 16}


def test_hyper_image_augment_inside_a_model_trains_saves_and_reloads(tmp_path: Path) -> None:
    data = load_search_data(load_objective("digits"))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    hp = TrialHyperParameters(trial)
    model = Hypermodel(ref("build_augmented")).model(hp, data.input_shape)
    assert set(trial.params) == {"factor_rotate", "factor_translate_x", "factor_translate_y", "units", "learning_rate"}
    assert all(round(trial.params[f"factor_{name}"] / 0.05, 9).is_integer() for name in ("rotate", "translate_x"))
    result = fit(model, data, training_params(hp), max_epochs=1, monitor="val_loss", direction="minimize")
    assert {"val_loss", "val_accuracy"} <= set(result.history[0])
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(reloaded.get_weights(), model.get_weights(), strict=False))


def test_a_class_that_needs_arguments_or_a_broken_module_is_a_setup_error(tmp_path: Path) -> None:
    (tmp_path / "hm_needs_args.py").write_text(
        "import keras_tuner\n\nclass Needy(keras_tuner.HyperModel):\n    def __init__(self, classes):\n"
        "        super().__init__()\n\n    def build(self, hp):\n        return None\n"
    )
    (tmp_path / "hm_broken.py").write_text("def build(hp)\n    return None\n")
    with pytest.raises(SetupError, match=r"cannot make Needy\(\) \(TypeError: .*classes.*name an instance"):
        Hypermodel(HypermodelRef("hm_needs_args:Needy", tmp_path))
    with pytest.raises(SetupError, match="module hm_broken fails as it loads \\(SyntaxError"):
        Hypermodel(HypermodelRef("hm_broken:build", tmp_path))
    assert not (tmp_path / "__pycache__").exists()


def test_a_space_file_names_a_hypermodel(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('description = "KerasTuner\'s getting-started model"\nhypermodel = "hypermodels:build_model"\n')
    space = load_space(str(path))
    assert space.hypermodel.reference == "hypermodels:build_model" and space.params == {}
    assert space.hypermodel.folder == Path.cwd().resolve()


def load(workdir: Path, name: str) -> tuple[optuna.Study, list]:
    """The study and its trial runs, by trial number."""
    study, client = journal_study(workdir, name), local_client(workdir)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`atelier.kind` = 'trial'")
    return study, sorted(runs, key=lambda r: int(r.data.tags["atelier.trial_number"]))


def search_and_promote_hypermodels(workdir: Path) -> dict[str, dict[str, object]]:
    """As a user would: their module beside them, `atelier run --hypermodel`, then a space file, then promote.

    Run in the background (conftest.BACKGROUND): each command's exit status and output, by step.
    """
    shutil.copy(HERE / "hypermodels.py", workdir / "my_hypermodels.py")
    ran = {
        "by-reference": atelier_case(
            workdir,
            "run",
            "--objective",
            "digits",
            "--hypermodel",
            "my_hypermodels:build_model",
            "--trials",
            "3",
            "--max-epochs",
            "2",
            "--workers",
            "1",
            "--quiet",
        )
    }
    (workdir / "spaces").mkdir()
    (workdir / "spaces" / "by-type.toml").write_text('hypermodel = "my_hypermodels:build_by_type"\n')
    ran["by-space"] = atelier_case(
        workdir,
        "run",
        "--objective",
        "digits",
        "--space",
        "by-type",
        "--trials",
        "4",
        "--max-epochs",
        "1",
        "--workers",
        "1",
        "--sampler",
        "random",
        "--quiet",
    )
    ran["promote"] = atelier_case(workdir, "promote", "--study", "digits-my_hypermodels.build_model")
    return ran


@pytest.fixture(scope="module")
def hypermodel_searches(background: Background) -> Prepared:
    return background.result("hypermodel_searches")


@pytest.mark.e2e
def test_a_hypermodel_in_the_working_folder_is_searched_recorded_and_promoted(hypermodel_searches: Prepared) -> None:
    """`search_and_promote_hypermodels`: the module by reference, then through a space file, then promoted."""
    workdir, ran = hypermodel_searches.folder, hypermodel_searches.printed
    assert ran["by-reference"]["status"] == 0, ran["by-reference"]["err"]
    study, runs = load(workdir, "digits-my_hypermodels.build_model")
    assert study.user_attrs["space_file"] == 'hypermodel = "my_hypermodels:build_model"\n'
    assert len(study.trials) == len(runs) == 3
    for trial, run in zip(study.trials, runs, strict=False):
        assert {"num_layers", "activation", "dropout", "lr"} <= set(trial.params)
        assert {f"units_{i}" for i in range(trial.params["num_layers"])} <= set(trial.params)
        assert run.data.params == {name: str(value) for name, value in trial.params.items()}
        if trial.state.name == "COMPLETE":
            assert set(trial.intermediate_values) == {1, 2}  # the pruner saw val_loss after every epoch

    assert ran["by-space"]["status"] == 0, ran["by-space"]["err"]
    study, runs = load(workdir, "digits-by-type")
    for trial, run in zip(study.trials, runs, strict=False):
        kind = trial.params["model_type"]
        assert set(trial.params) == {"model_type", f"model_type:{kind}/{'units' if kind == 'mlp' else 'filters'}"}
        assert set(run.data.params) == {"model_type", "units" if kind == "mlp" else "filters"}

    assert ran["promote"]["status"] == 0, ran["promote"]["err"]
    assert "test: accuracy" in ran["promote"]["out"] and "model: models:/digits/1" in ran["promote"]["out"]
