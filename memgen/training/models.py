"""Model builders: a GPT-2 (or small Llama) from scratch, or a pretrained causal LM with LoRA."""

from __future__ import annotations

from omegaconf import DictConfig
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

# Attention: transformers' default (SDPA) on every device, chosen with
# ``benchmarks/bench_attention.py`` (issue 22). On memgen's CPU shapes (4 layers, width 128,
# left-padded batches with an explicit mask) eager was 2-13% faster for greedy generation and
# within +-6% for capture (two runs, 1 thread, CPU time); on a 6x512 GPT-2 SDPA captured ~10%
# faster. The choice is not saved with a model: ``from_pretrained`` always builds SDPA, so an
# eager-built model and its reloaded copy would differ in float rounding (and a trained run's
# analysis would not be bit-reproducible from its logged model). A few percent of generation
# speed is not worth that.
ATTENTION = "sdpa"


def build_scratch_model(cfg: DictConfig, tokenizer):
    """A randomly initialised causal LM sized by ``model.*`` for the tokenizer's vocabulary."""
    m = cfg.model
    special = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id, "attn_implementation": ATTENTION}
    if m.arch == "gpt2":
        gpt2 = GPT2Config(vocab_size=len(tokenizer), n_positions=m.n_positions, n_embd=m.n_embd,
                            n_layer=m.n_layer, n_head=m.n_head, resid_pdrop=m.dropout,
                            embd_pdrop=m.dropout, attn_pdrop=m.dropout, **special)
        return GPT2LMHeadModel(gpt2)
    llama = LlamaConfig(vocab_size=len(tokenizer), hidden_size=m.n_embd,
                         intermediate_size=m.intermediate_size or 4 * m.n_embd,
                         num_hidden_layers=m.n_layer, num_attention_heads=m.n_head,
                         num_key_value_heads=m.n_head, max_position_embeddings=m.n_positions,
                         attention_dropout=m.dropout, **special)
    return LlamaForCausalLM(llama)


def count_parameters(model) -> dict[str, int]:
    """Total and trainable parameter counts, logged with every run."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"model/params_total": total, "model/params_trainable": trainable}
