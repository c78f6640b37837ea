"""Model builders: a GPT-2 (or small Llama) from scratch, or a pretrained causal LM with LoRA."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

# Attention of scratch models trained on CPU (``trainer.accelerator=cpu``). On memgen's CPU
# shapes (4 layers, width 128, left-padded batches with an explicit mask) eager attention was
# 2-13% faster than SDPA for greedy generation and within +-6% for capture, over two runs of
# ``benchmarks/bench_attention.py`` (issue 22); generation is most of the analysis time. Other
# accelerators keep transformers' default (SDPA). Models loaded back with ``from_pretrained``
# get transformers' default again: the choice changes speed, not results beyond float rounding.
CPU_ATTENTION = "eager"


def _attention(cfg: DictConfig) -> dict[str, str]:
    on_cpu = OmegaConf.select(cfg, "trainer.accelerator", default="cpu") == "cpu"
    return {"attn_implementation": CPU_ATTENTION} if on_cpu else {}


def build_scratch_model(cfg: DictConfig, tokenizer):
    """A randomly initialised causal LM sized by ``model.*`` for the tokenizer's vocabulary."""
    m = cfg.model
    special = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id, **_attention(cfg)}
    if m.arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=m.n_positions, n_embd=m.n_embd,
                            n_layer=m.n_layer, n_head=m.n_head, resid_pdrop=m.dropout,
                            embd_pdrop=m.dropout, attn_pdrop=m.dropout, **special)
        return GPT2LMHeadModel(config)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=m.n_embd,
                         intermediate_size=m.intermediate_size or 4 * m.n_embd,
                         num_hidden_layers=m.n_layer, num_attention_heads=m.n_head,
                         num_key_value_heads=m.n_head, max_position_embeddings=m.n_positions,
                         attention_dropout=m.dropout, **special)
    return LlamaForCausalLM(config)


def count_parameters(model) -> dict[str, int]:
    """Total and trainable parameter counts, logged with every run."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model/params_total": total, "model/params_trainable": trainable}
