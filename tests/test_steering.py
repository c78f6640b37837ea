"""Steering hooks, controls, evaluation and side effects on tiny GPT-2 and Llama models."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from memgen.analysis.generation import encode_prompts, generate
from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.sites import hook_site, site_width
from memgen.analysis.stats import select_neurons
from memgen.analysis.steering.controls import (
    build_controls,
    low_r_control,
    matched_random_control,
    shuffled_control,
)
from memgen.analysis.steering.evaluation import (
    evaluate_steering,
    side_effects,
    summary_metrics,
    wilson_interval,
)
from memgen.analysis.steering.hooks import steer
from memgen.analysis.steering.tuning import steering_grid
from memgen.reporting.plots.steering import success_vs_alpha
from tests.helpers_steering import (
    MODELS,
    PROMPTS,
    FirstCharTask,
    char_tokenizer,
    clean_examples,
    fake_stats,
    hook_count,
    labelled_examples,
    one_thread,  # noqa: F401 - an autouse fixture
    selection,
    tiny_gpt2,
    tiny_llama,
)

TOK = char_tokenizer()
SITES = ["resid.0", "resid.1", "resid.2", "mlp.1", "mlp.2"]
SEL = selection(["resid.1", "resid.2", "mlp.1"], [0, 5, 7], [3.0, -2.0, 4.0])



@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param](len(TOK))


def _logits(model, prompts=PROMPTS):
    batch = encode_prompts(TOK, prompts, "cpu")
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**batch, position_ids=positions).logits


def _capture(model, site, store):
    return hook_site(model, site, lambda h: store.append(h.detach().clone()))


# -- the hook ---------------------------------------------------------------------------------
def test_alpha_zero_is_bit_identical(model):
    logits, outputs = _logits(model), generate(model, TOK, PROMPTS, 6)
    with steer(model, SEL, 0.0, "to_gen"):
        assert torch.equal(_logits(model), logits)
        assert generate(model, TOK, PROMPTS, 6) == outputs


@pytest.mark.parametrize("direction,sign", [("to_mem", 1.0), ("to_gen", -1.0)])
@pytest.mark.parametrize("site", ["resid.1", "mlp.2"])
def test_shift_is_exactly_alpha_nmd_at_last_position(model, site, direction, sign):
    sel = selection([site, site, "resid.2"], [3, 11, 4], [1.5, -0.25, 2.0])
    before, after = [], []
    handles = [_capture(model, site, before)]
    try:
        with steer(model, sel, 2.5, direction):
            handles.append(_capture(model, site, after))  # runs after the steering hook
            _logits(model)
    finally:
        for handle in handles:
            handle.remove()
    (h0,), (h1,) = before, after
    idx = torch.tensor([3, 11])
    expected = h0.clone()
    expected[:, -1, idx] = h0[:, -1, idx] + (sign * 2.5) * torch.tensor([1.5, -0.25])
    assert torch.equal(h1, expected)  # the shift, and nothing else: other positions, coordinates
    assert not torch.equal(h1, h0)


def _peft(model):
    from peft import LoraConfig, get_peft_model

    targets = ["c_attn"] if "GPT2" in type(model).__name__ else ["q_proj", "v_proj"]
    return get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "peft"])
def test_every_pass_is_steered_or_only_the_prefill(model, wrap):
    """The contract of ``last_prompt_only`` under the installed transformers, with batched,
    left-padded generation (prompts of different lengths): True steers the prefill pass only,
    False every pass. Also through a peft wrapper, and for a plain forward after a generate."""
    import copy

    subject = _peft(copy.deepcopy(model)).eval() if wrap else model
    prompts = PROMPTS[:4]
    for last_prompt_only, steered_passes in [(False, [True, True, True]),
                                             (True, [True, False, False])]:
        before, after = [], []
        handles = [_capture(subject, "resid.1", before)]
        try:
            with steer(subject, SEL, 1.0, "to_mem", last_prompt_only=last_prompt_only):
                handles.append(_capture(subject, "resid.1", after))
                generate(subject, TOK, prompts, max_new_tokens=3, batch_size=len(prompts))
                n_generate = len(before)
                _logits(subject, prompts)  # a plain forward is a prefill: steered
        finally:
            for handle in handles:
                handle.remove()
        # a forward per token (EOS may stop early); prefill first, then one position per pass
        assert len(before) == len(after) >= 3 and before[0].shape[1] > 1
        assert all(h.shape[1] == 1 for h in before[1:n_generate])
        assert before[0].shape[0] == len(prompts)  # one batch
        got = [not torch.equal(a, b) for a, b in zip(after, before, strict=True)]
        assert got[:n_generate] == steered_passes[:n_generate]
        assert got[n_generate] is True


def test_batched_steered_generation_equals_unbatched(model):
    plain = generate(model, TOK, PROMPTS, 6, batch_size=len(PROMPTS))
    assert plain == generate(model, TOK, PROMPTS, 6, batch_size=1)  # left padding is harmless
    with steer(model, SEL, 3.0, "to_mem"):
        batched = generate(model, TOK, PROMPTS, 6, batch_size=len(PROMPTS))
        single = generate(model, TOK, PROMPTS, 6, batch_size=1)
    assert batched == single
    assert batched != plain  # the steering did something


def test_hooks_removed_after_exception(model):
    n = hook_count(model)
    for last_prompt_only in (False, True):
        with pytest.raises(RuntimeError, match="boom"):
            with steer(model, SEL, 1.0, "to_gen", last_prompt_only=last_prompt_only):
                assert hook_count(model) > n
                raise RuntimeError("boom")
        assert hook_count(model) == n


def test_steering_is_differentiable():
    """New tensors, no in-place writes on autograd inputs: a backward pass works."""
    gpt2 = tiny_gpt2(len(TOK))
    batch = encode_prompts(TOK, PROMPTS[:2], "cpu")
    with steer(gpt2, SEL, 1.0, "to_mem"):
        gpt2(**batch).logits.sum().backward()
    assert gpt2.transformer.h[0].mlp.c_fc.weight.grad is not None


@pytest.mark.parametrize("kwargs,match", [
    ({"alpha": float("nan")}, "alpha"),
    ({"alpha": float("inf")}, "alpha"),
    ({"direction": "sideways"}, "direction"),
    ({"selection": selection([], [], [])}, "selection"),
    ({"selection": selection(["resid.9"], [0], [1.0])}, "selection"),
    ({"selection": selection(["attn.1"], [0], [1.0])}, "selection"),
    ({"selection": selection(["resid.1"], [999], [1.0])}, "selection"),
    ({"selection": selection(["resid.1", "resid.1"], [2, 2], [1.0, 1.0])}, "selection"),
    ({"shifts": torch.ones(2)}, "shifts"),
    ({"shifts": torch.tensor([1.0, float("nan"), 0.0])}, "shifts"),
])
def test_invalid_arguments_fail_by_name(kwargs, match):
    gpt2 = tiny_gpt2(len(TOK))
    args = {"selection": SEL, "alpha": 1.0, "direction": "to_gen", **kwargs}
    with pytest.raises(ValueError, match=match):
        with steer(gpt2, **args):
            pass
    assert hook_count(gpt2) == 0


def test_shifts_override_nmd():
    gpt2 = tiny_gpt2(len(TOK))
    other = selection(SEL.sites, SEL.indices.tolist(), [0.5, 0.5, -1.0])
    with steer(gpt2, SEL, 2.0, "to_mem", shifts=other.nmd):
        a = _logits(gpt2)
    with steer(gpt2, other, 2.0, "to_mem"):
        b = _logits(gpt2)
    assert torch.equal(a, b)


def test_steering_a_lora_wrapped_llama_changes_outputs():
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(len(TOK))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"])).eval()
    n = hook_count(peft_model)
    plain_logits, plain = _logits(peft_model), generate(peft_model, TOK, PROMPTS, 6)
    for last_prompt_only in (False, True):
        with steer(peft_model, SEL, 3.0, "to_gen", last_prompt_only=last_prompt_only):
            assert not torch.equal(_logits(peft_model), plain_logits)
            assert generate(peft_model, TOK, PROMPTS, 6) != plain
    assert hook_count(peft_model) == n


# -- controls ---------------------------------------------------------------------------------
def _stats():
    gpt2 = tiny_gpt2(len(TOK))
    return fake_stats({s: site_width(gpt2, s) for s in SITES})


def test_controls_have_the_selection_size_and_are_seeded():
    stats = _stats()
    top = select_neurons(stats, top_k=7)
    assert top.r.abs().tolist() == sorted(top.r.abs().tolist(), reverse=True)
    controls = build_controls(stats, top, seed=3, names=("random", "low_r", "shuffled"))
    assert {name: len(c) for name, c in controls.items()} == dict.fromkeys(controls, 7)
    rand = controls["random"]
    assert not set(rand.keys()) & set(top.keys())
    assert sorted(rand.nmd.abs().tolist()) == sorted(top.nmd.abs().tolist())  # matched sizes
    again = matched_random_control(stats, top, seed=3)
    assert again.keys() == rand.keys() and torch.equal(again.nmd, rand.nmd)
    assert matched_random_control(stats, top, seed=4).keys() != rand.keys()
    with pytest.raises(ValueError, match="unknown control 'uniform'"):
        build_controls(stats, top, names=("uniform",))


def test_low_r_and_shuffled_controls():
    stats = _stats()
    top = select_neurons(stats, top_k=5)
    low = low_r_control(stats, top)
    all_r = torch.cat([s.r for s in stats.values()]).abs()
    assert torch.allclose(low.r.abs().sort().values, all_r.sort().values[:5])
    for site, i, shift in zip(low.sites, low.indices.tolist(), low.nmd.tolist(), strict=True):
        assert shift == pytest.approx(float(stats[site].nmd[i]))  # its own NMD
    shuffled = shuffled_control(top, seed=1)
    assert shuffled.keys() == top.keys()
    assert sorted(shuffled.nmd.tolist()) == sorted(top.nmd.tolist())
    assert not torch.equal(shuffled.nmd, top.nmd)
    assert torch.equal(shuffled_control(top, seed=1).nmd, shuffled.nmd)


def test_random_control_over_site_widths_only():
    widths = {"resid.1": 32, "mlp.1": 128}
    ctrl = matched_random_control(widths, selection(["resid.1"] * 10, list(range(10)),
                                                    [2.0] * 10), seed=0)
    assert len(ctrl) == 10 and set(ctrl.sites) <= set(widths)
    assert ctrl.nmd.abs().tolist() == [2.0] * 10
    assert all(0 <= i < widths[s] for s, i in ctrl.keys())
    assert torch.isnan(ctrl.r).all()
    with pytest.raises(ValueError, match="low_r"):
        build_controls(widths, ctrl, names=("low_r",))


# -- evaluation -------------------------------------------------------------------------------
def test_wilson_interval_by_hand():
    low, high = wilson_interval(8, 10)
    # p=0.8, z=1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.716736,
    # half-width z / (1 + z^2/10) * sqrt(0.016 + z^2/400) = 0.226577
    assert low == pytest.approx(0.490160, abs=1e-5)
    assert high == pytest.approx(0.943313, abs=1e-5)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def _first_chars(model):
    return [out[:1] or "#" for out in generate(model, TOK, PROMPTS, 4)]


def test_evaluate_steering_counts_transitions():
    gpt2 = tiny_gpt2(len(TOK))
    task = FirstCharTask()
    examples = labelled_examples(_first_chars(gpt2))
    labels = [task.classify(ex, out) for ex, out in
              zip(examples, generate(gpt2, TOK, PROMPTS, 4), strict=True)]
    controls = {"shuffled": shuffled_control(SEL, 0)}
    subject, decoding = Subject(gpt2, TOK, task), Decoding(max_new_tokens=4, batch_size=4)
    result = evaluate_steering(subject, examples, labels, SEL, 3.0, controls, decoding=decoding)
    again = evaluate_steering(subject, examples, None, SEL, 3.0, controls, decoding=decoding)
    assert result.table().equals(again.table())
    mem_items = [ex for ex, lab in zip(examples, labels, strict=True) if lab.value == "MEM"]
    with steer(gpt2, SEL, 3.0, "to_gen"):
        after = [task.classify(ex, out) for ex, out in
                 zip(mem_items, generate(gpt2, TOK, [e.prompt for e in mem_items], 4),
                     strict=True)]
    t = result.selected["to_gen"]
    assert t.n == len(mem_items) == 4
    assert (t.to_target, t.unchanged, t.other) == (
        sum(b.value == "GEN" for b in after), sum(b.value == "MEM" for b in after),
        sum(b.value == "OTHER" for b in after))
    assert t.success == t.to_target / 4 and t.ci == wilson_interval(t.to_target, 4)
    assert set(result.controls) == {"shuffled"} and result.controls["shuffled"]["to_mem"].n == 4
    assert len(result.items) == 16
    metrics = summary_metrics(result)
    for key in ("steer/to_gen/success", "steer/to_mem/success", "steer/to_gen/ci_low",
                "steer/to_gen/control_shuffled/success", "steer/to_mem/control_shuffled/ci_high"):
        assert key in metrics
    assert metrics["steer/min_success"] == min(result.selected["to_gen"].success,
                                               result.selected["to_mem"].success)
    assert metrics["steer/max_control_success"] == max(
        t.success for t in result.controls["shuffled"].values())


def test_side_effects_zero_at_alpha_zero_and_positive_otherwise():
    gpt2 = tiny_gpt2(len(TOK))
    task, clean = FirstCharTask(), clean_examples(_first_chars(gpt2))
    subject, decoding = Subject(gpt2, TOK, task), Decoding(max_new_tokens=4, batch_size=4)
    none = side_effects(subject, clean, SEL, 0.0, "to_mem", decoding=decoding)
    assert (none.clean_acc, none.clean_acc_steered, none.clean_acc_drop, none.kl) == (1, 1, 0, 0)
    some = side_effects(subject, clean, SEL, 3.0, "to_mem", decoding=decoding)
    assert some.kl > 0 and some.clean_acc_drop > 0


def test_grid_summary_and_plot():
    gpt2 = tiny_gpt2(len(TOK))
    task, chars = FirstCharTask(), _first_chars(gpt2)
    stats = fake_stats({s: site_width(gpt2, s) for s in SITES})
    subject, decoding = Subject(gpt2, TOK, task), Decoding(max_new_tokens=3, batch_size=8)
    grid = steering_grid(subject, labelled_examples(chars), None, stats, [3, 0.02],
                         [0.0, 2.0], clean_examples=clean_examples(chars), decoding=decoding)
    assert isinstance(grid, pd.DataFrame) and len(grid) == 2 * 2 * 2 * 4
    for column in ("k", "alpha", "direction", "method", "success", "ci_low", "ci_high", "n",
                   "clean_acc", "clean_acc_drop", "kl"):
        assert column in grid.columns
    assert set(grid["method"]) == {"selected", "control_random", "control_low_r",
                                   "control_shuffled"}
    assert sorted(set(grid["k"])) == [3, round(0.02 * sum(site_width(gpt2, s) for s in SITES))]
    at_zero = grid[(grid["alpha"] == 0) & (grid["method"] == "selected")]
    assert (at_zero["success"] == 0).all() and (at_zero["kl"] == 0).all()
    fig = success_vs_alpha(grid)
    assert len(fig.axes) == 3

    result = evaluate_steering(subject, labelled_examples(chars), None,
                               select_neurons(stats, top_k=3), 2.0,
                               build_controls(stats, select_neurons(stats, top_k=3)),
                               decoding=decoding, clean_examples=clean_examples(chars))
    metrics = summary_metrics(result)
    for key in ("side/clean_acc", "side/clean_acc_steered", "side/clean_acc_drop", "side/kl",
                "steer/to_gen/control_random/success", "steer/to_mem/control_low_r/success"):
        assert key in metrics
    assert metrics["side/clean_acc_drop"] == pytest.approx(
        metrics["side/clean_acc"] - metrics["side/clean_acc_steered"])


def test_grid_with_a_selector_callable():
    gpt2 = tiny_gpt2(len(TOK))
    task, chars = FirstCharTask(), _first_chars(gpt2)

    def select(k):
        return NeuronSelection(sites=["resid.1"] * k, indices=torch.arange(k),
                               nmd=torch.ones(k), r=torch.ones(k))

    grid = steering_grid(Subject(gpt2, TOK, task), labelled_examples(chars), None, select, [2],
                         [1.0], control_names=("random", "shuffled"),
                         decoding=Decoding(max_new_tokens=2, batch_size=64))
    assert set(grid["method"]) == {"selected", "control_random", "control_shuffled"}
    assert grid["clean_acc"].isna().all()


def test_steering_sites_restrict_the_selection_and_the_controls_pool():
    from memgen.analysis.settings import AnalysisSettings, SteeringSettings
    from memgen.analysis.stages import Neurons, steering_selection, steering_sites, steering_stats
    from memgen.analysis.steering.controls import build_controls

    analysed = ["resid.0", "resid.1", "resid.2", "mlp.1", "mlp.2"]
    assert steering_sites("all", analysed) == analysed
    assert steering_sites("resid", analysed) == ["resid.0", "resid.1", "resid.2"]
    assert steering_sites("mlp.2, resid.1", analysed) == ["mlp.2", "resid.1"]
    with pytest.raises(ValueError, match="'mlp.3' is not an analysed site"):
        steering_sites("mlp.3", analysed)

    stats = fake_stats({"resid.1": 32, "mlp.1": 64})
    neurons = Neurons(stats, pd.DataFrame(), select_neurons(stats, top_fraction=0.1), {})
    settings = AnalysisSettings(top_k=None, top_fraction=0.25, seed=0,
                                steering=SteeringSettings(sites="resid", top_k=None,
                                                          top_fraction=None))
    chosen = steering_selection(settings, neurons)
    assert set(chosen.sites) == {"resid.1"} and len(chosen) == 8  # 25% of resid.1's 32
    best_resid = select_neurons({"resid.1": stats["resid.1"]}, top_k=8)
    assert chosen.keys() == best_resid.keys()
    pool = steering_stats(settings.steering, neurons.stats)
    assert list(pool) == ["resid.1"]
    controls = build_controls(pool, chosen, seed=0)
    assert all(set(c.sites) == {"resid.1"} for c in controls.values())
    everywhere = settings.with_steering(SteeringSettings(sites="all", top_fraction=None,
                                                         rank="abs_r"))
    assert steering_selection(everywhere, neurons) is neurons.selection
    # ranked by attribution, the pick is made again from the (re-ranked) statistics
    attributed = settings.with_steering(SteeringSettings(sites="all", top_fraction=None))
    assert steering_selection(attributed, neurons) is not neurons.selection


def test_grid_scores_and_the_pick_by_hand():
    """score = weaker direction - best control - clean drop; ties go to the smaller alpha."""
    from memgen.analysis.steering.tuning import best_cell, grid_scores

    def rows(top, k, alpha, gen, mem, ctl_gen, ctl_mem, drop_gen, drop_mem):
        return [
            {"top": top, "k": k, "alpha": alpha, "method": "selected", "direction": "to_gen",
             "success": gen, "clean_acc_drop": drop_gen},
            {"top": top, "k": k, "alpha": alpha, "method": "selected", "direction": "to_mem",
             "success": mem, "clean_acc_drop": drop_mem},
            {"top": top, "k": k, "alpha": alpha, "method": "control_random",
             "direction": "to_gen", "success": ctl_gen, "clean_acc_drop": math.nan},
            {"top": top, "k": k, "alpha": alpha, "method": "control_random",
             "direction": "to_mem", "success": ctl_mem, "clean_acc_drop": math.nan},
        ]

    grid = pd.DataFrame(rows(0.05, 5, 1.0, 0.9, 0.6, 0.1, 0.0, 0.0, 0.02)
                        + rows(0.05, 5, 3.0, 0.9, 0.9, 0.1, 0.5, 0.0, 0.1)
                        + rows(0.1, 10, 1.0, 0.8, 0.7, 0.0, 0.05, -0.01, 0.0)
                        + rows(0.1, 10, 3.0, 0.7, 0.8, 0.05, 0.0, 0.0, 0.0))
    scores = grid_scores(grid).set_index(["top", "alpha"])
    assert scores.loc[(0.05, 1.0), "score"] == pytest.approx(0.6 - 0.1 - 0.02)
    assert scores.loc[(0.05, 3.0), "score"] == pytest.approx(0.9 - 0.5 - 0.1)
    assert scores.loc[(0.1, 1.0), "score"] == pytest.approx(0.7 - 0.05)  # a gain is no bonus
    assert scores.loc[(0.1, 3.0), "score"] == pytest.approx(0.7 - 0.05)
    best = best_cell(grid_scores(grid))
    assert (best["top"], best["alpha"], best["k"]) == (0.1, 1.0, 10)  # tie: smaller alpha
    # within a budget of controls <= 0.1 and drop <= 0.02: the most successful such cell
    budget = best_cell(grid_scores(grid), max_control=0.1, max_clean_drop=0.02)
    assert (budget["top"], budget["alpha"]) == (0.1, 1.0)  # 0.7, while (0.05, 1) gives 0.6
    tight = best_cell(grid_scores(grid), max_control=0.0, max_clean_drop=0.0)
    assert (tight["top"], tight["alpha"]) == (0.1, 1.0)  # nothing within: the best score
    edge = pd.DataFrame([  # a 0.02 drop computed from rates is 0.020000000000000018
        {"top": 0.05, "k": 5, "alpha": 1.0, "min_success": 0.9, "max_control_success": 0.0,
         "clean_acc_drop": 0.935 - 0.915, "score": 0.88},
        {"top": 0.1, "k": 10, "alpha": 1.0, "min_success": 0.5, "max_control_success": 0.0,
         "clean_acc_drop": 0.0, "score": 0.5}])
    assert best_cell(edge, max_control=0.1, max_clean_drop=0.02)["top"] == 0.05
    no_control_budget = best_cell(grid_scores(grid), max_clean_drop=0.1)
    assert (no_control_budget["top"], no_control_budget["alpha"]) == (0.05, 3.0)  # 0.9


def test_decoding_passes_get_the_exact_shift_and_the_hooked_tensor_is_not_written(model):
    """Every pass (prefill and each generated token) gets exactly +alpha*NMD at the selected
    coordinates of position -1, nothing elsewhere, and the hook builds a new tensor: the
    activation it was handed keeps its values."""
    sel = selection(["mlp.1", "mlp.1"], [2, 9], [1.25, -0.5])
    seen, copies, after = [], [], []
    handles = [hook_site(model, "mlp.1", lambda h: (seen.append(h), copies.append(h.clone()))
                         and None)]
    try:
        with steer(model, sel, 2.0, "to_mem"):
            handles.append(_capture(model, "mlp.1", after))
            generate(model, TOK, PROMPTS[:3], max_new_tokens=3, batch_size=3)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) >= 2 and seen[1].shape[1] == 1  # a prefill and decoding passes
    idx, delta = torch.tensor([2, 9]), 2.0 * torch.tensor([1.25, -0.5])
    for h, copy, out in zip(seen, copies, after, strict=True):
        assert torch.equal(h, copy)  # not written in place
        expected = copy.clone()
        expected[:, -1, idx] = copy[:, -1, idx] + delta
        assert torch.equal(out, expected)


def test_tuning_and_grid_steer_a_capped_seeded_subsample_per_behaviour():
    from memgen.analysis.results import Split
    from memgen.analysis.stages import capped

    labels = torch.tensor([1] * 7 + [0] * 3)
    split = Split(items=list(range(10)), examples=[f"ex{i}" for i in range(10)], labels=labels)
    assert capped(split, None, 0) is split and capped(split, 7, 0) is split
    sub = capped(split, 4, seed=0)
    assert sub.labels.tolist().count(1) == 4 and sub.labels.tolist().count(0) == 3  # GEN whole
    assert sub.items == sorted(sub.items)  # the split's order
    assert all(sub.examples[j] == f"ex{i}" for j, i in enumerate(sub.items))
    assert [int(labels[i]) for i in sub.items] == sub.labels.tolist()
    assert capped(split, 4, seed=0).items == sub.items  # seeded
    assert any(capped(split, 4, seed=s).items != sub.items for s in range(1, 20))


def test_run_grid_steers_the_capped_subsample(monkeypatch):
    """Tuning and the grid go through run_grid: it hands steering_grid the capped split."""
    from types import SimpleNamespace

    from memgen.analysis import stages
    from memgen.analysis.results import Split
    from memgen.analysis.settings import AnalysisSettings, SteeringSettings
    from memgen.tasks.base import Behavior

    seen = {}
    monkeypatch.setattr(stages, "steering_stats", lambda steering, stats: {})
    def grid(subject, examples, behaviors, *args, **kwargs):
        seen["n"] = [len(examples), behaviors.count(Behavior.MEM)]

    monkeypatch.setattr(stages, "steering_grid", grid)
    split = Split(items=list(range(10)), examples=[f"ex{i}" for i in range(10)],
                  labels=torch.tensor([1] * 7 + [0] * 3))
    neurons = SimpleNamespace(stats={})
    for cap, expected in ((4, [7, 4]), (None, [10, 7])):
        seen.clear()
        settings = AnalysisSettings(steering=SteeringSettings(tune_max_items=cap))
        stages.run_grid(None, settings, neurons, split, [])
        assert seen["n"] == expected


def test_the_colour_preset_skips_the_grid_and_tunes_alpha_1_and_3(monkeypatch):
    """``grid_top_fraction: []`` (the colour preset) makes the grid stage steer nothing (no
    neurons selected, no item evaluated); tuning keeps the two alphas colour ever picked."""
    from types import SimpleNamespace

    from memgen.analysis import stages
    from memgen.analysis.results import Split
    from memgen.analysis.steering import tuning
    from memgen.config import compose
    from memgen.config.adapter import settings_from_config

    settings = settings_from_config(compose(["experiment=colour_cpu"]))
    s = settings.steering
    assert s.grid_top_fraction == () and s.tune_alpha == (1.0, 3.0)
    default = settings_from_config(compose([])).steering
    assert default.grid_top_fraction == (0.05, 0.1) and default.tune_alpha == (1.0, 3.0, 5.0, 9.0)

    def no_steering(*args, **kwargs):
        raise AssertionError("the grid steered although it has no k")

    monkeypatch.setattr(tuning, "evaluate_steering", no_steering)
    monkeypatch.setattr(tuning, "select_top", no_steering)
    monkeypatch.setattr(stages, "steering_stats", lambda steering, stats: {})
    split = Split(items=list(range(4)), examples=[f"ex{i}" for i in range(4)],
                  labels=torch.tensor([1, 1, 0, 0]))
    grid = stages.run_grid(None, settings, SimpleNamespace(stats={}), split, [])
    assert grid.empty
