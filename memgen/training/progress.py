"""One progress line per epoch for logs (``nohup``, CI): a progress bar writes nothing useful
when stdout is not a terminal."""

from __future__ import annotations

import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.utilities.rank_zero import rank_zero_only

SHOWN = ("train/loss_epoch", "val/mem_rate", "val/gen_rate", "val/other_rate",
         "val/behavior_balance", "val/pair_yield")


def stdout_is_terminal() -> bool:
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


class EpochLine(pl.Callback):
    """Prints ``epoch 3/25 train/loss_epoch 0.81 val/mem_rate 0.25 ... (12s)`` after each
    epoch, flushed, so a log file shows progress as it happens."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        parts = [f"{key} {float(metrics[key]):.3f}" for key in SHOWN if key in metrics]
        elapsed = time.monotonic() - self.started
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} {' '.join(parts)} "
              f"({elapsed:.0f}s)", flush=True)
