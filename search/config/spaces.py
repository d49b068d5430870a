"""Read and validate `spaces/*.toml` into a frozen `Space`: each parameter fixed, a range or a list of choices.

Every error is a `SetupError` whose one line names the file, the key and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from search.config.checked_toml import Where, did_you_mean, read_toml, reject_unknown
from search.config.files import resolve
from search.config.schema import PARAMETERS, ParamSpec, Scalar
from search.errors import SetupError

PER_BLOCK = re.compile(r"(\w+?)_(\d+)")  # conv_filters_2: one block's own range of a per-block parameter
HYPERMODEL_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class Fixed:
    """A parameter held at one value."""

    value: Scalar


@dataclass(frozen=True)
class Range:
    """A numeric parameter drawn from [low, high], on a log scale or in steps."""

    low: int | float
    high: int | float
    log: bool = False
    step: int | float | None = None


@dataclass(frozen=True)
class Choice:
    """A parameter drawn from a list of values."""

    choices: tuple[Scalar, ...]


Distribution = Fixed | Range | Choice


@dataclass(frozen=True)
class HypermodelRef:
    """A KerasTuner hypermodel named `package.module:attribute`, imported from `folder` (the working folder)."""

    reference: str
    folder: Path = field(default_factory=lambda: Path.cwd().resolve())


@dataclass(frozen=True)
class Space:
    """What may vary in a search, and within what range: `params`, or a KerasTuner hypermodel that declares them."""

    name: str
    path: Path
    params: Mapping[str, Distribution]
    description: str = ""
    text: str = ""
    hypermodel: HypermodelRef | None = None
    reference: Mapping[str, Scalar] = field(default_factory=dict)  # a known configuration, run as the first trial

    def distribution(self, name: str) -> Distribution:
        """The distribution of a sampled name: `conv_filters_2` has its own when the file gives one, else
        `conv_filters`'s; a parameter the file leaves out stays at its default."""
        if name in self.params:
            return self.params[name]
        block = PER_BLOCK.fullmatch(name)
        base = block.group(1) if block else name
        return self.params.get(base, Fixed(PARAMETERS[base].default))


def load_space(name_or_path: str) -> Space:
    """Read and validate a search-space file; one with nothing to search (no parameter, no hypermodel) is refused."""
    path = resolve("spaces", name_or_path)
    text, table = read_toml(path)
    where = Where(path)
    reject_unknown(where, "", table, ("description", "params", "hypermodel", "reference"))
    description = table.get("description", "")
    where.require(isinstance(description, str), "description", "must be a string")
    if "hypermodel" in table:
        where.require(
            "params" not in table,
            "hypermodel",
            "give either hypermodel or [params], not both: a hypermodel declares its own parameters",
        )
        reference = table["hypermodel"]
        problem = _reference_problem(reference)
        where.require(problem is None, "hypermodel", str(problem))
        return Space(
            name=path.stem,
            path=path,
            params={},
            description=description,
            text=text,
            hypermodel=HypermodelRef(reference),
        )
    params_table = table.get("params", {})
    where.require(isinstance(params_table, dict), "params", "must be a table: [params]")
    params: dict[str, Distribution] = {}
    for key, raw in sorted(params_table.items(), key=lambda item: _block_of(item[0]) is not None):  # counts first
        params[key] = _distribution(where, f"params.{key}", _param_spec(where, key, params), raw)
    space = Space(name=path.stem, path=path, params=params, description=description, text=text)
    reference = table.get("reference", {})
    where.require(isinstance(reference, dict), "reference", "must be a table: [reference]")
    for key, value in reference.items():
        _check_reference(where, space, key, value)
    where.require(
        "params" in table,
        "",
        "no [params] table and no hypermodel: nothing to search; "
        'add [params] with at least one parameter, or hypermodel = "package.module:build"',
    )
    where.require(
        bool(params),
        "params",
        "the table is empty: nothing to search; add at least one parameter, e.g. dense_units = {choices = [64, 128]}",
    )
    return replace(space, reference=reference)


def _block_of(key: str) -> tuple[ParamSpec, int] | None:
    """The per-block parameter and block index that `key` names (`conv_filters_2`), or None."""
    block = PER_BLOCK.fullmatch(key)
    if block is None or key in PARAMETERS:
        return None
    spec = PARAMETERS.get(block.group(1))
    return (spec, int(block.group(2))) if spec is not None and spec.per else None


