"""What MLflow users expect on a training run: system metrics (CPU, memory, GPU) while it trains,
the generated training set as a dataset input with its digest, and the learning-rate curve.

All three are MLflow's or Lightning's own: ``SystemMetricsMonitor`` (``system/*`` metrics),
``log_inputs`` with a ``PandasDataset`` (the UI's "Datasets used"), ``LearningRateMonitor``.
Only global rank 0 writes, like every other logger of the run.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor

from memgen.runtime.interrupts import deferred
from memgen.tracking.run import TrackedRun

log = logging.getLogger(__name__)


class SystemMetrics(pl.Callback):
    """MLflow's system-metrics sampler for the duration of ``fit``."""

    def __init__(self, run: TrackedRun, interval_s: float = 5.0) -> None:
        self.run, self.interval_s = run, interval_s
        self.monitor: Any = None  # MLflow's SystemMetricsMonitor while fit runs

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or self.monitor is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import (  # noqa: PLC0415
            SystemMetricsMonitor,
        )

        # held from Ctrl-C: cut mid-start, a sampler thread would run on that nobody stops
        with deferred():
            try:
                self.monitor = SystemMetricsMonitor(
                    self.run.run_id, sampling_interval=self.interval_s, samples_before_logging=1,
                    resume_logging=True, tracking_uri=self.run.uri)
                self.monitor.start()
            except Exception as exc:  # noqa: BLE001 - a missing sampler must not stop training
                log.warning("memgen: system metrics off (%s)", exc)
                self.monitor = None

    def stop(self) -> None:
        """Join the sampler; its start/stop chatter is filtered in ``runtime/quiet.py``.

        No ``setLevel`` around it: ``Logger.setLevel`` takes logging's module lock without a
        ``finally``: a Ctrl-C inside it would keep the lock, the sampler thread would block on it
        at its next log call, and joining the sampler would hang the process.
        """
        if self.monitor is not None:
            with deferred():
                self.monitor.finish()
            self.monitor = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self.stop()


class DatasetInput(pl.Callback):
    """The generated training set as the run's dataset input (name, digest, prompt/answer
    schema), logged once when ``fit`` starts."""

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        try:
            log_training_set(self.run, pl_module.task, pl_module.cfg)
        except Exception as exc:  # noqa: BLE001 - lineage must not stop training
            log.warning("memgen: training set not logged as a dataset (%s)", exc)


def log_training_set(run: TrackedRun, task, cfg) -> str:
    """Log ``task.train_examples()`` as an MLflow dataset input; returns its digest."""
    import mlflow  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    from mlflow.entities import DatasetInput as Input  # noqa: PLC0415
    from mlflow.entities import InputTag  # noqa: PLC0415

    examples = task.train_examples()
    frame = pd.DataFrame({"prompt": [e.prompt for e in examples],
                          "answer": [e.answer for e in examples],
                          "kind": [e.kind for e in examples]})
    dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]  # loaded by mlflow
        frame, name=f"{cfg.task.name}-train-seed{cfg.seed}",
                                      targets="answer")
    run.client.log_inputs(run.run_id, datasets=[Input(
        dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])])
    return dataset.digest


def tracking_callbacks(run: TrackedRun, cfg) -> list[pl.Callback]:
    """The callbacks ``runner.fit`` adds for the run's lineage and system metrics."""
    from memgen.runtime.quiet import quiet_library_noise  # noqa: PLC0415

    quiet_library_noise()  # again: Lightning is imported by now and may have added filters
    interval = float(cfg.tracking.system_metrics_s or 0)
    return [LearningRateMonitor(logging_interval="step"), DatasetInput(run),
            *([SystemMetrics(run, interval)] if interval > 0 else [])]
