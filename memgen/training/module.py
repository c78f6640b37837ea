"""The LightningModule: causal-LM training, and validation that generates on conflict examples.

Validation logs the behavior rates on the conflict set and two balance scores, both 1 when half
MEM and half GEN and 0 when either behavior is absent:
- ``val/mem_gen_product`` = 4 * mem_rate * gen_rate, the paper's #GEN x #MEM criterion;
- ``val/behavior_balance`` = 2 * min(mem_rate, gen_rate), which the checkpoint callback
  maximizes by default (``trainer.checkpoint_metric``). The product prefers a checkpoint with
  few OTHER answers even when one behavior is rare (MEM 79% / GEN 13% beats 27% / 31%); the
  minimum keeps the checkpoint where both behaviors are well represented, which the neuron
  contrast needs.

With ``task.n_val_perturbations`` >= 2 each validation example comes with perturbations drawn
from a validation stream, and ``val/pair_yield`` is the share of examples whose variants split
between MEM and GEN: what the analysis needs (pairs), measured on validation data, never on the
analysis set. The rates stay those of the originals (variant 0), comparable with one variant.
``val/pair_yield_with_both`` adds 1 where the originals show MEM and GEN each at
``trainer.both_min_rate`` or more, so a checkpoint kept by it shows both behaviours whenever any
epoch did, and among those has the most pairs.
Every epoch's rates are kept in ``behavior_history`` (saved in checkpoints, so a resumed run
still knows whether an earlier epoch showed both behaviors).

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
from memgen.training.regime import n_split


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
        self.n_split, self.n_groups = SumMetric(), SumMetric()  # examples whose variants split
        self._variant_labels: dict[int, set[Behavior]] = {}
        self.behavior_history: list[dict[str, float]] = []  # one row per validation epoch
        # a LoRA checkpoint holds the adapter only: the frozen base can be gigabytes
        self.strict_loading = cfg.model.kind != "lora"

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.cfg.model.kind == "lora":
            keep = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if k in keep}
        checkpoint["memgen_behavior_history"] = list(self.behavior_history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.behavior_history = list(checkpoint.get("memgen_behavior_history", []))

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
        for ex, lab in zip(batch, labels, strict=True):
            self._variant_labels.setdefault(ex.meta.get("val_group", -1), set()).add(lab)
        originals = [lab for ex, lab in zip(batch, labels, strict=True)
                     if ex.meta.get("val_variant", 0) == 0]
        for behavior in Behavior:
            self._count(behavior).update(float(sum(lab == behavior for lab in originals)))
        self.n_val.update(float(len(originals)))

    def _count(self, behavior: Behavior) -> SumMetric:
        return self.counts[behavior.value]  # type: ignore[return-value]  # a SumMetric each

    def on_validation_epoch_end(self) -> None:
        total = self.n_val.compute().clamp(min=1)
        rates = {b: self._count(b).compute() / total for b in Behavior}
        self.n_split.update(float(n_split(self._variant_labels.values())))
        self.n_groups.update(float(len(self._variant_labels)))
        self._variant_labels = {}
        pair_yield = self.n_split.compute() / self.n_groups.compute().clamp(min=1)
        for metric in (*map(self._count, Behavior), self.n_val, self.n_split, self.n_groups):
            metric.reset()
        mem, gen = rates[Behavior.MEM], rates[Behavior.GEN]
        self.log_dict({"val/mem_rate": mem, "val/gen_rate": gen,
                       "val/other_rate": rates[Behavior.OTHER],
                       "val/behavior_balance": 2 * torch.minimum(mem, gen)}, prog_bar=True)
        self.log("val/mem_gen_product", 4 * mem * gen)
        if self.cfg.task.get("n_val_perturbations", 1) >= 2:
            self.log("val/pair_yield", pair_yield, prog_bar=True)
            both_at = float(self.cfg.get("trainer", {}).get("both_min_rate", 0.2))
            both = bool(min(float(mem), float(gen)) >= both_at - 1e-9)
            self.log("val/pair_yield_with_both", pair_yield + float(both))
        if not self.trainer.sanity_checking:
            self.behavior_history.append({"epoch": float(self.current_epoch),
                                          "mem": float(mem), "gen": float(gen)})

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
