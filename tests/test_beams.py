"""Beam search (``analysis.decoding.num_beams``) in labels, validation and steering.

Under beam search every pass holds each prompt's k beams as consecutive rows; steering must
shift every beam like its prompt, and ``last_prompt_only`` must still steer the prefill only.
"""

from __future__ import annotations

import pytest
import torch

from memgen.analysis.generation import generate
from memgen.analysis.sites import hook_site
from memgen.analysis.steering.hooks import per_row, steer
from memgen.config import compose
from memgen.config.adapter import settings_from_config
from tests.helpers_steering import MODELS, char_tokenizer, hook_count, selection

TOK = char_tokenizer()
SEL = selection(["resid.1", "mlp.1"], [0, 5], [3.0, -4.0])
PROMPTS = ["12+7", "3+45", "unit", "9+9a"]  # one length: no padding between batch-mates


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param](len(TOK)).eval()


def _shifts_per_pass(model, num_beams, last_prompt_only):
    """Per forward pass: what steering added at position -1 of ``resid.1``, every row."""
    before, shifts = [], []

    def record_before(h):
        before.append(h.detach().clone())

    def record_after(h):
        shifts.append((h - before[len(shifts)])[:, -1].detach().clone())

    first = hook_site(model, "resid.1", record_before)  # runs before the steering hook
    try:
        with steer(model, SEL, 5.0, "to_mem", last_prompt_only=last_prompt_only):
            last = hook_site(model, "resid.1", record_after)  # and this one after it
            generate(model, TOK, PROMPTS, max_new_tokens=3, batch_size=8, num_beams=num_beams)
            last.remove()
    finally:
        first.remove()
    return shifts


@pytest.mark.parametrize("last_prompt_only", [False, True])
def test_every_beam_is_steered_like_its_prompt(model, last_prompt_only):
    """A batch of prompts under 3 beams generates what each prompt does alone under steering
    (rows are beams of their prompt), and the steering changes what is generated."""
    with steer(model, SEL, 5.0, "to_mem", last_prompt_only=last_prompt_only):
        together = generate(model, TOK, PROMPTS, max_new_tokens=4, batch_size=8, num_beams=3)
        alone = [generate(model, TOK, [p], max_new_tokens=4, num_beams=3)[0] for p in PROMPTS]
    plain = generate(model, TOK, PROMPTS, max_new_tokens=4, batch_size=8, num_beams=3)
    assert together == alone
    assert together != plain
    assert hook_count(model) == 0


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("last_prompt_only", [False, True])
def test_each_pass_shifts_every_beam_row(model, last_prompt_only, num_beams):
    """resid.1 neuron 0 gets +alpha*NMD = 5*3 on all 4 prompts x k beams rows: in every pass,
    or in the prefill only (``last_prompt_only``); nothing else moves. The prompts share one
    length, so ``generate`` passes no attention mask (it once steered every pass then)."""
    shifts = _shifts_per_pass(model, num_beams=num_beams, last_prompt_only=last_prompt_only)
    assert len(shifts) == 3 and all(s.shape[0] == len(PROMPTS) * num_beams for s in shifts)
    want = torch.zeros_like(shifts[0])
    want[:, 0] = 15.0
    for i, shift in enumerate(shifts):
        expected = want if i == 0 or not last_prompt_only else torch.zeros_like(want)
        torch.testing.assert_close(shift, expected)


def test_per_row_gives_each_beam_its_prompts_values():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert per_row(values, 2) is values
    assert per_row(values, 6).tolist() == [[1, 2], [1, 2], [1, 2], [3, 4], [3, 4], [3, 4]]
    with pytest.raises(ValueError, match="5 rows are not beams of 2 prompts"):
        per_row(values, 5)


def test_num_beams_is_one_analysis_key_for_labels_validation_and_steering():
    cfg = compose(["analysis.decoding.num_beams=5"])
    assert settings_from_config(cfg).decoding.num_beams == 5
    assert compose([]).analysis.decoding.num_beams == 1  # greedy by default
    from memgen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"analysis.decoding.num_beams: expected an integer "
                                          r">= 1, got 0"):
        compose(["analysis.decoding.num_beams=0"])
