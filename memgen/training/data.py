"""Task examples to tensors: the DataModule that feeds Lightning.

Training batches are right-padded (labels -100 on padding, and on the prompt when
``trainer.loss_on=answer``). Validation batches are conflict examples whose prompts are generated
from with left padding, so that position -1 is each prompt's last token.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler

from memgen.config import plain
from memgen.errors import ConfigError
from memgen.tasks import Example, Task, build_task
from memgen.tasks.chat import ChatTask
from memgen.training.tokenizer import build_char_tokenizer


def make_task(cfg: DictConfig) -> Task:
    """The configured task, seeded by the run's seed."""
    t = cfg.task
    return build_task(t.name, plain(t.params), seed=cfg.seed,
                      n_train=t.n_train, mem_ratio=t.mem_ratio, n_conflict=t.n_conflict,
                      n_clean=t.n_clean, n_val_conflict=t.n_val_conflict)


def chat_task(cfg: DictConfig, task: Task, tokenizer) -> Task:
    """``task`` with its prompts in ``tokenizer``'s chat template when ``task.chat_template``.

    Every consumer (training data, validation, the analysis' Subject, a reopened run) takes its
    task from here, so they all see the same prompts. A tokenizer without a template, or one that
    maps part of a wrapped prompt to its unknown token, is a ConfigError.
    """
    if not cfg.task.chat_template:
        return task
    if not getattr(tokenizer, "chat_template", None):
        where = (f"model.name_or_path={cfg.model.name_or_path}" if cfg.model.kind == "lora"
                 else f"model.kind={cfg.model.kind} (a character tokenizer)")
        raise ConfigError(f"task.chat_template: the tokenizer of {where} has no chat template; "
                          f"expected an instruction-tuned base (e.g. model=lora_llama32) or "
                          f"task.chat_template=false")
    wrapped = ChatTask(task, tokenizer)
    unk = getattr(tokenizer, "unk_token_id", None)
    prompt = wrapped.train_examples()[0].prompt  # the template's own text is in every prompt
    if unk is not None and unk in tokenizer(prompt, add_special_tokens=False)["input_ids"]:
        raise ConfigError(f"task.chat_template: the tokenizer maps part of the wrapped prompt "
                          f"{prompt[:60]!r} to {tokenizer.unk_token}; expected a chat template "
                          f"made of text the tokenizer encodes")
    return wrapped


def task_tokenizer(task: Task):
    """A character tokenizer covering every text the task can produce, memorized tokens whole."""
    examples = task.train_examples() + task.conflict_examples() + task.clean_examples()
    try:  # validation may have examples of its own (task=files: val_conflict_path)
        examples += task.conflict_examples(stream="val_conflict")
    except ValueError:  # too few to split: memgen.training.task_checks says so
        pass
    texts = [ex.text for ex in examples] + [ex.gen_answer or "" for ex in examples]
    return build_char_tokenizer(texts, task.memorized_tokens)


def encode_training(tokenizer, examples: list[Example], loss_on: str) -> list[dict[str, Any]]:
    """Token ids and labels of prompt + answer + EOS for each example."""
    eos = tokenizer.eos_token or ""
    items = []
    for ex in examples:
        prompt_ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(ex.answer + eos, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + answer_ids
        labels = ([-100] * len(prompt_ids) if loss_on == "answer" else prompt_ids) + answer_ids
        items.append({"input_ids": ids, "labels": labels})
    return items


def pad_right(items: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of ``input_ids``/``labels`` dicts into a training batch."""
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n] = torch.tensor(it["input_ids"])
        labels[row, :n] = torch.tensor(it["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def validation_examples(task: Task, n: int, n_variants: int = 1) -> list[Example]:
    """The validation conflict set: with ``n_variants`` >= 2, each example followed by its
    perturbations, drawn from the validation streams (``val_conflict``, ``val_perturb``) and
    never from the analysis set's. ``meta`` carries ``val_group`` and ``val_variant`` (0 = the
    original), so the behavior rates stay those of the originals and the pair yield is counted
    per example."""
    conflict = task.conflict_examples(n, stream="val_conflict")
    groups = (task.perturbation_set(conflict, n_variants, stream="val_perturb")
              if n_variants >= 2 else [[ex] for ex in conflict])
    return [replace(ex, meta={**ex.meta, "val_group": g, "val_variant": k})
            for g, group in enumerate(groups) for k, ex in enumerate(group)]


class MemGenDataModule(pl.LightningDataModule):
    """Training examples and the validation conflict set of one task."""

    def __init__(self, cfg: DictConfig, task: Task, tokenizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.task = task
        self.tokenizer = tokenizer
        self.train_items: list[dict[str, Any]] = []
        self.val_examples: list[Example] = []

    def setup(self, stage: str | None = None) -> None:
        if not self.train_items:
            self.train_items = encode_training(self.tokenizer, self.task.train_examples(),
                                               self.cfg.trainer.loss_on)
            self.val_examples = validation_examples(self.task, self.cfg.task.n_val_conflict,
                                                    self.cfg.task.get("n_val_perturbations", 1))

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Validation batches are Example lists: generation moves the prompts itself."""
        if isinstance(batch, list) and batch and isinstance(batch[0], Example):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.cfg.seed)
        return DataLoader(self.train_items,  # type: ignore[arg-type]  # a list is a dataset
                          batch_size=self.cfg.trainer.batch_size, shuffle=True,
                          generator=generator,
                          collate_fn=lambda items: pad_right(items, self.tokenizer.pad_token_id))

    def val_dataloader(self) -> DataLoader:
        """The whole conflict set, in order. On several devices a one-replica
        ``DistributedSampler`` keeps Lightning from sharding it (and from padding it with
        repeated examples): rank 0 generates on all of it (see :mod:`memgen.training.module`)."""
        sampler: DistributedSampler | None = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = DistributedSampler(self.val_examples,  # type: ignore[arg-type]
                                         num_replicas=1, rank=0,
                                         shuffle=False)
        return DataLoader(self.val_examples,  # type: ignore[arg-type]  # a list is a dataset
                          batch_size=self.cfg.analysis.batch_size,
                          shuffle=False, sampler=sampler, collate_fn=list)
