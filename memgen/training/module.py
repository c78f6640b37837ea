"""The LightningModule: causal-LM training, and validation that generates on conflict examples.

Validation logs the behavior rates on the conflict set and ``val/behavior_balance``
= 4 * mem_rate * gen_rate (1 when half MEM, half GEN; 0 when either is absent) — the paper's
#GEN x #MEM criterion, normalised — which the checkpoint callback maximizes.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torchmetrics import MeanMetric
from transformers import get_linear_schedule_with_warmup

from memgen.analysis.generation import generate
from memgen.errors import NonFiniteLossError
from memgen.tasks import Behavior, Example, Task


class MemGenModule(pl.LightningModule):
    """Wraps any Hugging Face causal LM with its tokenizer and task."""

    def __init__(self, model, tokenizer, task: Task, cfg: DictConfig) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.cfg = cfg
        self.rates = torch.nn.ModuleDict({b.value: MeanMetric() for b in Behavior})
        # a LoRA checkpoint holds the adapter only: the frozen base can be gigabytes
        self.strict_loading = cfg.model.kind != "lora"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.cfg.model.kind == "lora":
            keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if k in keep}

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step}: lower trainer.lr "
                f"or check the data")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].shape[0])
        return loss

    def validation_step(self, batch: list[Example], batch_idx: int) -> None:
        outputs = generate(self.model, self.tokenizer, [ex.prompt for ex in batch],
                           max_new_tokens=self.cfg.task.max_new_tokens, batch_size=len(batch),
                           num_beams=self.cfg.trainer.num_beams)
        labels = [self.task.classify(ex, out) for ex, out in zip(batch, outputs, strict=True)]
        for behavior in Behavior:
            hits = torch.tensor([float(lab == behavior) for lab in labels])
            self.rates[behavior.value].update(hits)

    def on_validation_epoch_end(self) -> None:
        rates = {b: self.rates[b.value].compute() for b in Behavior}
        for metric in self.rates.values():
            metric.reset()
        balance = 4 * rates[Behavior.MEM] * rates[Behavior.GEN]
        self.log_dict({"val/mem_rate": rates[Behavior.MEM], "val/gen_rate": rates[Behavior.GEN],
                       "val/other_rate": rates[Behavior.OTHER], "val/behavior_balance": balance},
                      prog_bar=True)

    def configure_optimizers(self):
        tr = self.cfg.trainer
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if math.isinf(total):
            total = tr.max_epochs * 1000
        scheduler = get_linear_schedule_with_warmup(optimizer, min(tr.warmup_steps, total // 2),
                                                    total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "step"}}
