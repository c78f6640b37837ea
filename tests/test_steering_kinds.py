"""Intervention kinds, position modes, matched controls and the margin on tiny models (issue 26).

Every test builds its models in memory (no training); the hooked activation is compared with a
hand computation from the unhooked one at the same site.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from memgen.analysis.generation import encode_prompts, generate, position_ids
from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.sites import hook_site
from memgen.analysis.stages import steering_sites
from memgen.analysis.steering import kinds
from memgen.analysis.steering.compare import (
    KindTuning,
    candidate_of,
    direction_view,
    tune_kinds,
)
from memgen.analysis.steering.hooks import steer
from memgen.analysis.steering.intervene import POSITIONS, Intervention, intervene
from memgen.analysis.steering.margin import margins
from memgen.analysis.steering.runner import generate_with, sources_for
from memgen.analysis.steering.tuning import direction_metrics
from memgen.tasks.base import Behavior, Example
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
SITE = "resid.1"
IDX = [0, 5, 7]
SEL = selection([SITE] * 3, IDX, [3.0, -2.0, 4.0])
STATS = fake_stats({"resid.1": 32, "resid.2": 32, "mlp.1": 128})



@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param](len(TOK))


def _forward(model, prompts=PROMPTS):
    batch = encode_prompts(TOK, prompts, "cpu")
    with torch.no_grad():
        model(**batch, position_ids=position_ids(batch["attention_mask"]))
    return batch["attention_mask"].bool()


def _hooked(model, iv, alpha, direction, positions, run):
    """(before, after) activations at SITE of every pass ``run`` makes under the intervention."""
    before, after = [], []
    handles = [hook_site(model, SITE, lambda h: before.append(h.detach().clone()))]
    try:
        with intervene(model, iv, alpha, direction, positions) as state:
            handles.append(hook_site(model, SITE, lambda h: after.append(h.detach().clone())))
            out = run(state)
    finally:
        for handle in handles:
            handle.remove()
    return before, after, out


def _interventions():
    sigma = {s: torch.rand(v.width) + 0.5 for s, v in STATS.items()}
    return {k: kinds.build(k, SEL, STATS, sigma) for k in ("add", "add_scaled", "set_mean",
                                                            "ablate")}


def _expected(iv: Intervention, sub: torch.Tensor, alpha: float, direction: str):
    sign = 1.0 if direction == "to_mem" else -1.0
    if iv.kind in ("add", "add_scaled"):
        return sub + sign * alpha * iv.shift
    if iv.kind == "set_mean":
        target = iv.mem_value if direction == "to_mem" else iv.gen_value
        return sub + alpha * (target - sub)
    u = iv.direction / iv.direction.norm()
    return sub - alpha * (sub @ u).unsqueeze(-1) * u


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("kind", ["add", "add_scaled", "set_mean", "ablate"])
def test_hooked_value_is_the_hand_computed_one(model, kind, positions):
    """A plain forward is a prefill: last_prompt/every_pass change position -1, prompt/all every
    real prompt position; the selected coordinates take the kind's value, nothing else moves."""
    iv = _interventions()[kind]
    alpha = 1.0 if kind == "ablate" else 0.7
    direction = "to_gen"
    masks = []
    (h0,), (h1,), _ = _hooked(model, iv, alpha, direction, positions,
                              lambda s: masks.append(_forward(model)))
    where = torch.zeros(h0.shape[:2], dtype=torch.bool)
    if positions in ("last_prompt", "every_pass"):
        where[:, -1] = True
    else:
        where = masks[0]
    idx = torch.tensor(IDX)
    expected = h0.clone()
    new = _expected(iv, h0[..., idx], alpha, direction)
    expected[..., idx] = torch.where(where.unsqueeze(-1), new, h0[..., idx])
    assert torch.allclose(h1, expected, atol=1e-6)
    changed = (h1 != h0).any(-1)
    assert torch.equal(changed, where)  # exactly the positions the mode names
    if kind == "ablate":  # no component left along the direction
        u = iv.direction / iv.direction.norm()
        assert (h1[..., idx][where] @ u).abs().max() < 1e-5


