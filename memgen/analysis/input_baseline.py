"""The input-only baseline: what a probe reaches from the prompt's tokens alone.

A probe on the model's hidden states means something only if it beats a probe that sees the
same input without the model. Reading the embedding at the prompt's last token (``resid.0``)
is no such baseline: every prompt of a task ends with the same token, so those features are
constant and that probe scores exactly the majority class. This baseline sees the whole
prompt instead: bag-of-tokens counts plus a one-hot of the token at each of the last
``MAX_POSITIONS`` positions (counted from the end, so the shared suffix lines up). A label that
is a function of the input tokens is learnable from it; a label that is not stays at chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from memgen.analysis.probes import score_probe, train_probe

MAX_POSITIONS = 64


def _keys(ids: Sequence[int]) -> list[tuple[int, int]]:
    """(position from the end, token) for the last MAX_POSITIONS tokens, and (-1, token) for
    the bag of all tokens."""
    tail = list(reversed(ids))[:MAX_POSITIONS]
    return [(pos, tok) for pos, tok in enumerate(tail)] + [(-1, tok) for tok in ids]


def token_features(token_ids: Sequence[Sequence[int]],
                   columns: dict[tuple[int, int], int] | None = None
                   ) -> tuple[torch.Tensor, dict[tuple[int, int], int]]:
    """[N, D] features and their columns. Without ``columns`` (the train split) they are the
    keys seen in these prompts; with them (the evaluation split) unseen keys are dropped."""
    keyed = [_keys(ids) for ids in token_ids]
    if columns is None:
        columns = {key: i for i, key in enumerate(dict.fromkeys(k for ks in keyed for k in ks))}
    x = torch.zeros(len(token_ids), max(1, len(columns)))
    for row, keys in enumerate(keyed):
        for key in keys:
            col = columns.get(key)
            if col is not None:
                x[row, col] += 1.0
    return x, columns


def encode(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt, no special tokens (as the model reads them)."""
    return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]


def input_only_accuracy(tokenizer, train_prompts: Sequence[str], y_train: torch.Tensor,
                        eval_prompts: Sequence[str], y_eval: torch.Tensor, **probe_kw) -> float:
    """Held-out accuracy of a probe on the prompts' token features."""
    x_train, columns = token_features(encode(tokenizer, train_prompts))
    x_eval, _ = token_features(encode(tokenizer, eval_prompts), columns)
    probe = train_probe(x_train, y_train, **probe_kw)
    return float(score_probe(probe, x_eval, y_eval)["acc"])
