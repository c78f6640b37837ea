"""A finished ``memgen run`` whose model shows both behaviors, built in seconds, for sweeps.

Training the arithmetic task until a small model both memorizes and generalizes takes minutes
and depends on the regime (10 epochs of the suggested CPU regime still gave no MEM at all).
Steering sweeps only need a model with MEM/GEN pairs, so :func:`make_steering_run` builds one
directly: the task's own scratch GPT-2 is fitted (plain torch, full batch) to answer each
analysed conflict prompt with its memorized token when the free addends ascend and with the sum
otherwise — swapping the two free addends (the task's perturbation) then flips the behavior,
which gives a pair on every example — and the clean prompts with the sum. The model is logged
as the ``model`` artifact of a FINISHED run made by ``memgen run``, like a real one.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from memgen.analysis.settings import Subject
from memgen.analysis.stages import label_behaviors
from memgen.config import compose
from memgen.config.adapter import settings_from_config
from memgen.tasks import Example
from memgen.tracking.run import tracked_run
from memgen.training.data import encode_training, pad_right
from memgen.training.runner import prepare

FIXTURE = {
    "task.n_conflict": 24, "task.n_val_conflict": 20, "task.n_clean": 8,
    "task.n_perturbations": 2, "model.n_layer": 2, "model.n_embd": 64, "model.n_head": 2,
    "trainer.num_threads": 1, "trainer.progress_bar": False,
    "analysis.n_shuffles": 2, "analysis.steering.grid_alpha": "[3.0]",
    "analysis.steering.grid_top_fraction": "[0.05]",
}


def store_overrides(root: Path, experiment: str = "memgen", **extra: object) -> list[str]:
    """The local store and outputs under ``root``."""
    base: dict[str, object] = {"tracking.uri": f"sqlite:///{root}/mlruns/mlflow.db",
                               "output_dir": str(root / "outputs"),
                               "tracking.experiment": experiment}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def designed_targets(cfg: DictConfig, task, clean: bool = True) -> list[Example]:
    """MEM when the two free addends ascend, GEN otherwise; clean prompts GEN."""
    conflict = task.conflict_examples(cfg.task.n_conflict)
    groups = task.perturbation_set(conflict, cfg.task.n_perturbations)
    unique = {ex.prompt: ex for group in groups for ex in group}
    out = []
    for ex in unique.values():
        a, b = ex.meta["addends"][:2]
        out.append(dataclasses.replace(ex, answer=ex.mem_answer if a < b else ex.gen_answer))
    return out + (task.clean_examples() if clean else [])


def exact(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Every answer token is the argmax: greedy decoding reproduces every target."""
    pred, target = logits[:, :-1].argmax(-1), labels[:, 1:]
    return bool(((pred == target) | (target == -100)).all())


def fit_targets(model, tokenizer, examples: list[Example], max_steps: int = 400,
                lr: float = 3e-3, batch_size: int = 256, seed: int = 0) -> float:
    """AdamW on the answers only until every target is reproduced; returns the last loss."""
    torch.manual_seed(seed)
    items = encode_training(tokenizer, examples, "answer")
    batches = [pad_right(items[i:i + batch_size], tokenizer.pad_token_id)
               for i in range(0, len(items), batch_size)]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss = float("nan")
    for step in range(max_steps):
        all_exact = True
        for batch in batches:
            opt.zero_grad()
            out = model(**batch)
            out.loss.backward()
            opt.step()
            loss = out.loss.item()
            all_exact &= step % 10 == 9 and exact(out.logits.detach(), batch["labels"])
        if all_exact:
            break
    model.eval()
    return loss


def fit_designed(cfg: DictConfig, max_steps: int = 400, clean: bool = True):
    """The task, tokenizer and scratch model of ``cfg``, fitted to :func:`designed_targets`."""
    task, tokenizer, model = prepare(cfg)
    examples = designed_targets(cfg, task, clean=clean)
    loss = fit_targets(model, tokenizer, examples, max_steps=max_steps, seed=cfg.seed)
    return task, tokenizer, model, loss


def log_model_run(cfg: DictConfig, task, tokenizer, model, **metrics: float) -> str:
    """Log ``model`` as the ``model`` artifact of a FINISHED run made by ``memgen run``."""
    behaviors = label_behaviors(Subject(model, tokenizer, task), settings_from_config(cfg),
                                allow_no_pairs=True)
    with tracked_run(cfg, "run", run_name="sweep-fixture") as run:
        run.set_tags({"memgen.fixture": "designed MEM/GEN targets"})
        run.log_metrics(metrics | behaviors.metrics())
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            run.log_artifacts(tmp, "model")
    return run.run_id


def make_steering_run(root: Path, experiment: str = "memgen", max_steps: int = 400,
                      fixture: dict[str, object] | None = None,
                      **overrides: object) -> tuple[DictConfig, str]:
    """A FINISHED ``memgen run`` with a ``model`` artifact that shows both behaviors.

    ``fixture`` replaces the small :data:`FIXTURE` sizes (``{}``: the default config's).
    """
    sizes = FIXTURE if fixture is None else fixture
    cfg = compose(store_overrides(root, experiment, **(sizes | overrides)))
    task, tokenizer, model, loss = fit_designed(cfg, max_steps)
    return cfg, log_model_run(cfg, task, tokenizer, model, **{"fixture/loss": loss})
