"""The continuous measure: teacher-forced log p(MEM answer) - log p(GEN answer), per item.

A flip of the greedy answer is binary; the margin shows how far, and which way, an intervention
moves an item even when its label does not change (Heimersheim & Nanda, arXiv 2404.15255).
Each answer is scored as training sees it: ``prompt + answer + EOS`` tokens, the sum of the
answer tokens' log-probabilities. Sequences are left-padded, the attention mask and matching
position ids are always passed, and the intervention steers the same positions as in
generation: the prompt positions, its last token, and the answer tokens (the generated passes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from memgen.analysis.generation import position_ids
from memgen.analysis.settings import Subject
from memgen.analysis.steering.intervene import Intervention, forced_layout, intervene
from memgen.analysis.steering.runner import sources_for
from memgen.tasks.base import Example


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_batch(tokenizer, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Rows 2i / 2i+1: example i's prompt + MEM answer / + GEN answer (+ EOS), left-padded.

    Returns input_ids, attention_mask, the prompt / last-prompt / answer masks and
    ``targets`` (the token predicted from each position, -100 where none is scored)."""
    eos = tokenizer.eos_token or ""
    rows = []
    for ex in examples:
        if ex.mem_answer is None or ex.gen_answer is None:
            raise ValueError(f"margin: example {ex.prompt!r} lacks a MEM or GEN answer")
        prompt = _ids(tokenizer, ex.prompt)
        for text in (ex.mem_answer, ex.gen_answer):
            rows.append((prompt, _ids(tokenizer, text + eos)))
    t = max(len(p) + len(a) for p, a in rows)
    b = len(rows)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((b, t), pad, dtype=torch.long)
    out = {name: torch.zeros(b, t, dtype=torch.bool)
           for name in ("attention_mask", "prompt", "last", "answer")}
    targets = torch.full((b, t), -100, dtype=torch.long)
    for row, (prompt, answer) in enumerate(rows):
        start = t - len(prompt) - len(answer)
        seq = prompt + answer
        ids[row, start:] = torch.tensor(seq)
        out["attention_mask"][row, start:] = True
        out["prompt"][row, start:start + len(prompt)] = True
        out["last"][row, start + len(prompt) - 1] = True
        out["answer"][row, start + len(prompt):] = True
        # position p predicts token p + 1: the answer tokens from the last prompt token on
        targets[row, start + len(prompt) - 1:t - 1] = torch.tensor(answer)
    return {"input_ids": ids, **out, "targets": targets}


def answer_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[rows] the summed log-probabilities of each row's answer tokens (``answer_batch``)."""
    device = next(model.parameters()).device
    mask = batch["attention_mask"].long().to(device)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                   position_ids=position_ids(mask), use_cache=False).logits
    logp = torch.log_softmax(logits.float(), -1).cpu()
    targets = batch["targets"]
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != -100)).sum(-1)


@torch.no_grad()
def margins(subject: Subject, examples: Sequence[Example],
            intervention: Intervention | None = None, alpha: float = 1.0,
            direction: str = "to_gen", positions: str = "last_prompt",
            batch_size: int = 64) -> torch.Tensor:
    """[N] log p(MEM answer | prompt) - log p(GEN answer | prompt), unsteered when
    ``intervention`` is None."""
    model, tok = subject.model, subject.tokenizer
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(examples), batch_size):
            chunk = list(examples[start:start + batch_size])
            batch = answer_batch(tok, chunk)
            if intervention is None:
                logp = answer_logprobs(model, batch)
            else:
                sources = {}
                if intervention.kind == "interchange":
                    # each example's two rows share its prompt, so they share its source
                    doubled = [ex for ex in chunk for _ in range(2)]
                    sources = sources_for(model, tok, intervention, doubled, batch["prompt"])
                with intervene(model, intervention, alpha, direction, positions) as state:
                    state.sources = sources
                    with forced_layout(state, batch["prompt"], batch["last"], batch["answer"]):
                        logp = answer_logprobs(model, batch)
            out.append(logp[0::2] - logp[1::2])
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
