"""Batched, left-padded generation with the KV cache, decoded up to the end-of-sequence token.

``generate`` batches prompts of similar token length together (a stable sort by length, outputs
returned in the input order): every batch pads only to its own longest prompt, so less of a
batch's prefill is spent on padding. Left padding with matching position ids makes a prompt's
continuation independent of its batch-mates (up to float rounding, as with any batch size), so
the order changes no result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def left_padding(tokenizer) -> Iterator[None]:
    """Temporarily pad on the left, so that position -1 is every prompt's last token."""
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = previous


def encode_prompts(tokenizer, prompts: Sequence[str], device: torch.device | str) -> dict:
    """Left-padded batch of prompts (no special tokens added), on ``device``."""
    with left_padding(tokenizer):
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True,
                          add_special_tokens=False)
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of a left-padded batch as ``generate`` derives them from the mask: each
    prompt starts at 0 (pads get 0), so padding never moves a token's position."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def decode_new_tokens(tokenizer, ids: torch.Tensor) -> list[str]:
    """Text of generated ids, cut at the first EOS; added tokens (memorized answers) are kept.

    A PAD *before* EOS is the model's own output (a steered model can emit it) and stays in the
    text, so such an answer is OTHER: removing it could splice a broken output into a correct
    one. Finished rows are filled with EOS (:func:`filler_token_id`), so no filler survives the
    cut; without an EOS token the filler is PAD, and the text ends at the first one.
    """
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    texts = []
    for row in ids.tolist():
        if eos in row:
            row = row[: row.index(eos)]
        texts.append(tokenizer.decode(row, skip_special_tokens=False))
    return texts


def length_order(tokenizer, prompts: Sequence[str]) -> list[int]:
    """Indices of ``prompts`` from the longest to the shortest in tokens (stable for ties)."""
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    return sorted(range(len(prompts)), key=lambda i: -lengths[i])


def filler_token_id(tokenizer) -> int | None:
    """What ``generate`` feeds a row that has already ended while others decode: EOS, not PAD.

    transformers drops an all-ones attention mask (a batch of equal-length prompts, common
    because batches are sorted by length) and then decodes without one; a finished row fed the
    pad token made every such pass look like padded input without a mask (its "We strongly
    recommend passing in an `attention_mask`" warning, once per process). The finished row's
    tokens are cut at its first EOS (:func:`decode_new_tokens`), so its filler changes no
    output, and rows never see each other: EOS keeps every unmasked pass free of padding.
    The warning can still appear once when a steered model *generates* its PAD token (content,
    kept in the text as OTHER) in such a batch: that pass holds no padding, so its values are
    exact; only transformers' guess from the token id is wrong.
    """
    eos = tokenizer.eos_token_id
    return eos if eos is not None else tokenizer.pad_token_id


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 8,
             batch_size: int = 64, num_beams: int = 1) -> list[str]:
    """Deterministic continuations (greedy, or beam search with ``num_beams`` > 1), in order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = length_order(tokenizer, prompts) if len(prompts) > batch_size else list(
        range(len(prompts)))
    outputs: list[str] = [""] * len(prompts)
    try:
        for start in range(0, len(prompts), batch_size):
            rows = order[start:start + batch_size]
            batch = encode_prompts(tokenizer, [prompts[i] for i in rows], device)
            ids = model.generate(  # type: ignore[operator]  # a transformers model
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 num_beams=num_beams, pad_token_id=filler_token_id(tokenizer),
                                 eos_token_id=tokenizer.eos_token_id)
            texts = decode_new_tokens(tokenizer, ids[:, batch["input_ids"].shape[1]:])
            for i, text in zip(rows, texts, strict=True):
                outputs[i] = text
    finally:
        model.train(was_training)
    return outputs
