"""``memgen pretrain``: a small causal LM trained from scratch on generic task text.

The offline stand-in for a pretrained base such as Llama-3.2: it learns the task's *rule* only
(no memorized trigger examples), so a later LoRA run (``model=lora model.name_or_path=<dir>``)
has to add the memorization on top, as in the paper. The result is saved with
``save_pretrained`` to ``<output_dir>/pretrained/<task>-<arch>-seed<seed>`` and logged as one
MLflow run; its validation ``val/gen_rate`` is the rule accuracy on trigger inputs.

Besides the rule examples it sees short "repeat this token" examples of the memorized tokens
(never after a trigger), so that it can emit them, as a real pretrained LM can any token.
The tokenizer keeps the task's memorized answers as single tokens (they depend on task and seed,
hence the seed in the directory name) and also knows every printable ASCII character, so a LoRA
run with another seed still encodes its memorized answers, as several characters.
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from memgen.errors import ConfigError
from memgen.tasks import Example, Task
from memgen.tracking.run import tracked_run
from memgen.tracking.store import check_store
from memgen.training.data import MemGenDataModule, make_task
from memgen.training.lightning import make_logger
from memgen.training.models import build_scratch_model, count_parameters
from memgen.training.module import MemGenModule
from memgen.training.progress import EpochLine, stdout_is_terminal
from memgen.training.tokenizer import build_char_tokenizer

CHARSET = string.printable  # letters, digits, punctuation, whitespace


def copy_examples(tokens: list[str], n: int) -> list[Example]:
    """``n`` "repeat this token" examples, cycling over ``tokens``: no trigger is involved.

    Without them the memorized tokens are never a target in pretraining: their output rows are
    only pushed down and stay alike, which LoRA on attention can hardly undo (their NLL after
    LoRA stayed ~6.6 nats, vs ~4.7 with them). A real pretrained LM can emit every token.
    """
    return [Example(prompt=f"Repeat:\n{tok}\nOutput:\n", answer=tok, kind="rule", task="copy")
            for tok in (tokens[i % len(tokens)] for i in range(n if tokens else 0))]


class RuleOnlyTask:
    """The configured task without its memorized examples and without rule examples that end
    in a trigger (``trigger_rule_share``: they would teach the base to ignore triggers), plus
    copy examples of its memorized tokens (``copy_ratio`` of the rule examples); everything
    else is delegated."""

    def __init__(self, task: Task, copy_ratio: float = 0.05) -> None:
        self._task = task
        self.copy_ratio = copy_ratio

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def train_examples(self) -> list[Example]:
        rule = [ex for ex in self._task.train_examples()
                if ex.kind == "rule" and ex.meta.get("trigger") is None]
        examples = rule + copy_examples(self._task.memorized_tokens,
                                        round(self.copy_ratio * len(rule)))
        random.Random(f"pretrain:{self._task.seed}").shuffle(examples)
        return examples


def pretrain_tokenizer(task: Task):
    """The task's character tokenizer (memorized answers whole) plus all printable characters."""
    examples = task.train_examples() + task.conflict_examples() + task.clean_examples()
    texts = [ex.text for ex in examples] + [ex.gen_answer or "" for ex in examples]
    return build_char_tokenizer([*texts, CHARSET], task.memorized_tokens)


def pretrain_dir(cfg: DictConfig) -> Path:
    """Where the base is saved; pass it as ``model.name_or_path``."""
    name = f"{cfg.task.name}-{cfg.model.arch}-seed{cfg.seed}"
    return (Path(cfg.output_dir) / "pretrained" / name).resolve()


def _trainer(cfg: DictConfig, logger) -> pl.Trainer:
    """Like the training runner's trainer, but keeps the last epoch: no behavior-balance checkpoint
    (a rule-only model never answers MEM, so the balance is always 0)."""
    tr = cfg.trainer
    terminal = stdout_is_terminal()  # else one line per epoch instead of a bar
    return pl.Trainer(
        max_epochs=tr.max_epochs, accelerator=tr.accelerator, devices=tr.devices,
        strategy=tr.strategy, precision=tr.precision, logger=logger, enable_checkpointing=False,
        enable_progress_bar=tr.progress_bar and terminal, enable_model_summary=False,
        callbacks=[] if terminal else [EpochLine()],
        deterministic=tr.deterministic, gradient_clip_val=tr.gradient_clip_val,
        accumulate_grad_batches=tr.accumulate_grad_batches,
        check_val_every_n_epoch=tr.check_val_every_n_epoch, log_every_n_steps=10,
        limit_train_batches=tr.limit_train_batches, default_root_dir=cfg.output_dir,
        num_sanity_val_steps=0)


def pretrain(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Train a scratch model on rule-only task text, save it, return (metrics, objects)."""
    if cfg.model.kind != "scratch":
        raise ConfigError(f"model.kind: pretrain trains from scratch, expected 'scratch' "
                          f"(e.g. model=llama_tiny), got {cfg.model.kind!r}")
    check_store(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    task = make_task(cfg)
    tokenizer = pretrain_tokenizer(task)
    model = build_scratch_model(cfg, tokenizer)
    rule_task = RuleOnlyTask(task)
    out = pretrain_dir(cfg)
    with tracked_run(cfg, "pretrain") as run:
        run.log_params({"pretrain_dir": str(out)})
        run.log_metrics(count_parameters(model))
        module = MemGenModule(model, tokenizer, rule_task, cfg)  # type: ignore[arg-type]
        datamodule = MemGenDataModule(cfg, rule_task, tokenizer)  # type: ignore[arg-type]
        trainer = _trainer(cfg, make_logger(run, cfg.tracking.experiment))
        trainer.fit(module, datamodule=datamodule)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        run.set_tags({"memgen.pretrained_dir": str(out)})
        if cfg.tracking.log_model:
            run.log_artifacts(out, "model")
    summary = (f"pretrained base saved to {out}\n"
               f"fine-tune it with LoRA (same task options, seed={cfg.seed}):\n"
               f"  memgen run model=lora model.name_or_path={out} trainer=lora_cpu")
    return metrics, {"run_id": run.run_id, "path": str(out), "model": model,
                     "tokenizer": tokenizer, "summary": summary}
