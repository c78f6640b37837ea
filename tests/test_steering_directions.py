"""Steering each direction at its own tuned cell (``analysis.steering.tune_per_direction``):
the per-direction pick by hand, one-direction evaluation equal to that half of a full one, and
the merged result's cells and metrics."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from memgen.analysis.generation import generate
from memgen.analysis.settings import Decoding, Subject
from memgen.analysis.steering.controls import shuffled_control
from memgen.analysis.steering.evaluation import (
    evaluate_steering,
    merge_directions,
    summary_metrics,
)
from memgen.analysis.steering.tuning import best_cell, best_cells, direction_scores, grid_scores
from tests.helpers_steering import (
    PROMPTS,
    FirstCharTask,
    char_tokenizer,
    clean_examples,
    labelled_examples,
    one_thread,  # noqa: F401 - an autouse fixture
    selection,
    tiny_gpt2,
)

TOK = char_tokenizer()
SEL = selection(["resid.1", "resid.2", "mlp.1"], [0, 5, 7], [3.0, -2.0, 4.0])


def cell_rows(top, k, alpha, gen, mem, ctl_gen, ctl_mem, drop_gen, drop_mem):
    def row(method, direction, success, drop):
        return {"top": top, "k": k, "alpha": alpha, "method": method, "direction": direction,
                "success": success, "clean_acc_drop": drop}

    return [row("selected", "to_gen", gen, drop_gen), row("selected", "to_mem", mem, drop_mem),
            row("control_random", "to_gen", ctl_gen, math.nan),
            row("control_random", "to_mem", ctl_mem, math.nan)]


GRID = pd.DataFrame(cell_rows(0.05, 5, 1.0, 0.9, 0.6, 0.1, 0.0, 0.0, 0.02)
                    + cell_rows(0.05, 5, 3.0, 0.9, 0.9, 0.1, 0.5, 0.0, 0.1)
                    + cell_rows(0.1, 10, 1.0, 0.8, 0.7, 0.0, 0.05, -0.01, 0.0)
                    + cell_rows(0.1, 10, 3.0, 0.7, 0.8, 0.05, 0.0, 0.0, 0.0))


def test_each_direction_picks_its_own_cell_within_its_own_budget():
    scores = direction_scores(GRID).set_index(["top", "alpha", "direction"])
    assert scores.loc[(0.05, 3.0, "to_mem"), "score"] == pytest.approx(0.9 - 0.5 - 0.1)
    assert scores.loc[(0.05, 3.0, "to_gen"), "score"] == pytest.approx(0.9 - 0.1)  # its control
    assert scores.loc[(0.1, 1.0, "to_gen"), "score"] == pytest.approx(0.8)  # a gain is no bonus
    cells = best_cells(direction_scores(GRID), max_control=0.1, max_clean_drop=0.02)
    # toward GEN: 0.9 at (0.05, 1) and (0.05, 3), both within: the smaller alpha
    assert (cells["to_gen"]["top"], cells["to_gen"]["alpha"], cells["to_gen"]["k"]) == (
        0.05, 1.0, 5)
    # toward MEM: (0.05, 3)'s 0.9 has a 0.5 control; 0.8 at (0.1, 3) is the best within
    assert (cells["to_mem"]["top"], cells["to_mem"]["alpha"]) == (0.1, 3.0)
    joint = best_cell(grid_scores(GRID), max_control=0.1, max_clean_drop=0.02)
    assert (joint["top"], joint["alpha"]) == (0.1, 1.0)  # one cell: 0.8 / 0.7
    # a zero budget: only cells with no control success and no drop qualify
    tight = best_cells(direction_scores(GRID), max_control=0.0, max_clean_drop=0.0)
    assert (tight["to_gen"]["top"], tight["to_gen"]["alpha"]) == (0.1, 1.0)  # 0.8, a gain
    assert (tight["to_mem"]["top"], tight["to_mem"]["alpha"]) == (0.1, 3.0)
    # none within (a negative budget): each direction's best score, ties to the smaller alpha
    # then the fewer neurons
    none = best_cells(direction_scores(GRID), max_control=-1.0, max_clean_drop=-1.0)
    assert (none["to_gen"]["top"], none["to_gen"]["alpha"]) == (0.05, 1.0)  # 0.8 three ways
    assert (none["to_mem"]["top"], none["to_mem"]["alpha"]) == (0.1, 3.0)  # 0.8


@pytest.fixture(scope="module")
def steered_setup():
    gpt2 = tiny_gpt2(len(TOK))
    firsts = [out[:1] or "#" for out in generate(gpt2, TOK, PROMPTS, 4)]
    task = FirstCharTask()
    examples = labelled_examples(firsts)
    labels = [task.classify(ex, out) for ex, out in
              zip(examples, generate(gpt2, TOK, PROMPTS, 4), strict=True)]
    subject = Subject(gpt2, TOK, task)
    return subject, examples, labels, clean_examples(firsts)


def test_one_direction_is_that_half_of_a_full_evaluation(steered_setup):
    subject, examples, labels, clean = steered_setup
    decoding = Decoding(max_new_tokens=4, batch_size=4)
    controls = {"shuffled": shuffled_control(SEL, 0)}
    full = evaluate_steering(subject, examples, labels, SEL, 3.0, controls, decoding=decoding,
                             clean_examples=clean)
    half = evaluate_steering(subject, examples, labels, SEL, 3.0, controls, decoding=decoding,
                             clean_examples=clean, directions=("to_mem",))
    assert set(half.selected) == {"to_mem"} and set(half.side) == {"to_mem"}
    assert half.selected["to_mem"] == full.selected["to_mem"]
    assert half.controls["shuffled"] == {"to_mem": full.controls["shuffled"]["to_mem"]}
    assert half.side["to_mem"] == full.side["to_mem"]
    assert set(half.items["direction"]) == {"to_mem"}
    assert len(half.items) == (full.items["direction"] == "to_mem").sum()
    with pytest.raises(ValueError, match="directions"):
        evaluate_steering(subject, examples, labels, SEL, 3.0, decoding=decoding,
                          directions=("sideways",))


def test_merged_directions_keep_each_cell_and_report_it(steered_setup):
    subject, examples, labels, clean = steered_setup
    decoding = Decoding(max_new_tokens=4, batch_size=4)
    controls = {"shuffled": shuffled_control(SEL, 0)}
    small = selection(["resid.1"], [0], [3.0])
    to_gen = evaluate_steering(subject, examples, labels, SEL, 1.0, controls, decoding=decoding,
                               clean_examples=clean, directions=("to_gen",))
    to_mem = evaluate_steering(subject, examples, labels, small, 5.0,
                               {"shuffled": shuffled_control(small, 0)}, decoding=decoding,
                               clean_examples=clean, directions=("to_mem",))
    merged = merge_directions({"to_gen": to_gen, "to_mem": to_mem})
    assert merged.cell("to_gen") == (3, 1.0) and merged.cell("to_mem") == (1, 5.0)
    assert merged.selected == {"to_gen": to_gen.selected["to_gen"],
                               "to_mem": to_mem.selected["to_mem"]}
    assert merged.controls["shuffled"] == {"to_gen": to_gen.controls["shuffled"]["to_gen"],
                                           "to_mem": to_mem.controls["shuffled"]["to_mem"]}
    assert set(merged.side) == {"to_gen", "to_mem"}
    assert len(merged.items) == len(to_gen.items) + len(to_mem.items)
    metrics = summary_metrics(merged)
    assert (metrics["steer/to_gen/k"], metrics["steer/to_gen/alpha"]) == (3.0, 1.0)
    assert (metrics["steer/to_mem/k"], metrics["steer/to_mem/alpha"]) == (1.0, 5.0)
    assert metrics["steer/min_success"] == min(t.success for t in merged.selected.values())
    # one cell for both: each direction reports the result's own (k, alpha)
    assert to_gen.cell("to_gen") == (3, 1.0) and to_gen.cells == {}
