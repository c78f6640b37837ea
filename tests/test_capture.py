"""Capture reads the named sites at the last prompt token, batched or not, and cleans up."""

from __future__ import annotations

import pytest
import torch

from memgen.analysis.capture import (
    capture_last_token,
    collect_features,
    forward_inputs,
    iter_feature_batches,
)
from memgen.analysis.generation import encode_prompts
from memgen.analysis.sites import _backbone, _down_proj, list_sites, unwrap
from tests.helpers_analysis import MODELS, N_LAYERS, PROMPTS, char_tokenizer, hook_count


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


def _final_norm(model):
    base = unwrap(model)
    return base.transformer.ln_f if hasattr(base, "transformer") else base.model.norm


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_resid_sites_match_hidden_states(arch, tokenizer):
    model = MODELS[arch](len(tokenizer))
    batch = encode_prompts(tokenizer, PROMPTS[:1], "cpu")  # one unpadded prompt
    sites = [f"resid.{i}" for i in range(N_LAYERS + 1)]
    with torch.no_grad(), capture_last_token(model, sites) as rec:
        hidden = model(**batch, output_hidden_states=True).hidden_states
    for layer in range(N_LAYERS):
        torch.testing.assert_close(rec[f"resid.{layer}"], hidden[layer][:, -1])
    last = rec[f"resid.{N_LAYERS}"]
    # The last site is the raw block output: HF's last hidden state is it after the final norm.
    assert not torch.allclose(last, hidden[N_LAYERS][:, -1])
    with torch.no_grad():
        torch.testing.assert_close(_final_norm(model)(last), hidden[N_LAYERS][:, -1])


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_mlp_site_is_down_projection_input(arch, tokenizer):
    model = MODELS[arch](len(tokenizer))
    config = model.config
    expected_width = config.intermediate_size if arch == "llama" else 4 * config.n_embd
    _, blocks = _backbone(model)
    mlp_out = {}
    handles = [block.mlp.register_forward_hook(
        lambda _m, _a, out, i=i: mlp_out.__setitem__(i, out[:, -1])) for i, block in
        enumerate(blocks, start=1)]
    try:
        with torch.no_grad(), capture_last_token(model, "mlp") as rec:
            model(**encode_prompts(tokenizer, PROMPTS[:3], "cpu"))
    finally:
        for handle in handles:
            handle.remove()
    assert list(rec) == [f"mlp.{i}" for i in range(1, N_LAYERS + 1)]
    for i, block in enumerate(blocks, start=1):
        h = rec[f"mlp.{i}"]
        assert h.shape == (3, expected_width) and h.dtype == torch.float32
        with torch.no_grad():
            torch.testing.assert_close(_down_proj(block)(h), mlp_out[i])


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_batched_left_padded_equals_unbatched(arch, tokenizer):
    model = MODELS[arch](len(tokenizer))
    assert len({len(p) for p in PROMPTS}) > 1  # batches really are padded
    batched = collect_features(model, tokenizer, PROMPTS, "all", batch_size=5)
    single = collect_features(model, tokenizer, PROMPTS, "all", batch_size=1)
    # the site names are a contract (docs/design.md): spelled out, not derived from the code
    assert N_LAYERS == 2
    assert list(batched) == ["resid.0", "resid.1", "resid.2", "mlp.1", "mlp.2"]
    assert list_sites(model) == list(batched)
    for site in batched:
        assert batched[site].shape[0] == len(PROMPTS)
        torch.testing.assert_close(batched[site], single[site], atol=1e-5, rtol=1e-4)


def test_iter_feature_batches_streams_in_order_without_holding_hooks(tokenizer):
    model = MODELS["gpt2"](len(tokenizer))
    before = hook_count(model)
    stream = iter_feature_batches(model, tokenizer, PROMPTS, ["resid.1", "mlp.2"], batch_size=3)
    first = next(stream)
    assert hook_count(model) == before  # suspended generator holds no hooks
    rest = list(stream)
    assert [b["resid.1"].shape[0] for b in [first, *rest]] == [3, 3, 2]
    full = collect_features(model, tokenizer, PROMPTS, ["resid.1", "mlp.2"], batch_size=3)
    torch.testing.assert_close(torch.cat([b["mlp.2"] for b in [first, *rest]]), full["mlp.2"])


def test_collect_restores_mode_and_handles_empty(tokenizer):
    model = MODELS["llama"](len(tokenizer)).train()
    features = collect_features(model, tokenizer, [], ["resid.0", "mlp.1"])
    assert features["resid.0"].shape == (0, 32) and features["mlp.1"].shape == (0, 48)
    collect_features(model, tokenizer, PROMPTS[:2], "resid")
    assert model.training


def test_hooks_removed_after_exit_and_after_exception(tokenizer):
    model = MODELS["gpt2"](len(tokenizer))
    batch = encode_prompts(tokenizer, PROMPTS[:2], "cpu")
    before = hook_count(model)
    with torch.no_grad(), capture_last_token(model, "all") as rec:
        assert hook_count(model) == before + len(list_sites(model))
        model(**batch)
        model(**batch)
    assert hook_count(model) == before
    assert rec["resid.1"].shape == (4, 32) and len(rec.passes("resid.1")) == 2
    with torch.no_grad():
        model(**batch)  # after exit nothing is recorded any more
    assert len(rec.passes("resid.1")) == 2

    with pytest.raises(RuntimeError, match="boom"), capture_last_token(model, "all"):
        raise RuntimeError("boom")
    assert hook_count(model) == before
    with pytest.raises(ValueError, match="resid.9"), capture_last_token(model, ["resid.9"]):
        pass
    assert hook_count(model) == before


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_collect_writes_each_prompt_into_its_own_row(arch, tokenizer):
    """Results are one [N, D] float32 buffer per site, each row the prompt's own last token
    (equal to capturing that prompt alone), however the batches fall."""
    model = MODELS[arch](len(tokenizer))
    features = collect_features(model, tokenizer, PROMPTS, ["resid.1", "mlp.2"], batch_size=3)
    for site, x in features.items():
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert x.untyped_storage().nbytes() == x.numel() * 4  # its own buffer, not a view
        for row, prompt in enumerate(PROMPTS):
            with torch.no_grad(), capture_last_token(model, [site]) as rec:
                model(**encode_prompts(tokenizer, [prompt], "cpu"))
            torch.testing.assert_close(x[row], rec[site][0], atol=1e-5, rtol=1e-4)


def test_capture_converts_low_precision_activations_to_float32(tokenizer):
    """A bf16 model's activations land in float32 buffers (copied, not kept as bf16)."""
    model = MODELS["gpt2"](len(tokenizer)).to(torch.bfloat16)
    features = collect_features(model, tokenizer, PROMPTS[:4], ["resid.2", "mlp.1"],
                                batch_size=2)
    with torch.no_grad(), capture_last_token(model, ["resid.2"]) as rec:
        model(**forward_inputs(model, encode_prompts(tokenizer, PROMPTS[:2], "cpu")))
    assert features["resid.2"].dtype == torch.float32
    assert torch.equal(features["resid.2"][:2], rec["resid.2"])
