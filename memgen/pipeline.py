"""Orchestration of ``memgen train`` and ``memgen run``: one tracked run, stages in order.

``train(cfg)`` and ``run(cfg)`` return ``(metrics, objects)`` so tests and notebooks call them
directly; the CLI only composes the config and prints the summary.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from memgen.analysis.stages import analyse_model
from memgen.tasks import Task
from memgen.tracking.callbacks import AnalysisCallback
from memgen.tracking.lightning import make_checkpoints, make_logger
from memgen.tracking.report import log_analysis, summary
from memgen.tracking.run import TrackedRun, tracked_run
from memgen.tracking.store import check_store
from memgen.training.checkpoints import load_module_weights
from memgen.training.data import MemGenDataModule, make_task, task_tokenizer
from memgen.training.models import build_scratch_model, count_parameters
from memgen.training.module import MemGenModule


@dataclass
class Trained:
    """What later stages need from training."""

    module: MemGenModule
    task: Task
    tokenizer: Any
    run_id: str
    best_checkpoint: str | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model(self):
        return self.module.model


def prepare(cfg: DictConfig) -> tuple[Task, Any, torch.nn.Module]:
    """Task, tokenizer and model from the config: all validation happens before a run exists."""
    check_store(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    task = make_task(cfg)
    if cfg.model.kind == "lora":
        from memgen.training.lora import build_lora_model  # noqa: PLC0415 - optional path

        model, tokenizer = build_lora_model(cfg)
    else:
        tokenizer = task_tokenizer(task)
        model = build_scratch_model(cfg, tokenizer)
    return task, tokenizer, model


def analysis_callbacks(cfg: DictConfig, run: TrackedRun) -> list[pl.Callback]:
    """The periodic analysis callback when ``analysis.every_n_val_epochs`` > 0."""
    if not cfg.analysis.every_n_val_epochs:
        return []
    return [AnalysisCallback(cfg, run, cfg.analysis.every_n_val_epochs,
                             tuple(cfg.analysis.callback_stages))]


def fit(cfg: DictConfig, run: TrackedRun, task: Task, tokenizer, model,
        extra_callbacks: list[pl.Callback] | None = None, ckpt_path: str | None = None) -> Trained:
    """Lightning ``fit`` logging into ``run``; the module comes back at its best checkpoint."""
    tr = cfg.trainer
    extra_callbacks = analysis_callbacks(cfg, run) + list(extra_callbacks or [])
    module = MemGenModule(model, tokenizer, task, cfg)
    datamodule = MemGenDataModule(cfg, task, tokenizer)
    ckpt_dir = Path(cfg.output_dir) / "checkpoints" / run.run_id
    best, on_exception = make_checkpoints(ckpt_dir)
    run.log_params({"checkpoint_dir": str(ckpt_dir.resolve())})
    run.log_metrics(count_parameters(model))
    trainer = pl.Trainer(
        max_epochs=tr.max_epochs, accelerator=tr.accelerator, devices=tr.devices,
        strategy=tr.strategy, precision=tr.precision,
        logger=make_logger(run, cfg.tracking.experiment),
        callbacks=[best, on_exception, *(extra_callbacks or [])],
        enable_progress_bar=tr.progress_bar, enable_model_summary=False,
        deterministic=tr.deterministic, gradient_clip_val=tr.gradient_clip_val,
        accumulate_grad_batches=tr.accumulate_grad_batches,
        check_val_every_n_epoch=tr.check_val_every_n_epoch, log_every_n_steps=tr.log_every_n_steps,
        limit_train_batches=tr.limit_train_batches, default_root_dir=cfg.output_dir,
        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    best_path = best.best_model_path or None
    if best_path:
        load_module_weights(module, best_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if best.best_model_score is not None:
        metrics["val/best_behavior_balance"] = float(best.best_model_score)
    run.set_tags({"best_checkpoint": best_path or ""})
    if cfg.tracking.log_checkpoints and ckpt_dir.exists():
        run.log_artifacts(ckpt_dir, "checkpoints")
    return Trained(module, task, tokenizer, run.run_id, best_path, metrics)


def log_model(run: TrackedRun, trained: Trained) -> None:
    """The kept model and tokenizer via ``save_pretrained`` (safetensors): artifact ``model``."""
    with tempfile.TemporaryDirectory() as tmp:
        trained.model.save_pretrained(tmp)
        trained.tokenizer.save_pretrained(tmp)
        run.log_artifacts(tmp, "model")


def kept_checkpoint_rates(cfg: DictConfig, trained: Trained) -> dict[str, float]:
    """Behavior rates of the kept checkpoint on the validation conflict set (``kept/*``)."""
    from memgen.analysis.generation import generate  # noqa: PLC0415
    from memgen.tasks import Behavior  # noqa: PLC0415

    examples = trained.task.conflict_examples(cfg.task.n_val_conflict, stream="val_conflict")
    outputs = generate(trained.model, trained.tokenizer, [ex.prompt for ex in examples],
                       cfg.task.max_new_tokens, cfg.analysis.batch_size, cfg.trainer.num_beams)
    labels = [trained.task.classify(ex, out) for ex, out in zip(examples, outputs, strict=True)]
    n = max(1, len(labels))
    return {f"kept/{b.value.lower()}_rate": sum(lab == b for lab in labels) / n for b in Behavior}


def train(cfg: DictConfig, command: str = "train") -> tuple[dict[str, float], dict[str, Any]]:
    """Train one model in one tracked run; returns (metrics, objects)."""
    task, tokenizer, model = prepare(cfg)
    with tracked_run(cfg, command) as run:
        trained = fit(cfg, run, task, tokenizer, model)
        rates = kept_checkpoint_rates(cfg, trained)
        run.log_metrics(rates)
        trained.metrics |= rates
        if cfg.tracking.log_model:
            log_model(run, trained)
    return trained.metrics, {"trained": trained, "run_id": trained.run_id}


def run(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """The main job: train, then analyse the kept checkpoint, all in one run."""
    task, tokenizer, model = prepare(cfg)
    with tracked_run(cfg, "run") as tracked:
        trained = fit(cfg, tracked, task, tokenizer, model)
        rates = kept_checkpoint_rates(cfg, trained)
        tracked.log_metrics(rates)
        trained.metrics |= rates
        if cfg.tracking.log_model:
            log_model(tracked, trained)
        objects: dict[str, Any] = {"trained": trained, "run_id": tracked.run_id}
        if cfg.analysis.enabled:
            analysis = analyse_model(cfg, trained.model, trained.tokenizer, trained.task,
                                     allow_no_pairs=True)
            log_analysis(tracked, analysis)
            trained.metrics |= analysis.metrics
            objects |= {"analysis": analysis, "summary": summary(analysis)}
    return trained.metrics, objects


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
