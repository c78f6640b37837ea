"""Steering's attribution ranking: the score is the first-order effect of the intervention it
ranks for, and selection follows it (steering/attribution.py)."""

from __future__ import annotations

import pytest
import torch

from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.settings import SteeringSettings, Subject
from memgen.analysis.stats import select_neurons
from memgen.analysis.steering import kinds
from memgen.analysis.steering.attribution import attribution_scores, ranked_by
from memgen.analysis.steering.margin import margins
from memgen.tasks.base import Example
from tests.helpers_steering import (
    MODELS,
    FirstCharTask,
    char_tokenizer,
    fake_stats,
    one_thread,  # noqa: F401 - an autouse fixture
)

TOK = char_tokenizer()
EXAMPLES = [Example("12+7", "", "conflict", mem_answer="ab", gen_answer="9"),
            Example("Input:\n1+2\n", "", "conflict", mem_answer="x", gen_answer="33"),
            Example("4+4", "", "conflict", mem_answer="q", gen_answer="8"),
            Example("9+1:", "", "conflict", mem_answer="zz", gen_answer="10")]
LABELS = [1, 0, 0, 1]  # MEM, GEN, GEN, MEM


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    return MODELS[request.param](len(TOK)).double()


def _stats(model) -> dict[str, SiteStats]:
    widths = {"resid.1": model.config.hidden_size, "mlp.2": 4 * model.config.hidden_size
              if model.config.model_type == "gpt2" else model.config.intermediate_size}
    return {site: SiteStats(**{**st.__dict__, "nmd": st.nmd.double()})
            for site, st in fake_stats(widths).items()}


@pytest.mark.parametrize("positions", ["last_prompt", "every_pass", "all"])
def test_score_is_the_margin_change_of_adding_that_neurons_nmd(model, positions):
    """For a few neurons: the margin's change per unit of eps*NMD_i added at the steered
    positions (a central difference through the real hooks, which steer in float32), averaged
    with MEM and GEN items weighted equally, equals the attribution score."""
    subject = Subject(model, TOK, FirstCharTask())
    stats = _stats(model)
    scores = attribution_scores(subject, EXAMPLES, LABELS, stats, positions, batch_size=3)
    assert set(scores) == set(stats) and scores["mlp.2"].shape == stats["mlp.2"].nmd.shape
    y = torch.tensor(LABELS)
    eps = 1e-2
    for site in stats:
        for i in (0, 3, 11):
            one = NeuronSelection(sites=[site], indices=torch.tensor([i]),
                                  nmd=stats[site].nmd[i:i + 1].float(), r=torch.ones(1))
            iv = kinds.build("add", one, stats)
            iv.shift = stats[site].nmd[i:i + 1].double()
            up = margins(subject, EXAMPLES, iv, eps, "to_mem", positions)
            down = margins(subject, EXAMPLES, iv, eps, "to_gen", positions)
            per_item = (up - down) / (2 * eps)
            hand = 0.5 * (per_item[y == 1].mean() + per_item[y == 0].mean())
            assert float(scores[site][i]) == pytest.approx(float(hand), rel=2e-2, abs=2e-3)
    assert any(float(s.abs().max()) > 1e-3 for s in scores.values())  # not a vacuous zero


def test_selection_follows_the_priority_not_abs_r():
    stats = fake_stats({"resid.1": 8, "mlp.1": 8})
    by_r = select_neurons(stats, top_k=3)
    priority = {"resid.1": torch.zeros(8), "mlp.1": torch.zeros(8)}
    priority["mlp.1"][[6, 2]] = torch.tensor([5.0, 4.0])
    priority["resid.1"][1] = 3.0
    priority["resid.1"][4] = float("nan")  # never picked ahead of a number
    picked = select_neurons(ranked_by(stats, priority), top_k=3)
    assert picked.keys() == [("mlp.1", 6), ("mlp.1", 2), ("resid.1", 1)]
    assert picked.keys() != by_r.keys()
    # the shift and r stay each neuron's own
    assert float(picked.nmd[0]) == float(stats["mlp.1"].nmd[6])
    assert float(picked.r[2]) == float(stats["resid.1"].r[1])


def test_mixed_or_missing_priorities_are_refused():
    stats = fake_stats({"resid.1": 8, "mlp.1": 8})
    mixed = {**stats, "mlp.1": ranked_by({"mlp.1": stats["mlp.1"]},
                                         {"mlp.1": torch.ones(8)})["mlp.1"]}
    with pytest.raises(ValueError, match="priority"):
        select_neurons(mixed, top_k=2)
    with pytest.raises(ValueError, match="no scores for site"):
        ranked_by(stats, {"resid.1": torch.ones(8)})
    with pytest.raises(ValueError, match=r"rank: expected one of \['abs_r', 'attribution'\]"):
        SteeringSettings(rank="gradient")
    from memgen.config import compose
    from memgen.config.adapter import settings_from_config
    from memgen.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^analysis.steering.rank: expected one of"):
        compose(["analysis.steering.rank=gradient"])
    assert settings_from_config(compose([])).steering.rank == "attribution"
    assert settings_from_config(compose(["experiment=paper_steering"])).steering.rank == "abs_r"


