"""Fit one trial's model: pruning on the monitored metric, per-epoch reports, best-epoch weights, NaN guard."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna

from search.backend import keras
from search.config.schema import PLAIN_LOSS, Scalar
from search.data import SearchData
from search.engine.warm_start import SOURCE_ATTR
from search.errors import SetupError

EpochHook = Callable[[int, Mapping[str, float]], None]


class FitOutcome(enum.Enum):
    """How training ended."""

    COMPLETED = "completed"
    PRUNED = "pruned"
    DIVERGED = "diverged"


@dataclass
class FitResult:
    """What one fit produced; the model holds its best epoch's weights afterwards."""

    outcome: FitOutcome
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = 0.0
    reason: str = ""
    best_weights: list[np.ndarray] | None = None

    @property
    def epochs(self) -> int:
        """Epochs trained by this fit (a resumed fit's own, not those before its pause)."""
        return len(self.history)


@dataclass(frozen=True)
class Progress:
    """Where a paused fit stood: its best epoch so far (1-based), that epoch's metrics and weights."""

    best_epoch: int
    best: dict[str, float]
    best_weights: list[np.ndarray]


class _Diverged(Exception):
    pass


class _Watch(keras.callbacks.Callback):
    """Each epoch: guard against non-finite metrics, hand the metrics on, keep the best weights, prune."""

    def __init__(
        self,
        monitor: str,
        direction: str,
        trial: optuna.trial.BaseTrial | None,
        on_epoch: EpochHook | None,
        deadline: float | None,
        since: Progress | None = None,
    ) -> None:
        super().__init__()
        self.monitor, self.sign = monitor, (1.0 if direction == "minimize" else -1.0)
        self.trial, self.on_epoch, self.deadline = trial, on_epoch, deadline
        # A queued configuration (a space's [reference], a warm start) is there to be measured, not screened:
        # it reports to its rungs, so other trials are judged against it, but it runs to its last epoch.
        self.screened = trial is not None and SOURCE_ATTR not in trial.user_attrs
        self.history: list[dict[str, float]] = []
        self.best_epoch, self.best_score = 0, math.inf
        self.best: dict[str, float] = {}
        self.best_weights: list[np.ndarray] | None = None
        if since is not None:  # a resumed fit: its best so far was in an earlier part
            self.best_epoch, self.best, self.best_weights = since.best_epoch, dict(since.best), since.best_weights
            self.best_score = self.sign * since.best[monitor]

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        metrics = _judged_alike({name: float(value) for name, value in (logs or {}).items()})
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.history.append(metrics)
        step = epoch + 1
        if self.on_epoch is not None:
            self.on_epoch(step, metrics)
        if self.monitor not in metrics:
            raise SetupError(
                f"training does not produce '{self.monitor}' (it reports "
                f"{', '.join(sorted(metrics))}); monitor one of those"
            )
        broken = sorted(name for name, value in metrics.items() if not math.isfinite(value))
        if broken:
            raise _Diverged(f"{', '.join(broken)} became non-finite at epoch {step}")
        score = self.sign * metrics[self.monitor]
        if score < self.best_score:
            self.best_epoch, self.best_score, self.best = step, score, metrics
            self.best_weights = self.model.get_weights()
        if self.trial is not None:
            self.trial.report(metrics[self.monitor], step)
        if step == self.params["epochs"]:  # a finished fit is complete
            return
        if self.trial is not None and self.trial.should_prune() and self.screened:
            raise optuna.TrialPruned(f"pruned at epoch {step}: {self.monitor} {metrics[self.monitor]:.4f}")
        self._stop_at_the_deadline(f"after epoch {step}")

    def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
        self._stop_at_the_deadline(f"during epoch {len(self.history) + 1}")

    def _stop_at_the_deadline(self, when: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise optuna.TrialPruned(f"stopped at the search's timeout {when} of {self.params['epochs']}")


def _judged_alike(metrics: dict[str, float]) -> dict[str, float]:
    """`val_loss` as the plain cross-entropy on validation, when the model reports it (atelier's models do).

    Keras's validation loss is the training loss: smoothed labels and the L2 penalty raise it, so models
    with more of either would be judged worse for it alone; label smoothing and L2 shape the training
    loss only. `loss` stays what training minimized.
    """
    if f"val_{PLAIN_LOSS}" in metrics:
        metrics["val_loss"] = metrics.pop(f"val_{PLAIN_LOSS}")
    metrics.pop(PLAIN_LOSS, None)
    return metrics


class EpochSeeds(keras.callbacks.Callback):
    """At each epoch's start, every random generator of the model (dropout, augmentation) restarts from a state
    drawn from (`seed`, epoch) alone, so an epoch draws the same masks whether the fit was paused before it or
    not (Keras saves no generator's state with a model)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        generators = [g for layer in self.model._flatten_layers() for g in layer._seed_generators]  # noqa: SLF001
        for index, generator in enumerate(generators):
            generator.state.assign(np.array([self.seed * 1_000 + index, epoch << 32], dtype=generator.state.dtype))


class EpochSchedule(keras.callbacks.Callback):
    """The learning rate of each epoch, set at its start: `warmup` epochs rising linearly to `initial`, then
    `initial` held or decayed to zero along a cosine over the rest of the trial's epoch budget."""

    def __init__(self, initial: float, epochs: int, warmup: int = 0, cosine: bool = False) -> None:
        super().__init__()
        self.initial, self.epochs, self.warmup, self.cosine = initial, epochs, min(warmup, epochs - 1), cosine

    def rate(self, epoch: int) -> float:
        if epoch < self.warmup:
            return self.initial * (epoch + 1) / (self.warmup + 1)
        if not self.cosine:
            return self.initial
        span = max(1, self.epochs - self.warmup)  # a horizon re-planned shorter than the warm-up decays at once
        return self.initial * 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - self.warmup) / span)))

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.model.optimizer.learning_rate = self.rate(epoch)


