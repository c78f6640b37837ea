"""The answer lens: is the behaviour readable at a site along each item's own pair of answers?

A linear probe looks for one direction that separates MEM from GEN across items. That direction
exists when the two behaviours answer with different kinds of token (arithmetic: a memorized
token against a scratchpad). When both answers are ordinary words that change from item to item
(colour: the memorized and the inferred colour), the model can decide along the item's own
pair of unembedding rows instead, and a shared direction need not exist: the probe then fails
although the decision is already made. The lens tells the two apart.

For each ``resid`` site and item it reads the activation through the model's final norm and
unembedding (the logit lens, nostalgebraist 2020) along ``W_U[MEM] - W_U[GEN]``, the first
token of each answer: one number per item, fitted as a one-feature probe on the selection split
and scored on the evaluation split like every other probe. At ``resid.<n_layers>`` it is the
model's own logit difference. Items whose two answers share their first token read 0 (the
decision falls on a later token); ``distinct_share`` says how many do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from memgen.analysis.probes import score_probe, train_probe
from memgen.analysis.sites import parse_site, unwrap
from memgen.tasks.base import Example

LENS_KIND = "resid"  # only the residual stream lives in the unembedding's input space


def final_norm(model: nn.Module) -> nn.Module:
    """The norm between the last block and the unembedding (GPT-2 ``ln_f``, Llama ``norm``)."""
    base = unwrap(model)
    transformer = getattr(base, "transformer", None)
    if transformer is not None and hasattr(transformer, "ln_f"):
        return transformer.ln_f
    inner = getattr(base, "model", None)
    if inner is not None and hasattr(inner, "norm"):
        return inner.norm
    raise ValueError(f"answer lens: no final norm found on {type(base).__name__} "
                     f"(expected transformer.ln_f or model.norm)")


def unembedding(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W_U [vocab, d] and its bias (None without one), from transformers' output embeddings."""
    base: Any = unwrap(model)
    head = base.get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def first_answer_tokens(tokenizer, examples: Sequence[Example]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] first token of each example's MEM answer and of its GEN answer, tokenized as the
    margin and training see them (the answer alone, after the prompt)."""
    mem: list[int] = []
    gen: list[int] = []
    for ex in examples:
        if ex.mem_answer is None or ex.gen_answer is None:
            raise ValueError(f"answer lens: example {ex.prompt!r} lacks a MEM or GEN answer")
        for text, out in ((ex.mem_answer, mem), (ex.gen_answer, gen)):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"answer lens: answer {text!r} tokenizes to nothing")
            out.append(int(ids[0]))
    return torch.tensor(mem, dtype=torch.long), torch.tensor(gen, dtype=torch.long)


@torch.no_grad()
def lens_margins(model: nn.Module, hidden: torch.Tensor, mem_ids: torch.Tensor,
                 gen_ids: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """[N] final_norm(h) . (W_U[mem] - W_U[gen]) per row of ``hidden`` [N, D], in float32,
    plus the unembedding's bias difference where it has one: at ``resid.<n_layers>`` this is
    exactly the model's logit difference."""
    if hidden.ndim != 2 or hidden.shape[0] != mem_ids.numel() or mem_ids.shape != gen_ids.shape:
        raise ValueError(f"answer lens: expected hidden [N, D] and N answer ids, got "
                         f"{tuple(hidden.shape)}, {tuple(mem_ids.shape)}, {tuple(gen_ids.shape)}")
    norm = final_norm(model)
    weight, bias = unembedding(model)
    out = []
    for start in range(0, hidden.shape[0], batch_size):
        h = hidden[start:start + batch_size].to(device=weight.device, dtype=weight.dtype)
        m = mem_ids[start:start + batch_size].to(weight.device)
        g = gen_ids[start:start + batch_size].to(weight.device)
        margin = (norm(h).float() * (weight[m] - weight[g]).float()).sum(-1)
        if bias is not None:
            margin = margin + (bias[m] - bias[g]).float()
        out.append(margin.cpu())
    return torch.cat(out)


@dataclass
class LensReport:
    """Held-out accuracy of the one-feature lens probe per resid site."""

    acc: dict[str, float]  # site -> accuracy on the evaluation split
    distinct_share: float  # evaluation items whose two answers differ in their first token

    def metrics(self) -> dict[str, float]:
        out = {f"probe/lens_acc/{site}": acc for site, acc in self.acc.items()}
        if self.acc:
            out["probe/lens/best_acc"] = max(self.acc.values())
        out["probe/lens/distinct_share"] = self.distinct_share
        return out


def answer_lens(model: nn.Module, tokenizer,
                train: tuple[Mapping[str, torch.Tensor], torch.Tensor, Sequence[Example]],
                evaluation: tuple[Mapping[str, torch.Tensor], torch.Tensor, Sequence[Example]],
                **probe_kw: Any) -> LensReport:
    """The lens probe at every resid site of ``train`` (features, labels, examples), fitted
    there and scored on ``evaluation``."""
    (x_train, y_train, ex_train), (x_eval, y_eval, ex_eval) = train, evaluation
    ids_train = first_answer_tokens(tokenizer, ex_train)
    ids_eval = first_answer_tokens(tokenizer, ex_eval)
    acc: dict[str, float] = {}
    for site in x_train:
        if parse_site(site).kind != LENS_KIND:
            continue
        f_train = lens_margins(model, x_train[site], *ids_train).unsqueeze(1)
        f_eval = lens_margins(model, x_eval[site], *ids_eval).unsqueeze(1)
        probe = train_probe(f_train, y_train, **probe_kw)
        acc[site] = float(score_probe(probe, f_eval, y_eval)["acc"])
    distinct = float((ids_eval[0] != ids_eval[1]).float().mean()) if len(ex_eval) else float("nan")
    return LensReport(acc=acc, distinct_share=distinct)
