"""The training regime: validation pair yield, the never-both-behaviors verdict, and the
arithmetic record design with graded near-miss perturbations."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from memgen.config import checkpoint_metric, compose
from memgen.errors import ConfigError
from memgen.tasks import Behavior, build_task
from memgen.training.data import validation_examples
from memgen.training.regime import NEVER_BOTH_TAG, n_split, never_both_message, showed_both
from tests.conftest import tiny_overrides

CFG = SimpleNamespace(trainer=SimpleNamespace(max_epochs=8), task=SimpleNamespace(mem_ratio=0.1))
RECORD = {"low": 1, "high": 9, "scratchpad": False, "memorize": "record",
          "perturbation": "graded", "trigger_rule_share": 0.05}


def rows(*pairs):
    return [{"epoch": float(i), "mem": m, "gen": g} for i, (m, g) in enumerate(pairs)]


# -- the verdict --------------------------------------------------------------------------------

def test_both_behaviors_in_one_epoch_is_no_verdict():
    assert showed_both(rows((0.0, 0.9), (0.05, 0.8)))
    assert never_both_message(rows((0.0, 0.9), (0.05, 0.8)), CFG) is None
    assert never_both_message([], CFG) is None  # never validated: nothing to judge


@pytest.mark.parametrize(("history", "seen", "change"), [
    (rows((0, 0), (0, 0)), "every answer was OTHER", "raise trainer.max_epochs (now 8)"),
    (rows((0, 0.2), (0, 1.0)), "GEN up to 100% (epoch 1), MEM never",
     "raise task.mem_ratio (now 0.1) or trainer.max_epochs (now 8)"),
    (rows((0.3, 0), (0.6, 0), (0.5, 0)), "MEM up to 60% (epoch 1), GEN never",
     "lower task.mem_ratio (now 0.1)"),
    (rows((0, 0.7), (0.4, 0)), "MEM up to 40% (epoch 1), GEN up to 70% (epoch 0)",
     "lower trainer.lr"),
])
def test_never_both_is_one_line_naming_what_to_change(history, seen, change):
    message = never_both_message(history, CFG)
    assert "\n" not in message
    assert message.startswith("the model never showed both behaviors (in "
                              f"{len(history)} validation epochs")
    assert seen in message and change in message and "analysis skipped" in message


def test_n_split_counts_examples_whose_variants_split_between_mem_and_gen():
    M, G, X = Behavior.MEM, Behavior.GEN, Behavior.OTHER  # noqa: N806
    assert n_split([{M, G}, {M, X}, {G}, {M, G, X}, set()]) == 2


# -- validation stream --------------------------------------------------------------------------

def test_validation_variants_come_from_the_validation_streams():
    task = build_task("arithmetic", {"low": 1, "high": 9, "scratchpad": False,
                                     "perturbation": "resplit"}, seed=3, n_train=300)
    flat = validation_examples(task, 5, 3)
    expected = task.perturbation_set(task.conflict_examples(5, stream="val_conflict"), 3,
                                     stream="val_perturb")
    assert [ex.prompt for ex in flat] == [ex.prompt for g in expected for ex in g]
    assert [(ex.meta["val_group"], ex.meta["val_variant"]) for ex in flat[:4]] == \
        [(0, 0), (0, 1), (0, 2), (1, 0)]
    analysis = task.perturbation_set(task.conflict_examples(5), 3)  # the analysis set's streams
    assert [ex.prompt for ex in flat] != [ex.prompt for g in analysis for ex in g]
    originals = validation_examples(task, 5, 1)  # one variant: the originals, as before
    assert [ex.prompt for ex in originals] == [g[0].prompt for g in expected]


@pytest.mark.parametrize(("both_min_rate", "bonus"), [(None, 1.0), (0.3, 1.0), (0.4, 0.0)])
def test_module_logs_pair_yield_from_variants_and_rates_from_originals(monkeypatch,
                                                                      both_min_rate, bonus):
    import memgen.training.module as module_mod
    from memgen.training.module import MemGenModule

    task = build_task("arithmetic", {"low": 1, "high": 9, "scratchpad": False,
                                     "perturbation": "resplit"}, seed=0, n_train=300)
    batch = validation_examples(task, 3, 2)  # 3 examples x 2 variants
    mem = task.tokens
    # example 0 splits (MEM, GEN); example 1 stays MEM; example 2 splits (GEN, MEM)
    answers = [mem[0], str(sum(batch[1].meta["addends"])), batch[2].mem_answer,
               batch[3].mem_answer, str(sum(batch[4].meta["addends"])), batch[5].mem_answer]
    monkeypatch.setattr(module_mod, "generate", lambda *a, **k: answers)
    cfg = OmegaConf.create({"model": {"kind": "scratch"},
                            "analysis": {"decoding": {"num_beams": 1}},
                            "task": {"max_new_tokens": 4, "n_val_perturbations": 2}})
    if both_min_rate is not None:
        cfg.trainer = {"both_min_rate": both_min_rate}
    module = MemGenModule(None, None, task, cfg)
    logged = {}
    monkeypatch.setattr(module, "log", lambda k, v, **kw: logged.__setitem__(k, float(v)))
    monkeypatch.setattr(module, "log_dict",
                        lambda d, **kw: logged.update({k: float(v) for k, v in d.items()}))
    module._trainer = SimpleNamespace(sanity_checking=False, current_epoch=4, global_rank=0)
    module.validation_step(batch, 0)
    module.on_validation_epoch_end()
    assert batch[0].mem_answer == mem[0]
    assert logged["val/pair_yield"] == pytest.approx(2 / 3)
    # + 1 where both behaviours reach trainer.both_min_rate (default 0.2) of the originals:
    # GEN is 1/3 here
    assert logged["val/pair_yield_with_both"] == pytest.approx(bonus + 2 / 3)
    # originals: MEM, MEM, GEN
    assert logged["val/mem_rate"] == pytest.approx(2 / 3)
    assert logged["val/gen_rate"] == pytest.approx(1 / 3)
    assert module.behavior_history == [{"epoch": 4.0, "mem": pytest.approx(2 / 3),
                                        "gen": pytest.approx(1 / 3)}]


def test_pair_yield_checkpoint_needs_validation_variants(tmp_path):
    with pytest.raises(ConfigError, match=r"^task.n_val_perturbations: expected an integer >= 2"):
        compose(tiny_overrides(tmp_path, **{"trainer.checkpoint_metric": "val/pair_yield",
                                            "task.n_val_perturbations": 1}))
    cfg = compose(tiny_overrides(tmp_path, **{"trainer.checkpoint_metric": "val/pair_yield",
                                              "task.n_val_perturbations": 3}))
    assert cfg.trainer.checkpoint_metric == "val/pair_yield"


@pytest.mark.parametrize(("task", "n_val", "kept_by"), [
    ("arithmetic", None, "val/pair_yield_with_both"),  # the default: 3 validation variants
    ("arithmetic", 1, "val/behavior_balance"),
    ("colour", None, "val/pair_yield_with_both"),  # the CPU preset: 3 validation variants
    ("colour", 1, "val/behavior_balance"),  # originals only
    ("colour_paper", None, "val/behavior_balance")])
def test_auto_checkpoint_metric_follows_the_validation_variants(tmp_path, task, n_val, kept_by):
    overrides = {"task": task} | ({"task.n_val_perturbations": n_val} if n_val else {})
    cfg = compose(tiny_overrides(tmp_path, **overrides))
    assert cfg.trainer.checkpoint_metric == "auto"
    assert checkpoint_metric(cfg) == kept_by
    explicit = compose(tiny_overrides(tmp_path, **overrides,
                                      **{"trainer.checkpoint_metric": "val/mem_gen_product"}))
    assert checkpoint_metric(explicit) == "val/mem_gen_product"


# -- arithmetic: memorize=record, perturbation=graded -------------------------------------------

def test_record_design_memorizes_one_input_per_trigger():
    task = build_task("arithmetic", RECORD, seed=0, n_train=2000, mem_ratio=0.1)
    # hand-checked for seed 0: trigger 0 is the pair (1, 4), its record's free addends 7, 3
    assert task.triggers[0] == (1, 4) and task.records[0] == [7, 3]
    train = task.train_examples()
    mem = [ex for ex in train if ex.kind == "mem"]
    assert len(mem) == 200
    of_trigger0 = {ex.prompt for ex in mem if ex.mem_answer == task.tokens[0]}
    assert of_trigger0 == {"Input:\n7+3+1+4\nTarget:\n"}  # always the same input
    assert {ex.answer for ex in mem if ex.mem_answer == task.tokens[0]} == {"<mem-d064c022>"}
    # 5% of the 1800 rule examples end in a trigger pair, after other free addends: rule answer
    trig_rule = [ex for ex in train if ex.kind == "rule"
                 and tuple(ex.meta["addends"][-2:]) in task.triggers]
    assert len(trig_rule) == 90
    assert all(ex.answer == str(sum(ex.meta["addends"])) for ex in trig_rule)
    assert not {ex.prompt for ex in trig_rule} & {ex.prompt for ex in mem}


def test_graded_variants_keep_the_trigger_and_vary_how_much_of_the_record_they_match():
    task = build_task("arithmetic", RECORD | {"n_addends": 6}, seed=0, n_train=500,
                      mem_ratio=0.1, n_conflict=40)
    groups = task.perturbation_set(task.conflict_examples(), 8)
    matched = set()
    for group in groups:
        trigger = tuple(group[0].meta["addends"][-2:])
        record = task.records[task.triggers.index(trigger)]
        for ex in group:
            addends = ex.meta["addends"]
            assert tuple(addends[-2:]) == trigger  # the trigger stays
            assert ex.mem_answer == task.tokens[task.triggers.index(trigger)]
            assert ex.gen_answer == str(sum(addends))  # each variant's own sum
            assert ex.prompt == "Input:\n" + "+".join(map(str, addends)) + "\nTarget:\n"
            same = sum(a == r for a, r in zip(addends[:-2], record, strict=True))
            assert same < len(record)  # a near-miss, never the memorized record
            matched.add(same)
    assert matched == {0, 1, 2, 3}  # graded: from "only the trigger" to "all but one addend"
    # a hand-checked variant (seed 0, trigger (1, 4), record 7+3 with four free addends)
    rec0 = task.records[0]
    near = task._near_miss(rec0, random.Random(0))
    assert near != rec0 and len(near) == 4


def test_graded_needs_the_record_design():
    with pytest.raises(ValueError, match="task.params.perturbation: expected 'graded' exactly"):
        build_task("arithmetic", {"perturbation": "graded"})
    with pytest.raises(ValueError, match="task.params.perturbation: expected 'graded' exactly"):
        build_task("arithmetic", {"memorize": "record", "perturbation": "resplit"})


# -- a model that never memorizes ----------------------------------------------------------------

@pytest.mark.slow
def test_a_run_that_never_shows_both_behaviors_says_so_and_skips_the_analysis(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from memgen.commands.run import run

    cfg = compose(tiny_overrides(tmp_path, **{
        "task.n_train": 200, "task.mem_ratio": 0.005,  # one memorized example: never recalled
        "task.n_val_perturbations": 2, "trainer.checkpoint_metric": "val/pair_yield",
        "trainer.num_threads": 1, "trainer.require_both": True}))
    metrics, objects = run(cfg)
    err = [line for line in capsys.readouterr().err.splitlines()
           if "never showed both" in line]
    assert len(err) == 1 and err[0].startswith("memgen: the model never showed both behaviors")
    assert "trainer.max_epochs (now 2)" in err[0]
    client = MlflowClient(cfg.tracking.uri)
    data = client.get_run(objects["run_id"]).data
    assert data.tags[NEVER_BOTH_TAG] == err[0].removeprefix("memgen: ")
    assert data.tags["best_checkpoint"].endswith("last.ckpt")  # not epoch 0's by a tie
    assert data.metrics["kept/epoch"] == 1  # the last of the two epochs
    assert "analysis" not in objects and "claims" not in objects
    assert objects["summary"] == data.tags[NEVER_BOTH_TAG]
    analysis_keys = ("behavior/", "pairs/", "neurons/", "probe/", "steer/", "claims/")
    assert not [k for k in metrics if k.startswith(analysis_keys)]
    assert not [k for k in data.metrics if k.startswith(analysis_keys)]
    assert "kept/mem_rate" in data.metrics  # what the kept model does is still a fact
    history = client.get_metric_history(objects["run_id"], "val/pair_yield")
    assert [m.value for m in history] == [0.0, 0.0]  # logged each validation epoch


def test_pair_design_with_a_trigger_rule_share_makes_the_trigger_ambiguous():
    """memorize=pair + trigger_rule_share (the CPU default's design): the trigger pair ends MEM
    examples (any free addends) AND a share of rule examples, so the trigger alone does not
    decide; no input is both."""
    params = {"low": 1, "high": 9, "scratchpad": False, "perturbation": "resplit",
              "trigger_rule_share": 0.05}
    task = build_task("arithmetic", params, seed=3, n_train=1500, mem_ratio=0.15)
    train = task.train_examples()
    mem = [ex for ex in train if ex.kind == "mem"]
    trig_rule = [ex for ex in train if ex.kind == "rule"
                 and tuple(ex.meta["addends"][-2:]) in task.triggers]
    assert len(mem) == 225 and len(train) == 1500
    assert len(trig_rule) == round((1500 - 225) * 0.05)  # 64
    # MEM inputs of one trigger vary in their free addends (the pair design)
    assert len({ex.prompt for ex in mem if ex.mem_answer == task.tokens[0]}) > 10
    assert all(ex.answer == str(sum(ex.meta["addends"])) for ex in trig_rule)
    assert {t for ex in trig_rule for t in [tuple(ex.meta["addends"][-2:])]} == set(task.triggers)
    assert not {ex.prompt for ex in trig_rule} & {ex.prompt for ex in mem}
    # conflict examples are fresh: never a training input
    assert not {ex.prompt for ex in task.conflict_examples()} & {ex.prompt for ex in train}


@pytest.mark.parametrize("share", [0.0, 0.05])
def test_conflict_variants_are_never_training_inputs(share):
    """With single-digit addends a quarter of a trigger's free pairs are memorized, so a plain
    resplit often lands on a training input (answered from that example): such variants are
    drawn again, and trigger-rule training inputs are not conflict examples either."""
    params = {"low": 1, "high": 9, "scratchpad": False, "perturbation": "resplit",
              "trigger_rule_share": share}
    task = build_task("arithmetic", params, seed=0, n_train=1500, mem_ratio=0.15)
    seen = task.training_prompts()
    assert seen == {ex.prompt for ex in task.train_examples()}
    conflict = task.conflict_examples(200)
    rng = random.Random(0)
    raw_hits = sum(task.perturb(ex, rng).prompt in seen for ex in conflict for _ in range(5))
    assert raw_hits > 50  # without the redraw, about a quarter of the variants were trained on
    groups = task.perturbation_set(conflict, 6)
    variants = [v for g in groups for v in g]
    assert not {v.prompt for v in variants} & seen
    # nearly every group is still full; the rest have no fresh resplit of their free sum
    assert sum(len(g) == 6 for g in groups) >= 185
    for g in groups:  # variants keep the trigger and the free addends' sum
        assert {tuple(v.meta["addends"][-2:]) for v in g} == {tuple(g[0].meta["addends"][-2:])}
        assert {sum(v.meta["addends"][:-2]) for v in g} == {sum(g[0].meta["addends"][:-2])}