@pytest.mark.parametrize("positions,steered", [("last_prompt", [True, False, False]),
                                               ("every_pass", [True, True, True]),
                                               ("prompt", [True, False, False]),
                                               ("all", [True, True, True])])
def test_steered_passes_are_those_the_mode_names(model, positions, steered):
    iv = _interventions()["add"]
    before, after, _ = _hooked(model, iv, 2.0, "to_mem", positions,
                               lambda s: generate(model, TOK, PROMPTS[:4], 3, batch_size=4))
    assert before[0].shape[1] > 1 and all(h.shape[1] == 1 for h in before[1:])
    got = [not torch.equal(a, b) for a, b in zip(after, before, strict=True)]
    assert got == steered[:len(got)]
    changed = (after[0] != before[0]).any(-1)  # the prefill's steered positions
    assert changed[:, :-1].any() == (positions in ("prompt", "all"))


def test_a_batch_without_padding_steers_its_prefill_only(model):
    """``generate`` drops an all-ones attention mask: equal-length prompts must still be
    steered on the prefill only under last_prompt (today's ``last_prompt_only`` too)."""
    prompts = ["12+7", "3+45"]  # same length: no padding, no mask in the forward calls
    iv = _interventions()["add"]
    for positions, steered in (("last_prompt", [True, False, False]),
                               ("every_pass", [True, True, True])):
        before, after, _ = _hooked(model, iv, 2.0, "to_mem", positions,
                                   lambda s: generate(model, TOK, prompts, 3, batch_size=2))
        assert [not torch.equal(a, b) for a, b in zip(after, before, strict=True)] == steered
    before, after = [], []
    handles = [hook_site(model, SITE, lambda h: before.append(h.clone()))]
    try:
        with steer(model, SEL, 2.0, "to_mem", last_prompt_only=True):
            handles.append(hook_site(model, SITE, lambda h: after.append(h.clone())))
            generate(model, TOK, prompts, 3, batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
    assert [not torch.equal(a, b) for a, b in zip(after, before, strict=True)] == [True, False,
                                                                                   False]


def test_generic_add_equals_todays_steer(model):
    iv = kinds.build("add", SEL, STATS)
    subject = Subject(model, TOK, FirstCharTask())
    exs = [Example(prompt=p, answer="", kind="conflict") for p in PROMPTS]
    for positions, last_only in (("last_prompt", True), ("every_pass", False)):
        with steer(model, SEL, 3.0, "to_gen", last_prompt_only=last_only):
            today = generate(model, TOK, PROMPTS, 5)
        assert generate_with(subject, iv, 3.0, "to_gen", positions, exs,
                             Decoding(max_new_tokens=5)) == today


def test_interchange_copies_the_counterparts_values(model):
    """Same length: every prompt position takes the source's value; different lengths: only
    the last prompt token."""
    targets = [Example("12+7", "", "conflict"), Example("9", "", "conflict")]
    sources = {targets[0]: Example("3+45", "", "conflict"),  # same length
               targets[1]: Example("7\n8", "", "conflict")}  # longer
    iv = kinds.build("interchange", SEL, STATS, sources=sources)
    src_vals = []
    handle = hook_site(model, SITE, lambda h: src_vals.append(h.detach().clone()))
    try:
        _forward(model, ["3+45"])
        _forward(model, ["7\n8"])
    finally:
        handle.remove()
    batch = encode_prompts(TOK, [t.prompt for t in targets], "cpu")
    found = sources_for(model, TOK, iv, targets, batch["attention_mask"])

    def run(state):
        state.sources = found
        return _forward(model, [t.prompt for t in targets])

    (h0,), (h1,), _ = _hooked(model, iv, 1.0, "to_mem", "prompt", run)
    idx = torch.tensor(IDX)
    assert torch.allclose(h1[0, :, idx], src_vals[0][0, :, idx], atol=1e-5)  # all 4 positions
    assert torch.allclose(h1[1, -1, idx], src_vals[1][0, -1, idx], atol=1e-5)  # last only
    assert torch.equal(h1[1, :-1], h0[1, :-1])
    other = torch.tensor([i for i in range(h0.shape[-1]) if i not in IDX])
    assert torch.equal(h1[..., other], h0[..., other])


@pytest.mark.parametrize("kind", ["add", "set_mean", "ablate", "interchange"])
def test_hooks_removed_after_exception(model, kind):
    iv = (_interventions()[kind] if kind != "interchange"
          else kinds.build("interchange", SEL, STATS))
    n = hook_count(model)
    for positions in POSITIONS:
        with pytest.raises(RuntimeError, match="boom"):
            with intervene(model, iv, 1.0, "to_gen", positions):
                assert hook_count(model) > n
                raise RuntimeError("boom")
        assert hook_count(model) == n


def test_controls_match_norm_or_source():
    sigma = {s: torch.rand(v.width) + 0.5 for s, v in STATS.items()}
    sel = selection(["resid.1", "mlp.1", "mlp.1"], [2, 9, 40], [1.0, -3.0, 0.5])
    for kind in ("add", "add_scaled", "set_mean"):
        main = kinds.build(kind, sel, STATS, sigma)
        ctrl = kinds.controls(kind, main, STATS, sigma, seed=3)
        assert set(ctrl) == {"random", "low_r", "shuffled"}
        rnd = ctrl["random"]
        assert not set(rnd.selection.keys()) & set(sel.keys())
        if kind == "set_mean":  # the expected shift: target - the source behaviour's mean
            mine = main.mem_value - main.gen_value
            gen_mean = kinds._per_neuron(STATS, rnd.selection, "mean_gen")
            theirs = rnd.mem_value - gen_mean
        else:
            mine, theirs = main.shift, rnd.shift
        assert torch.allclose(mine.norm(), theirs.norm())
        assert sorted(ctrl["shuffled"].selection.keys()) == sorted(sel.keys())
    main = kinds.build("ablate", sel, STATS)
    rd = kinds.controls("ablate", main, STATS, seed=1)["random_direction"]
    assert rd.selection.keys() == sel.keys()
    cos = torch.nn.functional.cosine_similarity(rd.direction, main.direction, dim=0)
    assert abs(float(cos)) < 0.999
    # interchange: the counterpart vs a random item of the target behaviour, another example
    ex = [[Example(f"{g}{k}", "", "conflict") for k in range(2)] for g in range(4)]
    labels = [[Behavior.MEM, Behavior.GEN] for _ in range(4)]
    items = [(g, k) for g in range(4) for k in range(2)]
    real = kinds.counterparts(ex, labels, items)
    rand = kinds.random_sources(ex, labels, items, seed=0)
    for g, k in items:
        assert real[ex[g][k]] == ex[g][1 - k]
        src = rand[ex[g][k]]
        sg, sk = next((a, b) for a in range(4) for b in range(2) if ex[a][b] == src)
        assert sg != g and labels[sg][sk] == labels[g][1 - k]


def test_margin_equals_hand_computation(model):
    subject = Subject(model, TOK, FirstCharTask())
    exs = [Example("12+7", "", "conflict", mem_answer="ab", gen_answer="9"),
           Example("Input:\n1+2\n", "", "conflict", mem_answer="x", gen_answer="33")]
    got = margins(subject, exs, batch_size=2)

    def logp(prompt, answer):
        p = TOK(prompt, add_special_tokens=False)["input_ids"]
        a = TOK(answer + TOK.eos_token, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + a])).logits[0]
        lp = torch.log_softmax(logits, -1)
        return sum(float(lp[len(p) - 1 + j, t]) for j, t in enumerate(a))

    hand = torch.tensor([logp(e.prompt, e.mem_answer) - logp(e.prompt, e.gen_answer)
                         for e in exs])
    assert torch.allclose(got, hand, atol=1e-4)
    iv = kinds.build("add", SEL, STATS)
    moved = margins(subject, exs, iv, 5.0, "to_mem", "all", batch_size=2)
    assert not torch.allclose(moved, got)  # the intervention reaches the forced pass