def test_attribution_needs_both_behaviours(model):
    subject = Subject(model, TOK, FirstCharTask())
    with pytest.raises(ValueError, match="MEM and GEN items"):
        attribution_scores(subject, EXAMPLES, [1, 1, 1, 1], _stats(model))


def test_frozen_weights_give_the_same_scores(model):
    """LoRA's base and any frozen model: the gradient still reaches every site."""
    subject = Subject(model, TOK, FirstCharTask())
    stats = _stats(model)
    free = attribution_scores(subject, EXAMPLES, LABELS, stats)
    model.requires_grad_(False)
    try:
        frozen = attribution_scores(subject, EXAMPLES, LABELS, stats)
    finally:
        model.requires_grad_(True)
    for site in stats:
        assert torch.allclose(free[site], frozen[site], rtol=1e-6, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient filled


@pytest.mark.slow
def test_a_run_steers_the_top_neurons_by_attribution(trained_run):
    """analyse_model with rank=attribution: the steered neurons are the top ones by the
    selection split's attribution, among the steerable sites, and the overlap with abs(r)'s
    pick is logged."""
    import dataclasses

    from memgen.analysis.stages import (
        contrast,
        rank_by_attribution,
        steering_selection,
        steering_stats,
    )
    from memgen.config.adapter import settings_from_config

    trained = trained_run["objects"]["trained"]
    subject = Subject(trained.model, trained.tokenizer, trained.task)
    settings = settings_from_config(trained_run["cfg"])
    settings = settings.with_steering(dataclasses.replace(
        settings.steering, rank="attribution", tune=False, top_fraction=0.05,
        tune_sites=()))  # one site spec: the (k, alpha) path steers `sites` alone
    behaviors, _features, neurons = contrast(subject, settings)
    ranked = rank_by_attribution(subject, settings, neurons, behaviors.selection)
    chosen = steering_selection(settings, ranked)
    pool = steering_stats(settings.steering, neurons.stats)
    scores = attribution_scores(subject, behaviors.selection.examples,
                                behaviors.selection.labels, pool)
    flat = sorted(((float(v), site, i) for site, s in scores.items()
                   for i, v in enumerate(s.tolist())), key=lambda t: -t[0])
    assert chosen.keys() == [(site, i) for _v, site, i in flat[:len(chosen)]]
    assert chosen.keys() != steering_selection(
        settings.with_steering(dataclasses.replace(settings.steering, rank="abs_r")),
        neurons).keys()
    import memgen.analysis.stages as stages

    steered = []
    real = stages.evaluate_steering

    def spy(subject, examples, labels, selection, *args, **kwargs):
        steered.append(selection.keys())
        return real(subject, examples, labels, selection, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stages, "evaluate_steering", spy)
        result = stages.analyse_model(subject, settings, stages=("neurons", "steering"))
    assert steered == [chosen.keys()]  # the run steers the attribution pick, not abs(r)'s
    assert 0 <= result.metrics["steer/rank_overlap"] < 1
    assert "time/attribution_s" in result.metrics


@pytest.mark.slow
def test_attribution_sees_only_the_items_that_choose(trained_run, monkeypatch):
    """Steering ranks on the selection split's items, the transfer check on half B's: the
    items they are then scored on never enter the ranking."""
    import dataclasses

    import memgen.analysis.stages as stages
    from memgen.config.adapter import settings_from_config

    trained = trained_run["objects"]["trained"]
    subject = Subject(trained.model, trained.tokenizer, trained.task)
    settings = settings_from_config(trained_run["cfg"])
    settings = dataclasses.replace(settings, consistency_seeds=()).with_steering(
        dataclasses.replace(settings.steering, rank="attribution", tune=False,
                            controls=("random",), ceiling=False))
    seen: list[set[int]] = []  # the Example objects by identity: prompts can repeat
    real = stages.attribution_scores

    def spy(subject, examples, *args, **kwargs):
        seen.append({id(ex) for ex in examples})
        return real(subject, examples, *args, **kwargs)

    monkeypatch.setattr(stages, "attribution_scores", spy)
    result = stages.analyse_model(subject, settings,
                                  stages=("neurons", "steering", "consistency"))
    selection = {id(ex) for ex in result.behaviors.selection.examples}
    evaluation = {id(ex) for ex in result.behaviors.evaluation.examples}
    assert len(seen) == 2 and seen[0] == selection
    # the transfer steers half A (the selection split) with half B's (the evaluation split's)
    # neurons, so half B's items alone rank them
    assert seen[1] == evaluation and not seen[1] & selection
    assert "consistency/intra/transfer/to_mem/success" in result.metrics
