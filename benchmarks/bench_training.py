"""Training throughput: the Lightning module (with memgen's default callbacks) against a plain
PyTorch loop on the same model, data and optimizer, in the same process.

Both sides train the default CPU GPT-2 on the default task's batches for the same number of
steps; tokens/s counts non-padding tokens. Model FLOP utilization (MFU) uses 6 * params per
token (forward + backward) plus attention, against a matmul peak measured here at the same
thread count. Validation generation is switched off on the Lightning side (it is not training
throughput); the checkpoint callback and the logger stay on. Threads: ``THREADS`` (2, torch's
default on the 2-core CPU the default configs target), pinned and printed.
"""

from __future__ import annotations

import tempfile
import time

import pytorch_lightning as pl
import torch

from memgen.config import compose
from memgen.training.data import MemGenDataModule, make_task, task_tokenizer
from memgen.training.models import build_scratch_model
from memgen.training.module import MemGenModule

STEPS, THREADS = 60, 2


def matmul_peak(size: int = 512, repeats: int = 20) -> float:
    """Measured fp32 matmul FLOP/s at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def flops_per_token(model, seq_len: int) -> float:
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    return 6 * params + 12 * cfg.n_layer * cfg.n_embd * seq_len


def _setup(tmp: str):
    cfg = compose([f"output_dir={tmp}", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                   "trainer.progress_bar=false"])
    task = make_task(cfg)
    tokenizer = task_tokenizer(task)
    datamodule = MemGenDataModule(cfg, task, tokenizer)
    datamodule.setup()
    batches = []
    while len(batches) < STEPS:  # as many epochs of the default batches as STEPS needs
        for batch in datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == STEPS:
                break
    return cfg, task, tokenizer, batches


def plain_loop(cfg, tokenizer, batches) -> float:
    torch.manual_seed(cfg.seed)
    model = build_scratch_model(cfg, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.trainer.lr,
                                  weight_decay=cfg.trainer.weight_decay)
    start = time.perf_counter()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


class _TimedBatches(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.elapsed = time.perf_counter() - self.start


def lightning_loop(cfg, task, tokenizer, batches, tmp: str) -> float:
    from memgen.training.lightning import make_checkpoints

    torch.manual_seed(cfg.seed)
    model = build_scratch_model(cfg, tokenizer)
    module = MemGenModule(model, tokenizer, task, cfg)
    timer = _TimedBatches()
    best, on_exception = make_checkpoints(tempfile.mkdtemp(dir=tmp))
    trainer = pl.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, logger=False,
                         callbacks=[best, on_exception, timer], enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         gradient_clip_val=cfg.trainer.gradient_clip_val,
                         deterministic=cfg.trainer.deterministic, default_root_dir=tmp)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)  # the same prepared batches
    trainer.fit(module, train_dataloaders=loader)
    return timer.elapsed


def run(threads: int = THREADS) -> list[dict]:
    from _common import load, pinned_threads

    with pinned_threads(threads):
        return _run(threads, load())


def _run(threads: int, load: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg, task, tokenizer, batches = _setup(tmp)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        seq_len = max(b["input_ids"].shape[1] for b in batches)
        plain_loop(cfg, tokenizer, batches[:5])  # warm-up
        plain, lightning = [], []
        for _ in range(3):  # interleaved, best of three: the machine may be shared
            plain.append(plain_loop(cfg, tokenizer, batches))
            lightning.append(lightning_loop(cfg, task, tokenizer, batches, tmp))
        plain, lightning = min(plain), min(lightning)
        model = build_scratch_model(cfg, tokenizer)
        peak = matmul_peak()
    fpt = flops_per_token(model, seq_len)
    plain_tps, lightning_tps = tokens / plain, tokens / lightning
    return [
        {"benchmark": "training", "measure": f"plain PyTorch loop ({threads} thread(s), {load})",
         "value": plain_tps,
         "unit": "tokens/s", "target": ""},
        {"benchmark": "training", "measure": "Lightning module + callbacks",
         "value": lightning_tps, "unit": "tokens/s", "target": ""},
        {"benchmark": "training", "measure": "Lightning / plain", "value": lightning_tps /
         plain_tps, "unit": "ratio", "target": ">= 0.95"},
        {"benchmark": "training", "measure": "matmul peak", "value": peak / 1e9,
         "unit": "GFLOP/s", "target": ""},
        {"benchmark": "training", "measure": "MFU (Lightning)", "value": lightning_tps * fpt /
         peak, "unit": "fraction", "target": ""},
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