def test_tuning_screens_all_and_refines_the_best_two():
    cands = [("add", "last_prompt", "mlp"), ("set_mean", "prompt", "mlp"),
             ("ablate", "all", "mlp"), ("add_scaled", "every_pass", "mlp")]
    quality = {"add": 0.3, "set_mean": 0.9, "ablate": 0.1, "add_scaled": 0.6}
    calls = []

    def score(cand, top, alpha):
        calls.append((cand, top, alpha))
        s = quality[cand[0]] + 0.01 * alpha
        return {"k": int(top * 100), "min_success": s, "max_control_success": 0.0,
                "clean_acc_drop": 0.0, "score": s}

    t = tune_kinds(score, cands, [0.05, 0.1, 0.2], [1.0, 3.0], 0.1, 0.02, keep=2)
    screened = {c for c, *_ in calls[:4]}
    assert screened == set(cands) and all(top == 0.1 for _, top, _ in calls[:4])
    refined = {c for c, *_ in calls[4:]}
    assert refined == {cands[1], cands[3]}
    assert len(calls) == 4 + (6 - 1) * 2  # the screened cell is not scored twice
    assert t.candidate == cands[1] and t.best["alpha"] == 3.0
    assert isinstance(t.scores, pd.DataFrame) and set(t.scores["stage"]) == {"screen", "refine"}
    # interchange and ablate are reported, never refined nor picked (unless alone)
    quality.update(interchange=5.0, ablate=4.0)
    cands2 = [*cands, ("interchange", "prompt", "mlp")]
    t = tune_kinds(score, cands2, [0.05, 0.1], [1.0], 0.1, 0.02, keep=2)
    assert t.candidate[0] == "set_mean"
    assert set(t.scores.loc[t.scores["stage"] == "refine", "kind"]) == {"set_mean", "add_scaled"}
    only = tune_kinds(score, [("ablate", "all", "mlp")], [0.1], [1.0], 0.1, 0.02)
    assert only.candidate[0] == "ablate"


