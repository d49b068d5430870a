"""Read and validate `objectives/*.toml` into a frozen `Objective`: data, split, metric, budget, promotion.

Every error is a `SetupError` whose one line names the file, the key and the fix.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from search.config.checked_toml import Where, read_toml, reject_unknown, typed
from search.config.data_table import DataConfig, data_config
from search.config.files import resolve
from search.config.schema import EPOCH_METRICS
from search.errors import SetupError

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("halving", "asha", "hyperband", "median", "none")


@dataclass(frozen=True)
class Objective:
    """What a search optimizes: data, split, monitored metric and budget."""

    name: str
    path: Path
    data: DataConfig
    space: str = "cnn"
    metric: str = "val_loss"
    trials: int = 20
    max_epochs: int = 10
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "halving"
    seed: int = 0
    max_params: int = 2_000_000
    warm_start: str | None = None  # an earlier study over the same space whose best trials run first
    margin: float = 0.0  # test accuracy a promoted model must add to the baseline's
    refit_seconds: float | None = None  # promotion's refit trains as many epochs as fit in this time

    @property
    def direction(self) -> str:
        """`minimize` for a loss, `maximize` for an accuracy."""
        return "minimize" if self.metric.endswith("loss") else "maximize"


def load_objective(name_or_path: str) -> Objective:
    """Read and validate an objective file."""
    path = resolve("objectives", name_or_path)
    _, table = read_toml(path)
    where = Where(path)
    reject_unknown(where, "", table, ("description", "data", "search", "promotion"))
    data = data_config(where, path, table.get("data"))
    search = table.get("search", {})
    where.require(isinstance(search, dict), "search", "must be a table: [search]")
    fields = {
        "space": str,
        "metric": str,
        "trials": int,
        "max_epochs": int,
        "timeout": float,
        "sampler": str,
        "pruner": str,
        "seed": int,
        "max_params": int,
        "warm_start": str,
    }
    reject_unknown(where, "search", search, tuple(fields))
    values = {key: typed(where, f"search.{key}", search[key], fields[key]) for key in search}
    promotion = table.get("promotion", {})
    where.require(isinstance(promotion, dict), "promotion", "must be a table: [promotion]")
    reject_unknown(where, "promotion", promotion, ("margin", "refit_seconds"))
    if "margin" in promotion:
        values["margin"] = typed(where, "promotion.margin", promotion["margin"], float)
        where.require(
            0 <= values["margin"] < 1, "promotion.margin", "must be a share of test accuracy from 0 up to 1, e.g. 0.01"
        )
    if "refit_seconds" in promotion:
        values["refit_seconds"] = typed(where, "promotion.refit_seconds", promotion["refit_seconds"], float)
    objective = Objective(name=path.stem, path=path, data=data, **values)
    return check_objective(objective, where)


def images_objective(folder: Path) -> Objective:
    """The objective of `--images DIR`: a folder objective with every other setting at its default.

    It is named after the folder (`images-NAME`), so the same command finds and resumes the same study, and
    it is recorded with the study like any objective, so promotion rebuilds the same splits.
    """
    root = folder.expanduser().resolve()
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "no such folder"
        raise SetupError(f"--images {folder}: {problem}; give --images a folder with one subfolder of images per class")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "folder"
    return check_objective(Objective(name=f"images-{slug}", path=root, data=DataConfig(source="folder", train=root)))


def check_objective(objective: Objective, where: Where | None = None) -> Objective:
    """Validate the search settings of an objective, after flags have overridden the file."""
    where = where or Where(objective.path)
    where.require(
        objective.metric in EPOCH_METRICS,
        "search.metric",
        f"training does not produce '{objective.metric}'; monitor one of {', '.join(EPOCH_METRICS)}",
    )
    where.require(
        objective.sampler in SAMPLERS,
        "search.sampler",
        f"unknown sampler '{objective.sampler}'; use one of {', '.join(SAMPLERS)}",
    )
    where.require(
        objective.pruner in PRUNERS,
        "search.pruner",
        f"unknown pruner '{objective.pruner}'; use one of {', '.join(PRUNERS)}",
    )
    where.require(objective.trials >= 1, "search.trials", "must be at least 1")
    where.require(objective.max_epochs >= 1, "search.max_epochs", "must be at least 1")
    where.require(objective.max_params >= 1, "search.max_params", "must be at least 1")
    where.require(0 <= objective.seed < 2**32, "search.seed", f"must be a whole number from 0 to {2**32 - 1}")
    where.require(
        objective.timeout is None or 0 < objective.timeout < math.inf,
        "search.timeout",
        "must be a positive number of seconds",
    )
    where.require(
        objective.refit_seconds is None or 0 < objective.refit_seconds < math.inf,
        "promotion.refit_seconds",
        "must be a positive number of seconds",
    )
    return objective


def objective_record(objective: Objective) -> str:
    """The objective as JSON, every setting resolved (paths absolute, flags applied), for a study to keep."""
    return json.dumps(asdict(objective), default=str, sort_keys=True)


def objective_from_record(record: str) -> Objective:
    """The objective that `objective_record` wrote."""
    values = json.loads(record)
    data = values.pop("data")
    for key in ("dir", "train", "test"):
        data[key] = None if data[key] is None else Path(data[key])
    data["class_names"] = tuple(data["class_names"])
    data["image_size"] = None if data["image_size"] is None else tuple(data["image_size"])
    return Objective(**values | {"path": Path(values["path"]), "data": DataConfig(**data)})
