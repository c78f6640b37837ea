"""Rank neurons for steering by their attributed effect, not by how well they correlate.

|r| ranks neurons by how well they *tell* MEM from GEN; many of them only encode the input
(which perturbation was drawn) and do nothing to the answer when shifted. Attribution patching
(Nanda 2023; Syed et al., arXiv 2310.10348) estimates what shifting each neuron by its NMD does
to the answer, to first order, from one backward pass per batch:

    score_i = NMD_i * E[ d(log p(MEM answer) - log p(GEN answer)) / d h_i ]

summed over the positions the intervention steers (teacher-forced ``prompt + answer`` rows, as
in ``margin.py``) and averaged over the selection split's MEM items and GEN items with equal
weight. A positive score says adding the NMD moves the answer toward MEM (and subtracting it
toward GEN); the ranking is by score, highest first, so neurons predicted to push the wrong way
come last.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch

from memgen.analysis.neurons import SiteStats
from memgen.analysis.settings import Subject
from memgen.analysis.sites import hook_site
from memgen.analysis.steering.intervene import PassState, check_positions, position_mask
from memgen.analysis.steering.margin import answer_batch, answer_logprobs
from memgen.tasks.base import Example


def _steered_mask(batch: Mapping[str, torch.Tensor], positions: str) -> torch.Tensor:
    """[rows, T] the positions a mode steers in this teacher-forced pass (as the hook does)."""
    state = PassState(forced={k: batch[k] for k in ("prompt", "last", "answer")})
    return position_mask(check_positions(positions), state, batch["input_ids"])


def _margin_gradients(model, batch: Mapping[str, torch.Tensor], sites: Sequence[str]
                      ) -> list[torch.Tensor]:
    """d(sum of the rows' margins)/d(each site's activation) [rows, T, D] for one batch, every
    path included (a site's gradient flows through the later sites). An activation outside
    the graph (frozen weights) becomes a leaf; ``autograd.grad`` fills no parameter's grad."""
    held: dict[str, torch.Tensor] = {}

    def keeper(site: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def keep(h: torch.Tensor) -> torch.Tensor:
            held[site] = h if h.requires_grad else h.detach().requires_grad_(True)
            return held[site]

        return keep

    handles = []
    try:
        for site in sites:
            handles.append(hook_site(model, site, keeper(site)))
        with torch.enable_grad():
            logp = answer_logprobs(model, dict(batch))
            margin = (logp[0::2] - logp[1::2]).sum()
            return list(torch.autograd.grad(margin, [held[s] for s in sites]))
    finally:
        for handle in handles:
            handle.remove()


def _gradients(subject: Subject, examples: Sequence[Example], sites: Sequence[str],
               positions: str, batch_size: int) -> dict[str, torch.Tensor]:
    """{site: [N, D]} d(margin)/d(activation), summed over the steered positions of both rows
    of each item (the two rows share the prompt, so the sum is the gradient of the margin)."""
    model, tok = subject.model, subject.tokenizer
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    try:
        for start in range(0, len(examples), batch_size):
            batch = answer_batch(tok, list(examples[start:start + batch_size]))
            grads = _margin_gradients(model, batch, sites)
            mask = _steered_mask(batch, positions).to(device).unsqueeze(-1)
            for site, g in zip(sites, grads, strict=True):
                per_row = (g.float() * mask).sum(1).cpu()  # [2n, D]
                out[site].append(per_row[0::2] + per_row[1::2])
    finally:
        model.train(was_training)
    return {site: torch.cat(parts) for site, parts in out.items()}


def attribution_scores(subject: Subject, examples: Sequence[Example],
                       labels: torch.Tensor | Sequence[int], stats: Mapping[str, SiteStats],
                       positions: str = "last_prompt", batch_size: int = 64
                       ) -> dict[str, torch.Tensor]:
    """{site: [D]} each neuron's NMD times its mean margin gradient, MEM and GEN items weighted
    equally (labels: MEM=1, GEN=0)."""
    y = torch.as_tensor(labels, dtype=torch.long)
    if len(examples) != len(y):
        raise ValueError(f"labels: {len(y)} for {len(examples)} examples")
    if not (y == 1).any() or not (y == 0).any():
        raise ValueError("attribution: needs MEM and GEN items on the selection split")
    grads = _gradients(subject, examples, list(stats), positions, batch_size)
    return {site: stats[site].nmd.float().cpu() * 0.5 * (g[y == 1].mean(0) + g[y == 0].mean(0))
            for site, g in grads.items()}


def ranked_by(stats: Mapping[str, SiteStats], scores: Mapping[str, torch.Tensor]
              ) -> dict[str, SiteStats]:
    """The same statistics, ranked for steering by ``scores`` (highest first) instead of
    abs(r)."""
    missing = [site for site in stats if site not in scores]
    if missing:
        raise ValueError(f"attribution: no scores for site(s) {missing}")
    return {site: replace(st, priority=scores[site]) for site, st in stats.items()}
