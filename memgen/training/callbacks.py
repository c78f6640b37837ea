"""The Lightning callback that runs the analysis stages during training and logs them as curves.

It is thin: it calls :func:`memgen.analysis.stages.analyse_model` on the module's model every
``every_n`` validation epochs and logs the metrics with the epoch as the step, so the emergence
of differentiating neurons, probe accuracy and steerability shows in MLflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytorch_lightning as pl
import torch

from memgen.analysis.settings import AnalysisSettings, Subject
from memgen.analysis.stages import analyse_model
from memgen.reporting.report import log_analysis
from memgen.tracking.run import TrackedRun


class AnalysisCallback(pl.Callback):
    """Run ``stages`` every ``every_n`` validation epochs and log ``stage/*`` metrics by epoch."""

    def __init__(self, settings: AnalysisSettings, run: TrackedRun, every_n: int,
                 stages: tuple[str, ...] = ("neurons", "probes", "steering")) -> None:
        if every_n < 1:
            raise ValueError(f"analysis.every_n_val_epochs: expected >= 1, got {every_n}")
        # one set (k, alpha) for every epoch, so the steering curves are comparable: per-model
        # tuning belongs to the final analysis
        self.settings = settings.with_steering(
            dataclasses.replace(settings.steering, tune=False))
        self.run, self.every_n = run, every_n
        self.stages = tuple(stages)
        self.n_validations = 0
        self.logged_epochs: list[int] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:  # once per job, on rank 0
            return
        self.n_validations += 1
        if self.n_validations % self.every_n:
            return
        # the analysis observes the training and must not change it: its random draws come
        # from a forked stream, so a run with callbacks trains exactly like one without
        module: Any = pl_module  # a MemGenModule
        subject = Subject(module.model, module.tokenizer, module.task)
        with torch.random.fork_rng(devices=[]):
            analysis = analyse_model(subject, self.settings, stages=self.stages,
                                     allow_no_pairs=True)
        log_analysis(self.run, analysis, step=trainer.current_epoch, artifacts=False)
        self.logged_epochs.append(trainer.current_epoch)
