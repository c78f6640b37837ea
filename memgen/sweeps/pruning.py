"""Optuna pruning for Lightning training trials.

optuna-integration's ``PyTorchLightningPruningCallback`` subclasses ``lightning.pytorch``'s
Callback, while memgen trains with the ``pytorch_lightning`` package (and neither
optuna-integration nor ``lightning`` is installed): the Trainer would reject it. This is the
same idea in a few lines: report the monitored value once per validation epoch, and when the
pruner says so, stop the Trainer gracefully (``should_stop``) instead of raising inside ``fit``
— an exception there would trigger the crash checkpoint and skip Lightning's teardown. The
trial raises ``optuna.TrialPruned`` after ``fit`` returns (:meth:`raise_if_pruned`).
"""

from __future__ import annotations

import math

import optuna
import pytorch_lightning as pl

MONITOR = "val/behavior_balance"


class OptunaPruning(pl.Callback):
    """Report ``monitor`` to the trial each validation epoch; stop training when pruned."""

    def __init__(self, trial: optuna.Trial, monitor: str = MONITOR) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None
        self.last_value: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at is not None:
            return
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is None:
            return
        value = float(metric)
        if not math.isfinite(value):
            return
        epoch = trainer.current_epoch
        self.last_value = value
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True

    def raise_if_pruned(self) -> None:
        if self.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {self.pruned_at}: {self.monitor}="
                                     f"{self.last_value:.4f} below the median of earlier trials")
