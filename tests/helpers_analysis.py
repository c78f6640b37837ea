"""Tiny models and a character tokenizer for analysis tests: built in memory, no downloads."""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
)

from memgen.training.tokenizer import build_char_tokenizer

CHARS = list("0123456789+:\n Inputarge")  # enough for arithmetic prompts
N_LAYERS = 2
WIDTH = 32

# Different lengths on purpose: left padding must not change any prompt's continuation.
PROMPTS = ["Input:\n1+2\nTarget:\n", "12+7", "9", "Input:\n532+499+155+85\nTarget:\n",
           "3+4+5", "unit", "7\n8", "Input:\n99+1\n"]


def char_tokenizer(extra_tokens: list[str] | None = None, chars: list[str] = CHARS
                   ) -> PreTrainedTokenizerBase:
    """One token per character, plus whole-token ``extra_tokens`` (memorized answers)."""
    return build_char_tokenizer(["".join(chars)], extra_tokens or [])


def tiny_gpt2(vocab_size: int, seed: int = 0, width: int = WIDTH, layers: int = N_LAYERS,
              n_positions: int = 64, init: float = 0.02) -> GPT2LMHeadModel:
    """A seeded GPT-2 of ``layers`` blocks; ``init`` is its weights' initializer range."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=width,
                        n_layer=layers, n_head=2, bos_token_id=1, eos_token_id=1,
                        pad_token_id=0, initializer_range=init)
    return GPT2LMHeadModel(config).eval()


def tiny_llama(vocab_size: int, seed: int = 0, n_positions: int = 64,
               init: float = 0.02) -> LlamaForCausalLM:
    """A seeded Llama-layout model (grouped-query attention, gated MLP)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=WIDTH, intermediate_size=48,
                         num_hidden_layers=N_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=n_positions, bos_token_id=1, eos_token_id=1,
                         pad_token_id=0, initializer_range=init)
    return LlamaForCausalLM(config).eval()


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def hook_count(model: torch.nn.Module) -> int:
    """Forward hooks and pre-hooks registered on any submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