def test_per_direction_tuning_refines_and_picks_each_directions_best():
    """Toward GEN and toward MEM are two interventions: with ``per_direction`` each direction's
    best ``keep`` candidates are refined and each direction gets its own pick, within its own
    controls and clean drop; the joint pick would have taken a third candidate for both."""
    cands = [("add", "last_prompt", "mlp.1"), ("add", "last_prompt", "mlp.4"),
             ("set_mean", "last_prompt", "mlp")]
    # success toward GEN / toward MEM per candidate; mlp.4's control is over budget at alpha 1
    to_gen = {"mlp.1": 0.9, "mlp.4": 0.2, "mlp": 0.5}
    to_mem = {"mlp.1": 0.1, "mlp.4": 0.95, "mlp": 0.5}
    mem_control = {"mlp.1": 0.0, "mlp.4": 0.0, "mlp": 0.0}

    def score(cand, top, alpha):
        site = cand[2]
        g, m = to_gen[site] + 0.01 * alpha, to_mem[site] + 0.01 * alpha
        mc = mem_control[site] + (0.3 if alpha < 2 and site == "mlp.4" else 0.0)
        return {"k": int(top * 100), "min_success": min(g, m),
                "max_control_success": mc, "clean_acc_drop": 0.0, "score": min(g, m) - mc,
                "to_gen_success": g, "to_gen_max_control_success": 0.0,
                "to_gen_clean_acc_drop": 0.0, "to_mem_success": m,
                "to_mem_max_control_success": mc, "to_mem_clean_acc_drop": 0.0}

    joint = tune_kinds(score, cands, [0.1], [1.0, 3.0], 0.1, 0.02, keep=1)
    assert joint.candidate == cands[2]
    assert set(joint.scores.loc[joint.scores["stage"] == "refine", "sites"]) == {"mlp"}
    t = tune_kinds(score, cands, [0.1], [1.0, 3.0], 0.1, 0.02, keep=1, per_direction=True)
    assert set(t.scores.loc[t.scores["stage"] == "refine", "sites"]) == {"mlp.1", "mlp.4"}
    best = t.best_by_direction(0.1, 0.02)
    assert candidate_of(best["to_gen"]) == cands[0] and best["to_gen"]["alpha"] == 3.0
    assert candidate_of(best["to_mem"]) == cands[1] and best["to_mem"]["alpha"] == 3.0
    assert best["to_mem"]["min_success"] == pytest.approx(0.98)
    # its alpha-1 cell steers toward MEM too (0.96) but its control (0.3) is over the budget
    assert candidate_of(t.best_by_direction(0.5, 0.02)["to_mem"]) == cands[1]
    m = direction_metrics(best)
    assert m["steer/tuned/to_mem/alpha"] == 3.0 and m["steer/tuned/to_gen/alpha"] == 3.0
    own = t.best_of(cands[2], 0.1, 0.02, direction="to_mem")
    assert own["min_success"] == pytest.approx(0.53)
    # a view of one direction drops the cells that never steered it (ablate: toward GEN only)
    frame = pd.DataFrame([{"to_gen_success": 0.5, "to_gen_max_control_success": 0.1,
                           "to_gen_clean_acc_drop": -0.01, "to_mem_success": math.nan,
                           "to_mem_max_control_success": math.nan,
                           "to_mem_clean_acc_drop": math.nan,
                           "min_success": 0.5, "max_control_success": 0.1,
                           "clean_acc_drop": 0.0, "score": 0.4}])
    assert direction_view(frame, "to_mem").empty
    assert direction_view(frame, "to_gen")["score"].iloc[0] == pytest.approx(0.4)