class TimedEpochs(keras.callbacks.Callback):
    """Train as many epochs as fit in `seconds` (at most the fit's `epochs`), re-planned after each epoch from
    the epochs' measured time; a `schedule`'s horizon follows the plan, so its decay ends with the training.

    The first epoch (which also traces the graph) plans alone; later plans use the later epochs' median.
    """

    def __init__(self, seconds: float, schedule: EpochSchedule | None = None) -> None:
        super().__init__()
        self.seconds, self.schedule = seconds, schedule
        self.durations: list[float] = []
        self.planned = 0

    def on_train_begin(self, logs: Mapping[str, float] | None = None) -> None:
        self.started = time.monotonic()
        self.planned = int(self.params["epochs"])

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        now = time.monotonic()
        self.durations.append(now - self.epoch_started)
        done = epoch + 1
        pace = self.durations[0] if done == 1 else float(np.median(self.durations[1:]))
        left = self.seconds - (now - self.started)
        self.planned = min(int(self.params["epochs"]), done + max(0, int(left // pace)))
        if self.schedule is not None:
            self.schedule.epochs = self.planned
        if done >= self.planned:
            self.model.stop_training = True


def schedule_callbacks(params: Mapping[str, Scalar], epochs: int) -> list[keras.callbacks.Callback]:
    """The learning-rate schedule the parameters ask for, over `epochs`; none for a constant rate."""
    cosine, warmup = params.get("lr_schedule") == "cosine", int(params.get("warmup_epochs", 0))
    if not (cosine or warmup):
        return []
    return [EpochSchedule(float(params["learning_rate"]), epochs, warmup, cosine)]


def timed_callbacks(params: Mapping[str, Scalar], seconds: float, cap: int) -> list[keras.callbacks.Callback]:
    """The parameters' schedule and a `TimedEpochs` (last) that trains as many epochs, up to `cap`, as fit in
    `seconds`, the schedule's horizon following its plan; pass `epochs=cap` to the fit."""
    callbacks = schedule_callbacks(params, cap)
    return [*callbacks, TimedEpochs(seconds, next(iter(callbacks), None))]


def fit(
    model: keras.Model,
    data: SearchData,
    params: Mapping[str, Scalar],
    *,
    max_epochs: int,
    monitor: str,
    direction: str,
    trial: optuna.trial.BaseTrial | None = None,
    on_epoch: EpochHook | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    epochs: int | None = None,
    initial_epoch: int = 0,
    deadline: float | None = None,
    verbose: int = 0,
    seed: int = 0,
    since: Progress | None = None,
    pausing: bool = False,
) -> FitResult:
    """Train from epoch `initial_epoch` up to epoch `epochs` (default `max_epochs`, the schedule's length),
    reporting `monitor` to `trial`; the batches' order and the model's random draws of each epoch come from
    `seed` and the epoch alone (`EpochOrder`, `EpochSeeds`).

    `callbacks` see each epoch before the pruner judges it. A completed fit ends holding its best
    epoch's weights (`since` holds the best of the epochs before `initial_epoch`), unless it is `pausing`: then
    it keeps its last weights, to be resumed, and the result carries the best. A non-finite metric stops it as
    diverged; a batch or an epoch that ends past `deadline` (a `time.monotonic()` reading), with epochs still
    to go, stops it as pruned.
    """
    from search.data.batches import EpochOrder, steps

    watch = _Watch(monitor, direction, trial, on_epoch, deadline, since)
    schedule = schedule_callbacks(params, max_epochs)
    outcome, reason = FitOutcome.COMPLETED, ""
    batch_size = int(params["batch_size"])
    started = time.perf_counter()
    try:
        model.fit(
            data.train.batches(batch_size, shuffle=EpochOrder(seed, initial_epoch)),
            epochs=epochs or max_epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps(len(data.train), batch_size),
            validation_data=data.val.batches(batch_size, shuffle=False),
            shuffle=False,  # the batches are shuffled
            callbacks=[EpochSeeds(seed), *schedule, *callbacks, watch],
            verbose=verbose,
        )
    except optuna.TrialPruned as pruned:
        outcome, reason = FitOutcome.PRUNED, str(pruned)
    except _Diverged as diverged:
        outcome, reason = FitOutcome.DIVERGED, str(diverged)
    fit_seconds = time.perf_counter() - started
    if watch.best_weights is not None and outcome is FitOutcome.COMPLETED and not pausing:
        model.set_weights(watch.best_weights)
    return FitResult(outcome, watch.history, watch.best_epoch, watch.best, fit_seconds, reason, watch.best_weights)
