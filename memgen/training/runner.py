"""Training inside a tracked run: :func:`prepare` builds and checks the task, tokenizer and model
from the config (every check before a run exists); :func:`fit` trains them with Lightning and
brings the module back at its kept checkpoint. ``memgen train``/``run``, a replicate's seeds and
a training sweep's trials all train through here.
"""


from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from memgen.analysis.sites import resolve_sites, site_width
from memgen.analysis.stages import steering_sites
from memgen.config import checkpoint_metric
from memgen.config.adapter import settings_from_config
from memgen.config.validate import check_model_memory
from memgen.errors import ConfigError
from memgen.runtime.boundary import describe, task_error
from memgen.runtime.interrupts import deferred
from memgen.tasks import Task
from memgen.tracking.run import TrackedRun
from memgen.tracking.store import check_store, tracking_uri
from memgen.training.callbacks import AnalysisCallback
from memgen.training.checkpoints import (
    AtomicCheckpointIO,
    load_module_weights,
    newest_complete,
    resume_tags,
)
from memgen.training.data import MemGenDataModule, chat_task, make_task, task_tokenizer
from memgen.training.distributed import (
    SameKeptCheckpoint,
    is_rank_zero,
    launching,
)
from memgen.training.lengths import check_lengths
from memgen.training.lightning import make_logger, resumable_callbacks
from memgen.training.lineage import tracking_callbacks
from memgen.training.models import build_scratch_model, count_parameters
from memgen.training.module import MemGenModule
from memgen.training.progress import EpochLine, stdout_is_terminal
from memgen.training.regime import NEVER_BOTH_TAG, never_both_message
from memgen.training.task_checks import check_task


@dataclass
class Trained:
    """What later stages need from training."""

    module: MemGenModule
    task: Task
    tokenizer: Any
    run_id: str
    best_checkpoint: str | None
    epochs_done: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    never_both: str | None = None  # the one-line reason when no epoch showed both behaviors

    @property
    def model(self):
        return self.module.model


def prepare(cfg: DictConfig) -> tuple[Task, Any, torch.nn.Module]:
    """Task, tokenizer and model from the config: all validation happens before a run exists.

    Bad task files, a missing model directory, unknown sites, a ``top_k`` larger than the
    model's neuron count, an unreachable or unwritable store: each is a :class:`ConfigError`
    here, before any training and before anything is written to the store.
    """
    from memgen.training.devices import check_devices, check_output_dir  # noqa: PLC0415

    check_devices(cfg)
    check_output_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        try:
            torch.set_num_threads(cfg.trainer.num_threads)
        except Exception as exc:  # noqa: BLE001 - torch's own limits
            raise ConfigError(f"trainer.num_threads: torch rejected {cfg.trainer.num_threads} "
                              f"({describe(exc)}); expected 0 (torch's default) or a thread "
                              f"count this machine supports") from None
    try:
        task = make_task(cfg)
    except Exception as exc:  # noqa: BLE001 - task files and a user's rule code: bad input
        raise ConfigError(task_error(cfg, exc) if not isinstance(exc, UnicodeDecodeError)
                          else undecodable(cfg, exc)) from None
    if cfg.model.kind == "lora":
        from memgen.training.lora import build_lora_model  # noqa: PLC0415 - optional path

        try:  # the base's weights are read here: garbage fails before a run exists
            model, tokenizer = build_lora_model(cfg)
        except Exception as exc:  # garbage weights: safetensors' own error type among others
            if not isinstance(exc, (OSError, ValueError, RuntimeError, KeyError)) and \
                    type(exc).__name__ != "SafetensorError":
                raise
            raise ConfigError(f"model.name_or_path: cannot load {cfg.model.name_or_path} "
                              f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                              ) from None
    else:
        tokenizer = task_tokenizer(task)
        check_model_memory(cfg, len(tokenizer))
        try:
            model = build_scratch_model(cfg, tokenizer)
        except Exception as exc:  # noqa: BLE001 - sizes the architecture cannot take
            m = cfg.model
            raise ConfigError(f"model: cannot build a {m.arch} model with n_layer={m.n_layer}, "
                              f"n_embd={m.n_embd}, n_head={m.n_head}, n_positions="
                              f"{m.n_positions} ({describe(exc)}); expected sizes the "
                              f"architecture accepts") from None
    task = chat_task(cfg, task, tokenizer)
    check_analysis(cfg, model)
    check_task(cfg, task, tokenizer)
    check_lengths(cfg, task, tokenizer, model)
    check_store(cfg)
    return task, tokenizer, model


