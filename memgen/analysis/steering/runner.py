"""Generate (or run one forward pass) under an :class:`Intervention`, batch by batch.

Every kind but ``interchange`` holds one set of hooks over the whole generation. Interchange
copies values from each item's own source item, so it runs batch by batch: the sources' values
at the selected coordinates are read first (a plain forward, no hooks of the intervention),
placed at the targets' relative prompt positions (``align_sources``), then the batch generates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memgen.analysis.capture import forward_inputs
from memgen.analysis.generation import (
    decode_new_tokens,
    encode_prompts,
    filler_token_id,
    generate,
)
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.sites import hook_site
from memgen.analysis.steering.intervene import Intervention, align_sources, intervene
from memgen.tasks.base import Example


@torch.no_grad()
def site_values(model: nn.Module, tokenizer, prompts: Sequence[str],
                intervention: Intervention) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every position's values at the selected coordinates of each site ({site: [B, T, k]},
    float32 CPU) for one left-padded batch, and its attention mask [B, T]."""
    device = next(model.parameters()).device
    batch = encode_prompts(tokenizer, prompts, device)
    found: dict[str, torch.Tensor] = {}
    handles = []
    groups = intervention.site_groups()
    indices = intervention.selection.indices.long()
    try:
        for site, js in groups.items():
            idx = indices[js].to(device)

            def record(h, site=site, idx=idx):
                found[site] = h.index_select(-1, idx).detach().float().cpu()

            handles.append(hook_site(model, site, record))
        model(**forward_inputs(model, batch))
    finally:
        for handle in handles:
            handle.remove()
    return found, batch["attention_mask"].cpu()


def sources_for(model: nn.Module, tokenizer, intervention: Intervention,
                examples: Sequence[Example], target_prompt: torch.Tensor
                ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The interchange sources of one batch, aligned to the targets' prompt positions."""
    missing = [ex.prompt for ex in examples if ex not in intervention.sources]
    if missing:
        raise ValueError(f"interchange: no source item for {len(missing)} item(s), e.g. "
                         f"{missing[0]!r}")
    values, source_prompt = site_values(model, tokenizer,
                                        [intervention.sources[ex].prompt for ex in examples],
                                        intervention)
    return {site: align_sources(target_prompt.cpu().bool(), v, source_prompt.bool())
            for site, v in values.items()}


@torch.no_grad()
def generate_with(subject: Subject, intervention: Intervention, alpha: float, direction: str,
                  positions: str, examples: Sequence[Example], decoding: Decoding) -> list[str]:
    """Continuations of ``examples`` under the intervention, in order."""
    model, tok = subject.model, subject.tokenizer
    prompts = [ex.prompt for ex in examples]
    if not prompts:
        return []
    if intervention.kind != "interchange":
        with intervene(model, intervention, alpha, direction, positions):
            return generate(model, tok, prompts, decoding.max_new_tokens, decoding.batch_size,
                            decoding.num_beams)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), decoding.batch_size):
            chunk = list(examples[start:start + decoding.batch_size])
            batch = encode_prompts(tok, [ex.prompt for ex in chunk], device)
            sources = sources_for(model, tok, intervention, chunk, batch["attention_mask"])
            with intervene(model, intervention, alpha, direction, positions) as state:
                state.sources = sources
                ids = model.generate(**batch, max_new_tokens=decoding.max_new_tokens,
                                     do_sample=False, num_beams=decoding.num_beams,
                                     pad_token_id=filler_token_id(tok),
                                     eos_token_id=tok.eos_token_id)
            outputs += decode_new_tokens(tok, ids[:, batch["input_ids"].shape[1]:])
    finally:
        model.train(was_training)
    return outputs
