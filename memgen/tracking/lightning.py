"""Lightning <-> MLflow glue: a logger bound to memgen's run, and the checkpoint callbacks."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from memgen.tracking.interrupts import deferring
from memgen.tracking.run import TrackedRun


class RunLogger(MLFlowLogger):
    """MLFlowLogger that logs into an existing run and leaves its end status to memgen.

    Lightning's logger would mark the run FINISHED when ``fit`` returns, before the analysis
    stages have run; ``tracked_run`` sets the real end state.
    """

    @rank_zero_only
    @deferring
    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, step)

    @rank_zero_only
    @deferring
    def log_hyperparams(self, params) -> None:
        super().log_hyperparams(params)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self._checkpoint_callback is not None and self._log_model:
            self._scan_and_log_checkpoints(self._checkpoint_callback)


class WholeCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files are never cut short by Ctrl-C (the resume point)."""

    @deferring
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)


def make_logger(run: TrackedRun, experiment: str) -> RunLogger:
    return RunLogger(experiment_name=experiment, tracking_uri=run.uri, run_id=run.run_id,
                     log_model=False)


def make_checkpoints(ckpt_dir: Path, monitor: str = "val/behavior_balance"
                     ) -> tuple[WholeCheckpoint, OnExceptionCheckpoint]:
    """Keep the best ``monitor`` and the last epoch; save one more on a crash."""
    best = WholeCheckpoint(dirpath=ckpt_dir, filename="best-{epoch:03d}",
                           monitor=monitor, mode="max", save_top_k=1,
                           save_last=True, auto_insert_metric_name=False)
    on_exception = OnExceptionCheckpoint(dirpath=ckpt_dir, filename="on_exception")
    return best, on_exception