def undecodable(cfg: DictConfig, exc: UnicodeDecodeError) -> str:
    """Which ``task.params`` file is not UTF-8 (the decoder's message names neither)."""
    for key, value in cfg.task.params.items():
        if isinstance(value, str) and Path(value).is_file():
            try:
                Path(value).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                return f"task.params.{key}: {value} is not UTF-8 text (byte {exc.start})"
    return f"task.params: a task file is not UTF-8 text ({exc.reason} at byte {exc.start})"


def check_analysis(cfg: DictConfig, model: torch.nn.Module) -> None:
    """Sites exist on this model and every ``top_k`` fits its neuron count."""
    try:
        sites = resolve_sites(model, list(cfg.analysis.sites))
    except ValueError as exc:
        raise ConfigError(f"analysis.sites: {exc}") from None
    try:
        for spec in [cfg.analysis.steering.sites, *cfg.analysis.steering.tune_sites]:
            steering_sites(spec, sites)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    total = sum(site_width(model, site) for site in sites)
    for key, value in (("analysis.top_k", cfg.analysis.top_k),
                       ("analysis.steering.top_k", cfg.analysis.steering.top_k)):
        if value is not None and value > total:
            raise ConfigError(f"{key}: expected at most the {total} neurons of sites "
                              f"{list(cfg.analysis.sites)}, got {value}")


def analysis_callbacks(cfg: DictConfig, run: TrackedRun) -> list[pl.Callback]:
    """The periodic analysis callback when ``analysis.every_n_val_epochs`` > 0."""
    if not cfg.analysis.every_n_val_epochs:
        return []
    return [AnalysisCallback(settings_from_config(cfg), run, cfg.analysis.every_n_val_epochs,
                             tuple(cfg.analysis.callback_stages))]


