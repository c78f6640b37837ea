"""Lightning <-> MLflow glue: a logger bound to memgen's run, and the checkpoint callbacks."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from memgen.numbers import clean
from memgen.runtime.interrupts import Uninterruptible, deferred, deferring, hold, release
from memgen.tracking.run import TrackedRun


class RunLogger(MLFlowLogger):
    """MLFlowLogger that logs into an existing run and leaves its end status to memgen.

    Lightning's logger would mark the run FINISHED when ``fit`` returns, before the analysis
    stages have run; ``tracked_run`` sets the real end state.
    """

    def __init__(self, run: TrackedRun, **kwargs) -> None:
        super().__init__(**kwargs)
        self._run = run
        # its reads too (``experiment`` looks the run up): no store call is cut by Ctrl-C
        self._mlflow_client = Uninterruptible(self._mlflow_client)  # type: ignore[assignment]

    @rank_zero_only
    @deferring
    def log_metrics(self, metrics, step=None) -> None:
        # a resumed run already holds these steps: logging them again would duplicate them;
        # Lightning's values are float32 tensors: 0.86, not 0.8600000143051147
        metrics = {k: clean(v) for k, v in metrics.items() if not self._run.logged(k, step)}
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    @deferring
    def log_hyperparams(self, params) -> None:
        super().log_hyperparams(params)

    def finalize(self, status: str = "success") -> None:
        """Nothing: MLFlowLogger's would end the run (``tracked_run`` does, after the
        analysis) and log checkpoints (``make_logger`` turns that off; memgen logs them)."""


class WholeCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose files are never cut short by Ctrl-C (the resume point)."""

    @deferring
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)


class StepGuard(Callback):
    """Ctrl-C waits for the training step (forward, backward, optimizer step) to finish.

    An interrupt inside ``optimizer.step`` leaves Adam state for some parameters only, and the
    checkpoint saved on the interrupt could not be resumed; between steps the state is whole.
    """

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        hold()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        release()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        release(raise_pending=False)


def make_logger(run: TrackedRun, experiment: str) -> RunLogger:
    return RunLogger(run, experiment_name=experiment, tracking_uri=run.uri, run_id=run.run_id,
                     log_model=False)


class ExceptionCheckpoint(Callback):
    """``on_exception.ckpt`` when ``fit`` stops on an error or an interrupt.

    Not Lightning's ``OnExceptionCheckpoint``: with it in the trainer, ``fit(ckpt_path=None)``
    silently resumes from the newest file in the folder, which a restart of a run without a
    complete checkpoint must not do. With :class:`StepGuard` the state is between steps.
    """

    def __init__(self, dirpath: Path, filename: str = "on_exception") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # several processes: saving waits at a barrier that a crashed or busy rank never
        # reaches (a hang instead of a FAILED run); resume uses last.ckpt anyway
        if trainer.sanity_checking or trainer.global_step == 0 or trainer.world_size > 1:
            return
        with deferred():
            trainer.save_checkpoint(self.path)


def make_checkpoints(ckpt_dir: Path, monitor: str = "val/behavior_balance"
                     ) -> tuple[WholeCheckpoint, ExceptionCheckpoint]:
    """Keep the best ``monitor``; save one more (``on_exception.ckpt``) on a crash."""
    best = WholeCheckpoint(dirpath=ckpt_dir, filename="best-{epoch:03d}",
                           monitor=monitor, mode="max", save_top_k=1,
                           auto_insert_metric_name=False)
    return best, ExceptionCheckpoint(ckpt_dir)


def last_checkpoint(ckpt_dir: Path) -> WholeCheckpoint:
    """``last.ckpt`` at every epoch end, whatever the metric did: the resume point.

    Lightning's ``save_last`` rewrites ``last.ckpt`` only when the monitored metric improves
    (after a 4-epoch run it still held epoch 0), so resume retrained finished epochs.
    """
    return WholeCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           every_n_epochs=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)


def resumable_callbacks(ckpt_dir: Path, monitor: str) -> tuple[WholeCheckpoint, list[Callback]]:
    """The best-checkpoint callback, and every callback that keeps a run resumable."""
    best, on_exception = make_checkpoints(ckpt_dir, monitor)
    return best, [StepGuard(), best, last_checkpoint(ckpt_dir), on_exception]
