"""Teacher-forced labels give exactly ``generate``'s outputs and labels (issue 25 item 7).

Models are built in memory (peaked random weights, EOS made likely so that outputs end at EOS
as well as at ``max_new_tokens``). Each item's MEM and GEN answers are two real greedy
outputs: the unsteered one and one under a strong reference steering (even items: MEM is the
unsteered output, odd items: GEN is), so steering moves items between MEM, GEN and OTHER.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest
import torch

from memgen.analysis.generation import generate
from memgen.analysis.settings import AnalysisSettings, Decoding, Subject
from memgen.analysis.sites import list_sites
from memgen.analysis.steering import forced_labels as fl
from memgen.analysis.steering.evaluation import baseline_labels, evaluate_steering
from memgen.analysis.steering.forced_labels import (
    Steering,
    counting,
    forced_outputs,
    outputs_with,
    read_proof,
)
from memgen.analysis.steering.intervene import KINDS, POSITIONS, Intervention, directions_of
from memgen.analysis.steering.runner import generate_with
from memgen.analysis.steering.tuning import steering_grid
from memgen.tasks.base import Behavior, Example, Task
from tests.helpers_steering import (
    MODELS,
    PROMPTS,
    FirstCharTask,
    char_tokenizer,
    fake_stats,
    hook_count,
    one_thread,  # noqa: F401 - an autouse fixture
    selection,
)

TOK = char_tokenizer()
NEW = 6
DECODE = Decoding(max_new_tokens=NEW, batch_size=16)
FORCED = replace(DECODE, forced_labels=True)
ALPHAS = (1.0, 8.0)


class ExactTask(FirstCharTask):
    """The base task's classify: the output's first line, stripped, equals an answer."""

    classify = Task.classify


def _model(name: str):
    model = MODELS[name](len(TOK))
    if name == "gpt2":  # tied embeddings: raise the EOS logit everywhere, so outputs end early
        w = model.transformer.wte.weight
        with torch.no_grad():
            model.transformer.ln_f.bias += 3.0 * w[1] / w[1].norm() ** 2
    return model


def _prompts() -> list[str]:
    rng = random.Random(0)
    chars = "0123456789+:\n abcdefghij"
    return PROMPTS + ["".join(rng.choice(chars) for _ in range(rng.randint(1, 20)))
                      for _ in range(32)]


def _selection(model):
    sites = list_sites(model, ("resid", "mlp"))
    return selection([sites[0], sites[1], sites[-1]], [1, 5, 7], [2.0, -3.0, 1.5])


def _intervention(kind: str, sel, examples: list[Example]) -> Intervention:
    k = len(sel)
    return Intervention(kind, sel, shift=sel.nmd.float(), mem_value=torch.full((k,), 2.0),
                        gen_value=torch.full((k,), -2.0), direction=sel.nmd.float(),
                        sources={ex: examples[(i + 3) % len(examples)]
                                 for i, ex in enumerate(examples)})



@pytest.fixture(scope="module", params=sorted(MODELS))
def world(request):
    """The model, its subject and items whose answers are real greedy outputs."""
    model = _model(request.param)
    prompts = _prompts()
    sel = _selection(model)
    plain = [Example(prompt=p, answer="", kind="conflict") for p in prompts]
    unsteered = generate(model, TOK, prompts, NEW, 16)
    ref = Intervention("add", sel, shift=sel.nmd.float())
    moved = generate_with(Subject(model, TOK, ExactTask()), ref, 8.0, "to_gen", "every_pass",
                          plain, DECODE)
    examples = []
    for i, (p, u, v) in enumerate(zip(prompts, unsteered, moved, strict=True)):
        mem, gen = (u, v) if i % 2 == 0 else (v, u)
        examples.append(Example(prompt=p, answer=gen, kind="conflict", mem_answer=mem,
                                gen_answer=gen, task="firstchar"))
    return {"name": request.param, "model": model, "subject": Subject(model, TOK, ExactTask()),
            "examples": examples, "sel": sel, "unsteered": unsteered}


def test_outputs_end_at_eos_and_at_max_new_tokens(world):
    lengths = Counter(len(TOK(u, add_special_tokens=False)["input_ids"]) == NEW
                      for u in world["unsteered"])
    if world["name"] == "gpt2":
        assert lengths[True] and lengths[False]


def test_unsteered_labels_equal_generate(world):
    subject, examples = world["subject"], world["examples"]
    with counting() as tally:
        forced = baseline_labels(subject, examples, FORCED)
    assert forced == baseline_labels(subject, examples, DECODE)
    assert {Behavior.MEM, Behavior.GEN} <= set(forced)
    assert tally.items == len(examples) and tally.fallback < tally.items and tally.passes


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_and_position_equals_generate(world, kind, positions):
    subject, examples = world["subject"], world["examples"]
    iv = _intervention(kind, world["sel"], examples)
    with counting() as tally:
        for direction in directions_of(kind):
            for alpha in ALPHAS:
                want = generate_with(subject, iv, alpha, direction, positions, examples, DECODE)
                got = outputs_with(subject, iv, alpha, direction, positions, examples, FORCED)
                assert got == want, (kind, positions, direction, alpha)
                task = subject.task
                assert [task.classify(ex, o) for ex, o in zip(examples, got, strict=True)] == [
                    task.classify(ex, o) for ex, o in zip(examples, want, strict=True)]
    assert tally.items == len(examples) * len(directions_of(kind)) * len(ALPHAS)
    assert tally.fallback < tally.items / 4  # the passes label, not the decoder


def test_all_three_labels_occur(world):
    """The items above do move between all three behaviours (so equality means something)."""
    subject, examples = world["subject"], world["examples"]
    found = Counter()
    for kind in ("add", "set_mean", "ablate"):
        iv = _intervention(kind, world["sel"], examples)
        for alpha in ALPHAS:
            outs = outputs_with(subject, iv, alpha, "to_gen", "last_prompt", examples, FORCED)
            found.update(subject.task.classify(ex, o) for ex, o in zip(examples, outs,
                                                                         strict=True))
    assert all(found[b] for b in Behavior), found


def test_legacy_steering_grid_and_side_effects_equal_generate(world):
    """``hooks.steer`` (last_prompt_only and every pass): the grid's tables and every item's
    output are the same with and without forced labels."""
    if world["name"] != "gpt2":
        pytest.skip("one model suffices for the legacy path")
    subject, examples = world["subject"], world["examples"]
    model = world["model"]
    stats = fake_stats({s: int(model.config.n_embd) if s.startswith("resid") else
                        4 * int(model.config.n_embd) for s in list_sites(model, ("resid",
                                                                                  "mlp"))})
    clean = [Example(prompt=ex.prompt, answer=u, kind="clean", gen_answer=u)
             for ex, u in zip(examples[:12], world["unsteered"][:12], strict=True)]
    labels = baseline_labels(subject, examples, DECODE)
    for last_prompt_only in (True, False):
        tables = []
        for decoding in (DECODE, FORCED):
            tables.append(steering_grid(subject, examples, labels, stats, [0.05], [3.0, 9.0],
                                        clean_examples=clean, decoding=decoding,
                                        last_prompt_only=last_prompt_only))
        pd.testing.assert_frame_equal(tables[0], tables[1])
        results = [evaluate_steering(subject, examples, labels, world["sel"], 9.0,
                                     decoding=d, clean_examples=clean,
                                     last_prompt_only=last_prompt_only) for d in (DECODE, FORCED)]
        pd.testing.assert_frame_equal(results[0].items, results[1].items)
        assert results[0].side == results[1].side
        assert set(results[1].items["after"]) >= {"OTHER"}


def test_near_ties_fall_back_and_still_agree(world):
    """A tolerance far above rounding makes some reads untrusted: those items come from the
    decoder (run on the whole list), the rest from the passes, and all equal ``generate``."""
    subject, examples = world["subject"], world["examples"]
    iv = _intervention("add", world["sel"], examples)
    steering = Steering(iv, 3.0, "to_gen", "every_pass")

    def decode(items):
        return generate_with(subject, iv, 3.0, "to_gen", "every_pass", items, DECODE)

    with counting() as tally:
        got = forced_outputs(subject, examples, FORCED, steering, decode, tolerance=0.05)
    assert got == decode(examples)
    assert 0 < tally.fallback < tally.items and tally.decodes == 1


def test_beams_and_processors_go_to_the_decoder(world):
    subject, examples = world["subject"], world["examples"]
    beams = replace(FORCED, num_beams=2)
    with counting() as tally:
        got = baseline_labels(subject, examples, beams)
    assert got == baseline_labels(subject, examples, replace(DECODE, num_beams=2))
    assert tally.fallback == tally.items == len(examples) and tally.passes == 0
    model = world["model"]
    model.generation_config.min_new_tokens = NEW
    try:
        assert not fl.plain_greedy(model)
        with counting() as tally:
            got = baseline_labels(subject, examples, FORCED)
        assert got == baseline_labels(subject, examples, DECODE)
        assert tally.fallback == len(examples) and tally.passes == 0
    finally:
        model.generation_config.min_new_tokens = None
    assert fl.plain_greedy(model)


def test_hooks_removed_when_a_pass_raises(world, monkeypatch):
    subject, examples = world["subject"], world["examples"]
    model = world["model"]
    before = hook_count(model)

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(fl, "_top2", broken)
    for kind in ("add", "interchange"):
        iv = _intervention(kind, world["sel"], examples)
        with pytest.raises(RuntimeError, match="boom"):
            outputs_with(subject, iv, 3.0, "to_gen", "all", examples, FORCED)
        assert hook_count(model) == before
    assert not model.training


def test_read_proof_by_hand():
    """Rows of [top-1 value, top-2 value] and ids; stop token 1, fed tokens [5, 6]."""
    values = [[9.0, 1.0], [9.0, 1.0], [9.0, 1.0]]

    def ids(*tokens):
        return [[t, 0] for t in tokens]

    # the guess is greedy's and EOS follows it: the text is proven
    assert read_proof([5, 6], values, ids(5, 6, 1), 6, 1, 1e-4) == fl._Proof([5, 6], done=True)
    # greedy leaves the guess at step 1 (token 7): two tokens known, the rest is not
    assert read_proof([5, 6], values, ids(5, 7, 1), 6, 1, 1e-4) == fl._Proof([5, 7])
    # ... unless max_new_tokens stops there
    assert read_proof([5, 6], values, ids(5, 7, 1), 2, 1, 1e-4) == fl._Proof([5, 7], done=True)
    # EOS at step 0: the empty output
    assert read_proof([5, 6], values, ids(1, 6, 1), 6, 1, 1e-4) == fl._Proof([], done=True)
    # a near-tie at step 1 (gap 1e-4 relative to 9 < 1e-4 * 9): only step 0 is known
    tied = [[9.0, 1.0], [9.0, 9.0 - 1e-4], [9.0, 1.0]]
    assert read_proof([5, 6], tied, ids(5, 6, 1), 6, 1, 1e-4) == fl._Proof([5], unsure=True)


def test_switch_is_in_the_config_and_the_settings():
    from memgen.config import compose
    from memgen.config.adapter import settings_from_config

    assert compose().analysis.steering.forced_labels is False  # measured slower (docs/steering.md)
    assert not AnalysisSettings().steering_decoding.forced_labels
    on = settings_from_config(compose(["analysis.steering.forced_labels=true"]))
    assert on.steering.forced_labels and on.steering_decoding.forced_labels
    assert not on.decoding.forced_labels  # the labelling stage decodes as before