def test_the_screen_keeps_a_strong_candidate_over_budget_at_the_middle_cell():
    """A site that moves nothing fits any budget; a strong one whose control is too high at the
    middle alpha fits it at a smaller alpha. The screen ranks by score, so the strong one is
    refined and picked (ranking by success within the budget kept the silent site)."""
    cands = [("add", "last_prompt", "mlp.2"), ("add", "last_prompt", "mlp")]

    def score(cand, top, alpha):
        if cand[2] == "mlp.2":  # moves nothing, so its controls move nothing either
            s, c = 0.0, 0.0
        else:  # strong; its control passes the budget above alpha 2
            s, c = 0.6 + 0.1 * alpha, (0.3 if alpha > 2 else 0.05)
        return {"k": int(top * 100), "min_success": s, "max_control_success": c,
                "clean_acc_drop": 0.0, "score": s - c}

    t = tune_kinds(score, cands, [0.1], [1.0, 3.0, 5.0], 0.1, 0.02, keep=1)
    assert set(t.scores.loc[t.scores["stage"] == "refine", "sites"]) == {"mlp"}
    assert t.candidate == cands[1] and t.best["alpha"] == 1.0


def test_site_bands():
    analysed = ["resid.0", "resid.1", "resid.2", "mlp.1", "mlp.2", "mlp.3"]
    assert steering_sites("mlp.1-2", analysed) == ["mlp.1", "mlp.2"]
    assert steering_sites("mlp.0-1,resid.2", analysed) == ["mlp.1", "resid.2"]
    with pytest.raises(ValueError, match="mlp.7-8"):
        steering_sites("mlp.7-8", analysed)


def test_every_kind_needs_its_values():
    with pytest.raises(ValueError, match="shift"):
        Intervention("add", SEL)
    with pytest.raises(ValueError, match="kind"):
        Intervention("nudge", SEL, shift=SEL.nmd)
    empty = NeuronSelection([], torch.tensor([], dtype=torch.long), torch.tensor([]),
                            torch.tensor([]))
    with pytest.raises(ValueError, match="empty"):
        Intervention("interchange", empty)


def test_config_names_the_kind_and_keeps_last_prompt_only():
    from memgen.config import compose
    from memgen.config.adapter import settings_from_config
    from memgen.errors import ConfigError

    paper = settings_from_config(compose(["experiment=paper_steering"])).steering
    assert (paper.kind, paper.positions, paper.sites, paper.last_prompt_only) == (
        "add", "every_pass", "resid", False)
    legacy = settings_from_config(compose(["analysis.steering.last_prompt_only=false"]))
    assert legacy.steering.positions is None and not legacy.steering.last_prompt_only
    with pytest.raises(ConfigError, match="analysis.steering.positions"):
        compose(["analysis.steering.positions=everywhere"])
    with pytest.raises(ConfigError, match="analysis.steering.tune_kinds"):
        compose(["analysis.steering.tune_kinds=[add,nudge]"])


