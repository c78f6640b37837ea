"""The answer lens (analysis/lens.py): each item's own MEM - GEN logit difference read at every
resid site through the final norm, and the one-feature probe fitted on it."""

from __future__ import annotations

import math

import pytest
import torch

from memgen.analysis.capture import collect_features
from memgen.analysis.lens import answer_lens, final_norm, first_answer_tokens, lens_margins
from memgen.analysis.probes import probe_sites
from memgen.tasks.base import Example
from tests.helpers_steering import (
    MODELS,
    N_LAYERS,
    char_tokenizer,
    one_thread,  # noqa: F401 - an autouse fixture
)

TOK = char_tokenizer()
PROMPTS = ["12+7", "Input:\n1+2\n", "4+4", "9+1:", "3+3", "77+1", "5+", "abc:"]
ANSWERS = [("a", "9"), ("x", "3"), ("q", "8"), ("zz", "10"), ("b", "6"), ("c", "78"),
           ("d", "5"), ("e", "f")]
EXAMPLES = [Example(p, "", "conflict", mem_answer=m, gen_answer=g)
            for p, (m, g) in zip(PROMPTS, ANSWERS, strict=True)]
SITES = [f"resid.{i}" for i in range(N_LAYERS + 1)] + ["mlp.1"]


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param](len(TOK)).eval()


@pytest.fixture(scope="module")
def feats(model):
    return collect_features(model, TOK, PROMPTS, SITES, batch_size=3)


def _ids(text: str) -> int:
    return TOK(text, add_special_tokens=False)["input_ids"][0]


def _hand_norm(model, h: torch.Tensor) -> torch.Tensor:
    """The final norm written out: GPT-2's LayerNorm, Llama's RMSNorm."""
    norm = final_norm(model)
    if model.config.model_type == "gpt2":
        mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    rms = torch.sqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return h / rms * norm.weight


def test_first_answer_tokens_are_each_answers_first_token():
    mem, gen = first_answer_tokens(TOK, EXAMPLES)
    assert mem.tolist() == [_ids(m) for m, _ in ANSWERS]
    assert gen.tolist() == [_ids(g) for _, g in ANSWERS]


def test_at_the_last_layer_the_margin_is_the_models_own_logit_difference(model, feats):
    """resid.<n_layers> is the last block's output before the final norm, so the lens there is
    exactly logits[MEM first token] - logits[GEN first token] of the model's forward pass."""
    mem, gen = first_answer_tokens(TOK, EXAMPLES)
    margins = lens_margins(model, feats[f"resid.{N_LAYERS}"], mem, gen, batch_size=3)
    with torch.no_grad():
        for i, prompt in enumerate(PROMPTS):
            ids = TOK(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
            logits = model(ids).logits[0, -1]
            assert margins[i] == pytest.approx(float(logits[mem[i]] - logits[gen[i]]), abs=1e-4)


def test_at_an_inner_site_the_margin_is_the_hand_computed_projection(model, feats):
    mem, gen = first_answer_tokens(TOK, EXAMPLES)
    h = feats["resid.1"]
    w = model.get_output_embeddings().weight.detach()
    with torch.no_grad():
        expected = (_hand_norm(model, h) * (w[mem] - w[gen])).sum(-1)
    assert torch.allclose(lens_margins(model, h, mem, gen), expected, atol=1e-5)
    assert not torch.allclose(expected, lens_margins(model, feats["resid.2"], mem, gen))


def test_lens_probe_reads_a_decision_made_along_each_items_own_answers(model, feats):
    """Labels that are the sign of each item's own last-layer logit difference (the greedy
    choice between its two answers): the lens probe at that site gets every evaluation item
    right; mlp sites are not in the unembedding's space and get no lens."""
    mem, gen = first_answer_tokens(TOK, EXAMPLES)
    margin = lens_margins(model, feats[f"resid.{N_LAYERS}"], mem, gen)
    y = (margin > margin.median()).long()  # balanced: 4 MEM, 4 GEN
    order = torch.argsort(margin)
    train = [int(i) for i in order[[0, 2, 3, 4, 5, 7]]]  # both classes in both splits
    ev = [int(i) for i in order[[1, 6]]]  # away from the threshold
    pick = lambda idx: ({s: v[idx] for s, v in feats.items()}, y[idx],  # noqa: E731
                        [EXAMPLES[i] for i in idx])
    lens = answer_lens(model, TOK, pick(train), pick(ev))
    assert set(lens.acc) == {f"resid.{i}" for i in range(N_LAYERS + 1)}
    assert lens.acc[f"resid.{N_LAYERS}"] == 1.0
    assert lens.distinct_share == 1.0
    metrics = lens.metrics()
    assert metrics["probe/lens/best_acc"] == 1.0
    assert metrics[f"probe/lens_acc/resid.{N_LAYERS}"] == 1.0

    report = probe_sites(*pick(train)[:2], *pick(ev)[:2])
    report.add_lens(lens)
    table = report.table.set_index("site")
    assert table.loc[f"resid.{N_LAYERS}", "lens_acc"] == 1.0
    assert math.isnan(table.loc["mlp.1", "lens_acc"])
    assert report.metrics()["probe/lens/best_acc"] == 1.0


def test_answers_sharing_their_first_token_read_zero_and_are_counted(model, feats):
    same = [Example(p, "", "conflict", mem_answer="gray", gen_answer="gold") for p in PROMPTS]
    mem, gen = first_answer_tokens(TOK, same)
    assert torch.equal(lens_margins(model, feats["resid.1"], mem, gen), torch.zeros(len(PROMPTS)))
    y = torch.tensor([1, 0] * 4)
    mixed = same[:4] + EXAMPLES[4:]
    pick = lambda idx: ({s: v[idx] for s, v in feats.items()}, y[idx],  # noqa: E731
                        [mixed[i] for i in idx])
    lens = answer_lens(model, TOK, pick([0, 1, 4, 5]), pick([2, 3, 6, 7]))
    assert lens.distinct_share == 0.5


def test_bad_inputs_are_refused_by_name(model, feats):
    with pytest.raises(ValueError, match="lacks a MEM or GEN answer"):
        first_answer_tokens(TOK, [Example("1+1", "", "conflict", mem_answer=None, gen_answer="2")])
    with pytest.raises(ValueError, match="answer '' tokenizes to nothing"):
        first_answer_tokens(TOK, [Example("1+1", "", "conflict", mem_answer="", gen_answer="2")])
    with pytest.raises(ValueError, match="expected hidden"):
        lens_margins(model, feats["resid.1"], torch.zeros(3, dtype=torch.long),
                     torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="no final norm"):
        final_norm(torch.nn.Linear(2, 2))
