"""The LightningModule: causal-LM training, and validation that generates on conflict examples.

Validation logs the behavior rates on the conflict set and two balance scores, both 1 when half
MEM and half GEN and 0 when either behavior is absent:
- ``val/mem_gen_product`` = 4 * mem_rate * gen_rate, the paper's #GEN x #MEM criterion;
- ``val/behavior_balance`` = 2 * min(mem_rate, gen_rate), which the checkpoint callback
  maximizes by default (``trainer.checkpoint_metric``). The product prefers a checkpoint with
  few OTHER answers even when one behavior is rare (MEM 79% / GEN 13% beats 27% / 31%); the
  minimum keeps the checkpoint where both behaviors are well represented, which the neuron
  contrast needs.

On several devices (DDP) rank 0 generates on the whole conflict set, in the same batches as one
device, and the other ranks skip it; the counts (not the rates) are summed over ranks by
torchmetrics' sync, so every rank logs the same rates and keeps the same checkpoint. Sharding
the set would change each prompt's batch-mates and padding, and greedy decoding is batch-
independent only up to float rounding: the rates could differ from one device's on the same
weights. The conflict set is small (tens to hundreds of prompts) next to training, so the other
ranks waiting costs little.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torchmetrics import SumMetric
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
        # counts per behavior and in all, summed over ranks when computed
        self.counts = torch.nn.ModuleDict({b.value: SumMetric() for b in Behavior})
        self.n_val = SumMetric()
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
        # the epoch's loss is averaged over ranks (a no-op on one device)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: list[Example], batch_idx: int) -> None:
        if self.global_rank != 0:  # rank 0 generates on the whole set (see the module doc)
            return
        outputs = generate(self.model, self.tokenizer, [ex.prompt for ex in batch],
                           max_new_tokens=self.cfg.task.max_new_tokens, batch_size=len(batch),
                           num_beams=self.cfg.analysis.decoding.num_beams)
        labels = [self.task.classify(ex, out) for ex, out in zip(batch, outputs, strict=True)]
        for behavior in Behavior:
            self.counts[behavior.value].update(float(sum(lab == behavior for lab in labels)))
        self.n_val.update(float(len(labels)))

    def on_validation_epoch_end(self) -> None:
        total = self.n_val.compute().clamp(min=1)
        rates = {b: self.counts[b.value].compute() / total for b in Behavior}
        for metric in (*self.counts.values(), self.n_val):
            metric.reset()
        mem, gen = rates[Behavior.MEM], rates[Behavior.GEN]
        self.log_dict({"val/mem_rate": mem, "val/gen_rate": gen,
                       "val/other_rate": rates[Behavior.OTHER],
                       "val/behavior_balance": 2 * torch.minimum(mem, gen)}, prog_bar=True)
        self.log("val/mem_gen_product", 4 * mem * gen)

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