def fit(cfg: DictConfig, run: TrackedRun, task: Task, tokenizer, model,
        extra_callbacks: Sequence[pl.Callback] | None = None, ckpt_path: str | None = None
        ) -> Trained:
    """Lightning ``fit`` logging into ``run``; the module comes back at its best checkpoint."""
    tr = cfg.trainer
    extra_callbacks = analysis_callbacks(cfg, run) + list(extra_callbacks or [])
    module = MemGenModule(model, tokenizer, task, cfg)
    datamodule = MemGenDataModule(cfg, task, tokenizer)
    ckpt_dir = Path(cfg.output_dir) / "checkpoints" / run.run_id
    kept_by = checkpoint_metric(cfg)
    best, checkpointing = resumable_callbacks(ckpt_dir, kept_by)
    run.log_params({"checkpoint_dir": str(ckpt_dir.resolve())})
    if ckpt_path:
        run.set_tags(resume_tags(ckpt_path))
    run.log_metrics(count_parameters(model))
    terminal = stdout_is_terminal()  # else one line per epoch instead of a bar
    trainer = pl.Trainer(
        max_epochs=tr.max_epochs, accelerator=tr.accelerator, devices=tr.devices,
        strategy=tr.strategy, precision=tr.precision,
        logger=make_logger(run, cfg.tracking.experiment),
        callbacks=[*checkpointing, SameKeptCheckpoint(best), *(extra_callbacks or []),
                   *tracking_callbacks(run, cfg),
                   *([] if terminal else [EpochLine()])], plugins=[AtomicCheckpointIO()],
        enable_progress_bar=tr.progress_bar and terminal, enable_model_summary=False,
        deterministic=tr.deterministic, gradient_clip_val=tr.gradient_clip_val,
        accumulate_grad_batches=tr.accumulate_grad_batches,
        check_val_every_n_epoch=tr.check_val_every_n_epoch, log_every_n_steps=tr.log_every_n_steps,
        limit_train_batches=tr.limit_train_batches, default_root_dir=cfg.output_dir,
        num_sanity_val_steps=0)
    try:
        try:
            with launching(trainer, run, ckpt_path):
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path,
                            weights_only=True)
        except SystemExit:
            if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1): keep it an interrupt
                raise KeyboardInterrupt from None
            raise
    except BaseException:
        if cfg.tracking.log_checkpoints and ckpt_dir.exists():  # a crash keeps what it had
            with deferred():
                run.log_artifacts(ckpt_dir, "checkpoints")
        raise
    best_path = best.best_model_path or None
    never_both = never_both_message(module.behavior_history, cfg)
    if never_both and not tr.require_both:
        run.set_tags({NEVER_BOTH_TAG: never_both})
        never_both = None
    zero = best.best_model_score is not None and float(best.best_model_score) <= 0
    if tr.require_both and (never_both or zero) and (ckpt_dir / "last.ckpt").exists():
        # every epoch tied at 0 and a tie keeps the first: epoch 0's weights mean nothing
        best_path = str(ckpt_dir / "last.ckpt")
        run.set_tags({"memgen.kept": f"last epoch: {kept_by} was 0 at every "
                                     f"validation epoch"})
        if module.behavior_history:  # finish_run reads the epoch from best-NNN names only
            run.log_metrics({"kept/epoch": module.behavior_history[-1]["epoch"]})
    if best_path and is_rank_zero():  # other ranks stop after fit (and may lack the file)
        load_module_weights(module, best_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if best.best_model_score is not None:
        metrics["val/best_" + kept_by.removeprefix("val/")] = float(
            best.best_model_score)
    run.set_tags({"best_checkpoint": best_path or ""})
    if cfg.tracking.log_checkpoints and ckpt_dir.exists():
        run.log_artifacts(ckpt_dir, "checkpoints")
    return Trained(module, task, tokenizer, run.run_id, best_path, trainer.current_epoch, metrics,
                   never_both)


def log_model(run: TrackedRun, trained: Trained) -> None:
    """The kept model and tokenizer via ``save_pretrained`` (safetensors): artifact ``model``.

    A LoRA model logs its adapter (plus the merged model with ``model.log_merged``).
    """
    cfg = trained.module.cfg
    if cfg.model.kind == "lora":
        from memgen.training.lora import log_lora_artifacts  # noqa: PLC0415

        log_lora_artifacts(run, trained.model, trained.tokenizer, cfg.model.log_merged)
        return
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
                       cfg.task.max_new_tokens, cfg.analysis.batch_size,
                       cfg.analysis.decoding.num_beams)
    labels = [trained.task.classify(ex, out) for ex, out in zip(examples, outputs, strict=True)]
    n = max(1, len(labels))
    return {f"kept/{b.value.lower()}_rate": sum(lab == b for lab in labels) / n for b in Behavior}


def resume_checkpoint(cfg: DictConfig, run_id: str) -> str | None:
    """The newest complete checkpoint of a run: its local checkpoint dir, else its logged
    artifacts; ``None`` (training restarts in the same run) when it has none."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from memgen.tracking.stale import check_resumable  # noqa: PLC0415

    client = MlflowClient(tracking_uri(cfg))
    run = check_resumable(client, run_id, tracking_uri(cfg))
    folder = Path(run.data.params.get("checkpoint_dir", ""))
    found = newest_complete(list(folder.glob("*.ckpt"))) if folder.name else None
    if found is None:
        try:
            local = client.download_artifacts(run_id, "checkpoints", tempfile.mkdtemp())
            found = newest_complete(list(Path(local).glob("*.ckpt")))
        except Exception:  # noqa: BLE001 - no logged checkpoints either
            found = None
    return str(found) if found else None