def test_interchange_generation_feeds_finished_rows_eos_not_pad(model, monkeypatch):
    """Like ``generation.generate``, interchange's own decoding loop feeds a finished row EOS:
    with an equal-length batch transformers drops the mask, and a PAD filler would make every
    later pass padded input without a mask (transformers' attention-mask warning)."""
    targets = [Example("12+7", "", "conflict"), Example("3+45", "", "conflict")]
    sources = {targets[0]: targets[1], targets[1]: targets[0]}
    iv = kinds.build("interchange", SEL, STATS, sources=sources)
    seen = []
    original = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pad_token_id"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    subject = Subject(model, TOK, FirstCharTask())
    generate_with(subject, iv, 1.0, "to_mem", "prompt", targets, Decoding(max_new_tokens=3))
    assert seen and all(p == TOK.eos_token_id != TOK.pad_token_id for p in seen)


def test_kind_names_with_several_sites_make_valid_metric_names():
    """``tune_sites`` with several entries labels candidates ``kind:sites``; every per-kind
    metric name must pass MLflow's rule (``@`` and ``,`` are refused: a re-analysis failed)."""
    import re

    from memgen.analysis.kinds_stage import kind_label
    from memgen.analysis.steering.compare import kind_metrics

    name, positions, sites = kind_label(("add", "every_pass", "resid.3,mlp.4"), True)
    assert (name, positions) == ("add:resid.3_mlp.4", "every_pass")
    rows = [{"kind": name, "positions": positions, "direction": "to_gen", "success": 0.5}]
    names = list(kind_metrics(rows))
    assert names and all(re.fullmatch(r"[\w\-. :/]+", n) for n in names)


def test_budget_frontier_says_which_budget_binds():
    """Per direction, the best selection-split success within both budgets, without each and
    without either; the upper-bound kinds (interchange) are not pickable, so not counted."""
    def cell(kind, alpha, mem, mem_ctrl, mem_drop, gen=0.5, gen_ctrl=0.3, gen_drop=0.0):
        return {"kind": kind, "positions": "last_prompt", "sites": "mlp", "top": 0.1,
                "alpha": alpha, "stage": "refine", "k": 10,
                "min_success": min(mem, gen), "max_control_success": max(mem_ctrl, gen_ctrl),
                "clean_acc_drop": max(mem_drop, gen_drop), "score": 0.0,
                "to_mem_success": mem, "to_mem_max_control_success": mem_ctrl,
                "to_mem_clean_acc_drop": mem_drop, "to_gen_success": gen,
                "to_gen_max_control_success": gen_ctrl, "to_gen_clean_acc_drop": gen_drop}

    scores = pd.DataFrame([cell("add", 1.0, 0.60, 0.05, 0.01),   # within both
                           cell("add", 3.0, 0.85, 0.05, 0.30),   # only the drop breaks
                           cell("add", 5.0, 0.90, 0.40, 0.02),   # only the control breaks
                           cell("add", 9.0, 0.95, 0.50, 0.50),   # both break
                           cell("interchange", 1.0, 1.00, 0.0, 0.0, gen=1.0, gen_ctrl=0.0)])
    t = KindTuning(scores, scores.iloc[0])
    f = t.budget_frontier(0.1, 0.02)
    assert f["steer/budget/to_mem/within"] == pytest.approx(0.60)
    assert f["steer/budget/to_mem/control_only"] == pytest.approx(0.85)
    assert f["steer/budget/to_mem/drop_only"] == pytest.approx(0.90)
    assert f["steer/budget/to_mem/unbounded"] == pytest.approx(0.95)
    # toward GEN every add cell's control (0.3) breaks the budget: nothing within it
    assert math.isnan(f["steer/budget/to_gen/within"])
    assert math.isnan(f["steer/budget/to_gen/control_only"])
    assert f["steer/budget/to_gen/drop_only"] == pytest.approx(0.5)
    # no budget at all: everything counts
    free = t.budget_frontier(None, None)
    assert free["steer/budget/to_mem/within"] == pytest.approx(0.95)
