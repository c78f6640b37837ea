"""Behavior labels, MEM-vs-GEN pairs, and selection/evaluation splits disjoint by example."""

from __future__ import annotations

import pytest

from memgen.analysis import behavior, generation
from memgen.analysis.behavior import (
    LabelledGroups,
    Pair,
    find_pairs,
    label_outputs,
    label_perturbation_groups,
    pair_items,
    split_pairs,
)
from memgen.tasks import ArithmeticTask, Behavior, Example
from memgen.tasks.arithmetic import ArithmeticParams
from tests.helpers_analysis import char_tokenizer, tiny_gpt2

MEM, GEN, OTHER = Behavior.MEM, Behavior.GEN, Behavior.OTHER


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask(ArithmeticParams(scratchpad=False), seed=3, n_train=40, n_conflict=6)


@pytest.fixture(scope="module")
def groups(task) -> list[list[Example]]:
    return task.perturbation_set(task.conflict_examples(), n_perturbations=3)


def _answer(ex: Example, kind: Behavior) -> str:
    return {MEM: ex.mem_answer, GEN: ex.gen_answer, OTHER: "oops"}[kind] + "\nmore text"


def _labelled(groups: list[list[Example]], labels: list[list[Behavior]]) -> LabelledGroups:
    outputs = [[_answer(ex, b) for ex, b in zip(g, bs, strict=True)]
               for g, bs in zip(groups, labels, strict=True)]
    return LabelledGroups(groups=groups, outputs=outputs, labels=labels)


def test_label_outputs(task, groups):
    examples = groups[0]
    outputs = [_answer(examples[0], MEM), _answer(examples[1], GEN), "12"]
    assert label_outputs(task, examples, outputs) == [MEM, GEN, OTHER]
    with pytest.raises(ValueError, match="outputs"):
        label_outputs(task, examples, outputs[:2])


def test_one_generate_call_over_all_variants(task, groups, monkeypatch):
    planned = [[MEM, GEN, OTHER], [GEN, GEN, GEN], [MEM, OTHER, GEN],
               [OTHER, OTHER, OTHER], [MEM, MEM, MEM], [GEN, MEM, MEM]]
    flat_outputs = [_answer(ex, b) for g, bs in zip(groups, planned, strict=True)
                    for ex, b in zip(g, bs, strict=True)]
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, num_beams):
        calls.append((list(prompts), max_new_tokens, batch_size, num_beams))
        return list(flat_outputs)

    monkeypatch.setattr(behavior.generation, "generate", fake_generate)
    labelled = label_perturbation_groups(None, None, task, groups, max_new_tokens=5,
                                         batch_size=4, num_beams=5)
    assert len(calls) == 1
    assert calls[0] == ([ex.prompt for g in groups for ex in g], 5, 4, 5)
    assert labelled.groups == groups
    assert labelled.outputs[2] == flat_outputs[6:9]
    assert labelled.labels == planned
    assert labelled.counts() == {"n_examples": 6, "n_variants": 18, "n_mem": 7, "n_gen": 6,
                                 "n_other": 5}


def test_real_model_labels_every_variant(task, groups):
    tokenizer = char_tokenizer(task.memorized_tokens)
    model = tiny_gpt2(len(tokenizer))
    labelled = label_perturbation_groups(model, tokenizer, task, groups[:3], max_new_tokens=3,
                                         batch_size=9, num_beams=2)
    flat = [ex.prompt for g in groups[:3] for ex in g]
    expected = generation.generate(model, tokenizer, flat, max_new_tokens=3, batch_size=9,
                                   num_beams=2)
    assert [o for g in labelled.outputs for o in g] == expected
    assert all(b in (MEM, GEN, OTHER) for g in labelled.labels for b in g)
    assert labelled.counts()["n_variants"] == 9


def test_pairs_are_exactly_the_mem_gen_flips(groups):
    labels = [[MEM, GEN, OTHER], [GEN, GEN, GEN], [OTHER, MEM, OTHER],
              [GEN, OTHER, MEM], [MEM, MEM, GEN], [OTHER, GEN, OTHER]]
    labelled = _labelled(groups, labels)
    pairs = find_pairs(labelled)
    assert pairs == [Pair(0, 0, 1), Pair(3, 0, 2), Pair(4, 0, 2), Pair(4, 1, 2)]
    for p in pairs:
        assert {labels[p.group][p.i], labels[p.group][p.j]} == {MEM, GEN}
    expected = sum(g.count(MEM) * g.count(GEN) for g in labels)
    assert len(pairs) == expected

    examples, y = pair_items(labelled, pairs)
    assert examples == [groups[0][0], groups[0][1], groups[3][0], groups[3][2], groups[4][0],
                        groups[4][2], groups[4][1]]
    assert y == [1, 0, 0, 1, 1, 0, 1]


def _many_pairs(n_groups: int = 20) -> list[Pair]:
    return [Pair(g, 0, j) for g in range(n_groups) for j in (1, 2) if (g + j) % 3]


def test_split_is_disjoint_by_example_and_deterministic():
    pairs = _many_pairs()
    selection, evaluation = split_pairs(pairs, selection_fraction=0.3, seed=7)
    sel_groups, eval_groups = {p.group for p in selection}, {p.group for p in evaluation}
    assert sel_groups and eval_groups and not sel_groups & eval_groups
    assert sorted(selection + evaluation) == sorted(pairs)
    assert len(sel_groups) == 6
    assert split_pairs(pairs, 0.3, seed=7) == (selection, evaluation)
    assert any(split_pairs(pairs, 0.3, seed=s)[0] != selection for s in range(8, 12))


def test_split_errors():
    with pytest.raises(ValueError, match="at least 2 conflict examples"):
        split_pairs([Pair(4, 0, 1), Pair(4, 1, 2)], 0.5, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        split_pairs([], 0.5, seed=0)
    with pytest.raises(ValueError, match="selection_fraction"):
        split_pairs(_many_pairs(), 1.0, seed=0)
    two = [Pair(0, 0, 1), Pair(1, 0, 1)]
    for fraction in (0.01, 0.99):  # both sides always get an example
        selection, evaluation = split_pairs(two, fraction, seed=0)
        assert len(selection) == len(evaluation) == 1


def test_pair_items_rejects_other(groups):
    labelled = _labelled(groups, [[MEM, OTHER, GEN]] + [[GEN] * 3] * 5)
    with pytest.raises(ValueError, match="OTHER"):
        pair_items(labelled, [Pair(0, 0, 1)])
