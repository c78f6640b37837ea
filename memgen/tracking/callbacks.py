"""Lightning callbacks that run the analysis stages during training and log them as curves.

They are thin: each calls :func:`memgen.analysis.stages.analyse_model` on the module's model
every ``every_n`` validation epochs and logs the metrics with the epoch as the step, so the
emergence of differentiating neurons, probe accuracy and steerability shows in MLflow.
"""

from __future__ import annotations

import copy

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from memgen.analysis.stages import analyse_model
from memgen.tracking.report import log_analysis
from memgen.tracking.run import TrackedRun


class AnalysisCallback(pl.Callback):
    """Run ``stages`` every ``every_n`` validation epochs and log ``stage/*`` metrics by epoch."""

    stages: tuple[str, ...] = ("neurons", "probes", "steering")

    def __init__(self, cfg: DictConfig, run: TrackedRun, every_n: int,
                 stages: tuple[str, ...] | None = None) -> None:
        if every_n < 1:
            raise ValueError(f"analysis.every_n_val_epochs: expected >= 1, got {every_n}")
        # one configured (k, alpha) for every epoch, so the steering curves are comparable:
        # per-model tuning belongs to the final analysis
        cfg = copy.deepcopy(cfg)
        cfg.analysis.steering.tune = False
        self.cfg, self.run, self.every_n = cfg, run, every_n
        self.stages = tuple(stages) if stages is not None else type(self).stages
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
        with torch.random.fork_rng(devices=[]):
            analysis = analyse_model(self.cfg, pl_module.model, pl_module.tokenizer,
                                     pl_module.task, stages=self.stages, allow_no_pairs=True)
        log_analysis(self.run, analysis, step=trainer.current_epoch, artifacts=False)
        self.logged_epochs.append(trainer.current_epoch)


class NeuronStatsCallback(AnalysisCallback):
    """NMD / r summaries per site (``neurons/*``) during training."""

    stages = ("neurons",)


class ProbeCallback(AnalysisCallback):
    """Probe accuracy per site (``probe/*``) during training."""

    stages = ("probes",)


class InterventionCallback(AnalysisCallback):
    """Steering success at the configured (k, alpha) with controls (``steer/*``, ``side/*``)."""

    stages = ("steering",)