def _param_spec(where: Where, key: str, params: Mapping[str, Distribution]) -> ParamSpec:
    """The parameter a [params] key names: a parameter, or one block of a per-block one (`conv_filters_2`),
    which must exist for the largest count the space draws (`params` holds the counts already read)."""
    block = _block_of(key)
    if block is not None:
        spec, index = block
        count = largest(params.get(spec.per, Fixed(PARAMETERS[spec.per].default)))
        where.require(
            index < count,
            f"params.{key}",
            f"block {index} does not exist: {spec.per} is at most {count}; number blocks from 0",
        )
        return spec
    if key not in PARAMETERS:
        where.fail(f"params.{key}", f"unknown parameter{did_you_mean(key, PARAMETERS)}; known: {', '.join(PARAMETERS)}")
    return PARAMETERS[key]


def largest(distribution: Distribution) -> int:
    """The largest whole value a count's (or a number of epochs') distribution draws."""
    if isinstance(distribution, Fixed):
        return int(distribution.value)
    if isinstance(distribution, Choice):
        return int(max(distribution.choices))
    return int(distribution.high)


def _check_reference(where: Where, space: Space, key: str, value: Any) -> None:
    """A [reference] value must be one the space can draw for that name."""
    known = key in PARAMETERS or _block_of(key) is not None
    where.require(known, f"reference.{key}", f"unknown parameter{did_you_mean(key, PARAMETERS)}")
    distribution = space.distribution(key)
    where.require(
        not isinstance(value, bool) or isinstance(distribution, (Fixed, Choice)),
        f"reference.{key}",
        "is true or false but the space draws a number",
    )
    if isinstance(distribution, Fixed):
        inside = value == distribution.value
    elif isinstance(distribution, Choice):
        inside = value in distribution.choices
    else:
        inside = isinstance(value, (int, float)) and distribution.low <= value <= distribution.high
    where.require(inside, f"reference.{key}", f"{value!r} is outside the space's {_describe(distribution)}; change one")


def _describe(distribution: Distribution) -> str:
    if isinstance(distribution, Fixed):
        return f"fixed value {distribution.value!r}"
    if isinstance(distribution, Choice):
        return f"choices {list(distribution.choices)}"
    return f"range {distribution.low} to {distribution.high}"


def hypermodel_space(reference: str) -> Space:
    """The space of `atelier run --hypermodel package.module:attribute`, as if a file held that one line."""
    problem = _reference_problem(reference)
    if problem is not None:
        raise SetupError(f"--hypermodel {problem}")
    return Space(
        name=reference.replace(":", "."),
        path=Path(reference),
        params={},
        text=f'hypermodel = "{reference}"\n',
        hypermodel=HypermodelRef(reference),
    )


def _reference_problem(raw: Any) -> str | None:
    """Why `raw` does not name a hypermodel as package.module:attribute, or None when it does."""
    if isinstance(raw, str) and HYPERMODEL_REFERENCE.fullmatch(raw):
        return None
    return (
        f"{raw!r} is not package.module:attribute; name a build(hp) function or a keras_tuner.HyperModel, "
        'e.g. "mymodels:build_model"'
    )


def _distribution(where: Where, key: str, spec: ParamSpec, raw: Any) -> Distribution:
    if not isinstance(raw, dict):
        problem = spec.check(raw)
        where.require(problem is None, key, f"{problem}; fix the value")
        return Fixed(float(raw) if spec.type is float else raw)
    if "choices" in raw:
        reject_unknown(where, key, raw, ("choices",))
        choices = raw["choices"]
        where.require(isinstance(choices, list), key, "choices must be a list, e.g. {choices = [32, 64]}")
        where.require(len(choices) > 0, key, "choices is empty; list at least one value")
        for value in choices:
            problem = spec.check(value)
            where.require(problem is None, key, f"choice {problem}")
        return Choice(tuple(float(v) if spec.type is float else v for v in choices))
    reject_unknown(where, key, raw, ("low", "high", "log", "step"))
    where.require(
        spec.type in (int, float),
        key,
        f"a {spec.type.__name__} parameter takes a constant or {{choices = [...]}}, not a range",
    )
    where.require("low" in raw and "high" in raw, key, "a range needs both low and high, e.g. {low = 1, high = 3}")
    low, high = raw["low"], raw["high"]
    for bound, value in (("low", low), ("high", high)):
        problem = spec.check(value)
        where.require(problem is None, f"{key}.{bound}", f"{problem}")
    where.require(low <= high, key, f"low {low} is above high {high}; swap them")
    log = raw.get("log", False)
    where.require(isinstance(log, bool), f"{key}.log", "must be true or false")
    where.require(not log or low > 0, key, "a log range needs low > 0")
    step = raw.get("step")
    if step is not None:
        where.require(
            isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0,
            f"{key}.step",
            "must be a positive number",
        )
        where.require(spec.type is float or isinstance(step, int), f"{key}.step", "must be an integer")
        where.require(not log, key, "give either log = true or a step, not both")
    if spec.type is float:
        return Range(float(low), float(high), log, None if step is None else float(step))
    return Range(low, high, log, step)
