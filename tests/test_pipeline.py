"""``memgen run`` end to end: every stage logs into one MLflow run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from memgen.analysis.settings import AnalysisSettings, Subject
from memgen.config.adapter import settings_from_config


def _subject_and_settings(trained_run) -> tuple[Subject, AnalysisSettings]:
    trained = trained_run["objects"]["trained"]
    return (Subject(trained.model, trained.tokenizer, trained.task),
            settings_from_config(trained_run["cfg"]))

pytestmark = pytest.mark.slow


def test_kept_checkpoint_shows_both_behaviors(trained_run):
    m = trained_run["metrics"]
    assert m["kept/mem_rate"] > 0 and m["kept/gen_rate"] > 0
    assert m["pairs/n"] >= 4


def test_run_logs_every_stage_to_mlflow(trained_run):
    cfg, run_id = trained_run["cfg"], trained_run["objects"]["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for key in ("val/behavior_balance", "pairs/n", "neurons/max_abs_r/resid.1",
                "neurons/mean_abs_nmd/mlp.1", "probe/acc/resid.1", "probe/best_acc",
                "probe/lens_acc/resid.1", "probe/lens/best_acc", "probe/lens/distinct_share",
                "probe/baseline/majority_acc", "probe/baseline/shuffled_acc",
                "steer/to_gen/success", "steer/to_mem/success",
                "steer/to_gen/control_random/success", "steer/to_mem/control_low_r/success",
                "steer/to_gen/control_shuffled/success", "side/clean_acc_drop", "side/kl",
                "consistency/intra/jaccard", "consistency/intra/p_value",
                "consistency/intra/base_vs_perturb_seed1/jaccard",
                "consistency/intra/base_vs_perturb_seed1/p_value",
                "consistency/intra/transfer/to_gen/success",
                "consistency/intra/transfer/to_mem/control_random/success",
                "steer/tuned/alpha", "steer/tuned/top_fraction", "steer/min_success",
                "steer/max_control_success"):
        assert key in metrics, key
    assert not any(k.startswith("neurons/") and k.count("/") > 2 for k in metrics)
    assert "probe/best_site" in run.data.tags

    def paths(prefix: str = "") -> set[str]:
        return {a.path for a in client.list_artifacts(run_id, prefix or None)}

    assert {"config.yaml", "model", "checkpoints", "neurons", "probes", "steering",
            "consistency", "behavior"} <= paths()
    assert {"neurons/neurons.parquet", "neurons/abs_r_heatmap.png"} <= paths("neurons")
    # the default tunes over candidates (add on mlp or on resid, per direction): kinds tables
    assert {"steering/grid.csv", "steering/success_vs_alpha.png",
            "steering/kinds.csv", "steering/kinds_tuning.csv"} <= paths("steering")
    assert metrics["steer/tuned/alpha"] in cfg.analysis.steering.tune_alpha
    assert metrics["steer/tuned/top_fraction"] in cfg.analysis.steering.tune_top_fraction
    # tune_per_direction (the default): each direction steered at its own tuned cell
    for direction in ("to_gen", "to_mem"):
        assert metrics[f"steer/{direction}/alpha"] == metrics[f"steer/tuned/{direction}/alpha"]
        assert metrics[f"steer/{direction}/k"] == metrics[f"steer/tuned/{direction}/k"]
    assert "steering/kinds_tuning.csv" in paths("steering")  # every scored candidate cell
    assert "probes/accuracy_by_layer.png" in paths("probes")
    assert {"consistency/intra.csv", "consistency/transfer.csv"} <= paths("consistency")


def test_neuron_table_has_every_neuron_ranked(trained_run, tmp_path):
    import pandas as pd

    cfg, run_id = trained_run["cfg"], trained_run["objects"]["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    local = client.download_artifacts(run_id, "neurons/neurons.parquet", str(tmp_path))
    table = pd.read_parquet(local)
    # 2 layers of width 64: resid.0..2 (3 x 64) + mlp.1..2 (2 x 256)
    assert len(table) == 3 * 64 + 2 * 256
    assert sorted(table["rank"]) == list(range(1, len(table) + 1))
    assert {"site", "layer", "index", "mean_mem", "mean_gen", "nmd", "r", "rank"} <= set(table)
    assert (table["nmd"] - (table["mean_mem"] - table["mean_gen"])).abs().max() < 1e-5


def test_summary_states_the_runs_pairs_neurons_probes_and_steering(trained_run):
    """The printed summary carries this run's numbers, not just its headings."""
    text = trained_run["objects"]["summary"]
    m, analysis = trained_run["metrics"], trained_run["objects"]["analysis"]
    assert (f"pairs (MEM vs GEN on perturbations of one example): {int(m['pairs/n'])} from "
            f"{int(m['pairs/n_examples_with_pairs'])} examples") in text
    top = analysis.neurons.table.iloc[0]
    assert f"of {len(analysis.neurons.table)}; selected {len(analysis.neurons.selection)}" in text
    assert any(line.split()[:3] == ["1", top["site"], str(top["index"])]
               for line in text.splitlines()), "the top-ranked neuron is listed first"
    p = analysis.probes
    assert f"best site {p.best_site}: acc {p.best_acc:.3f}" in text
    s = analysis.steering
    assert f"== steering (k={s.k}, alpha={s.alpha:g}) on the evaluation split ==" in text
    for direction, t in s.selected.items():
        if t.n:
            assert f"{direction}: success {100 * t.success:5.1f}% " in text
    assert "jaccard" in text


def test_callbacks_log_the_emergence_as_curves_by_epoch(trained_run):
    cfg, run_id = trained_run["cfg"], trained_run["objects"]["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    pair_counts = client.get_metric_history(run_id, "pairs/n")
    # every 5th validation epoch, then the kept checkpoint's analysis after the last epoch
    assert {m.step for m in pair_counts} == {4, 9, 14, 19, 20}
    final = trained_run["metrics"]["pairs/n"]
    assert client.get_run(run_id).data.metrics["pairs/n"] == final
    curve = client.get_metric_history(run_id, "neurons/max_abs_r/resid.1")
    assert len({m.step for m in curve}) >= 2  # pairs existed at some epoch during training
    for key in ("probe/best_acc", "neurons/max_abs_r"):  # during training, and the final
        history = client.get_metric_history(run_id, key)
        assert {m.step for m in history} <= {4, 9, 14, 19, 20}
        assert [m.value for m in history if m.step == 20] == [  # logged rounded to 4 digits
            pytest.approx(trained_run["metrics"][key], abs=1e-4)]
        assert len(history) >= 2


def test_transfer_steers_the_other_half_with_its_own_neurons(trained_run):
    """With selection_fraction 0.5 the halves are the selection/evaluation splits: the transfer
    steers the selection split's items (the held-out steering covers the evaluation split)."""
    m = trained_run["metrics"]
    transfer_n = (m["consistency/intra/transfer/to_gen/n"]
                  + m["consistency/intra/transfer/to_mem/n"])
    assert transfer_n == m["pairs/n_selection_items"]
    assert m["steer/to_gen/n"] + m["steer/to_mem/n"] == m["pairs/n_evaluation_items"]
    for name in ("random", "low_r", "shuffled"):
        assert f"consistency/intra/transfer/to_mem/control_{name}/success" in m


def test_analysis_is_deterministic_on_one_model(trained_run):
    from memgen.analysis.stages import analyse_model

    subject, settings = _subject_and_settings(trained_run)
    first = analyse_model(subject, settings, stages=("neurons",))
    second = analyse_model(subject, settings, stages=("neurons",))
    assert first.neurons.selection.keys() == second.neurons.selection.keys()
    assert first.neurons.selection.keys() == trained_run["objects"]["analysis"].neurons \
        .selection.keys()


def test_steering_is_tuned_on_the_selection_split_only(trained_run, monkeypatch):
    """The evaluation split is steered once per direction, at settings picked without it."""
    import dataclasses

    import memgen.analysis.stages as stages

    subject, settings = _subject_and_settings(trained_run)
    grids, steered = [], []
    real_grid, real_steer = stages.steering_grid, stages.evaluate_steering

    def grid_spy(subject, examples, *args, **kwargs):
        grids.append({ex.prompt for ex in examples})
        return real_grid(subject, examples, *args, **kwargs)

    def steer_spy(subject, examples, labels, selection, alpha, *args, **kwargs):
        steered.append(({ex.prompt for ex in examples}, alpha, len(selection)))
        return real_steer(subject, examples, labels, selection, alpha, *args, **kwargs)

    monkeypatch.setattr(stages, "steering_grid", grid_spy)
    monkeypatch.setattr(stages, "evaluate_steering", steer_spy)
    # one site spec (tune_sites=()): the (k, alpha) tuning path; the default's candidates
    # are tuned through kinds (tests/test_steering_kinds_run.py)
    settings = dataclasses.replace(settings, steering=dataclasses.replace(
        settings.steering, tune_sites=()))
    # tune_per_direction (the default): once per direction, each at its own tuned cell
    result = stages.analyse_model(subject, settings, stages=("neurons", "steering"))
    selection = {ex.prompt for ex in result.behaviors.selection.examples}
    evaluation = {ex.prompt for ex in result.behaviors.evaluation.examples}
    assert grids == [selection]
    assert [prompts == evaluation for prompts, _, _ in steered] == [True, True]
    cells = result.tuning.by_direction
    assert [(alpha, k) for _, alpha, k in steered] == [
        (cells[d]["alpha"], cells[d]["k"]) for d in ("to_gen", "to_mem")]
    assert {d: result.steering.cell(d) for d in cells} == {
        d: (cells[d]["k"], cells[d]["alpha"]) for d in cells}
    # one cell for both directions: steered once, at the joint pick
    grids.clear()
    steered.clear()
    joint = dataclasses.replace(settings, steering=dataclasses.replace(
        settings.steering, tune_per_direction=False))
    result = stages.analyse_model(subject, joint, stages=("neurons", "steering"))
    assert grids == [selection] and not result.tuning.by_direction
    assert len(steered) == 1 and steered[0][0] == evaluation
    assert steered[0][1] == result.tuning.alpha == result.steering.alpha


def test_inter_task_overlap_and_cross_steering_on_a_shared_model(trained_run):
    """Two sub-tasks on one model (the conflict examples alternate between them): the overlap
    matrix is symmetric with chance levels, and every source steers every target."""
    import dataclasses

    from memgen.analysis.stages import capture, label_behaviors, run_inter_task

    subject, settings = _subject_and_settings(trained_run)
    trained = trained_run["objects"]["trained"]
    behaviors = label_behaviors(subject, settings)
    labelled = behaviors.labelled
    # Sub-tasks built deliberately, whatever this CPU's training produced: the groups of each
    # split alternate between them. Split items come from pairs, so every group holds MEM and
    # GEN items, and each sub-task gets both behaviors on both splits.
    sub_task = {}
    for split in (behaviors.selection, behaviors.evaluation):
        groups = sorted({g for g, _ in split.items})
        assert len(groups) >= 2, "the shared model needs pairs from >= 2 examples per split"
        sub_task |= {g: ("even", "odd")[i % 2] for i, g in enumerate(groups)}
    labelled.groups = [[dataclasses.replace(ex, task=sub_task.get(g, "even")) for ex in group]
                       for g, group in enumerate(labelled.groups)]

    class TwoTasks:
        subtasks = {"even": None, "odd": None}

        def __getattr__(self, name):
            return getattr(trained.task, name)

    features = capture(subject, settings, behaviors)
    two_tasks = Subject(trained.model, trained.tokenizer, TwoTasks())
    inter, metrics = run_inter_task(two_tasks, settings, features, behaviors)
    assert list(inter.jaccard.index) == ["even", "odd"]
    assert inter.jaccard.loc["even", "odd"] == inter.jaccard.loc["odd", "even"]
    assert 0 < inter.expected.loc["even", "odd"] < 1
    assert {"consistency/inter/even_vs_odd/jaccard", "consistency/inter/even_vs_odd/p_value",
            "steer/cross/even_to_odd/to_gen/success",
            "steer/cross/odd_to_even/to_mem/success"} <= set(metrics)
    assert len(inter.cross_steering) == 2 * 2 * 2  # sources x targets x directions
    assert inter.cross_steering["n"].gt(0).all()


def test_inter_task_needs_a_mixture(trained_run):
    from memgen.analysis.stages import capture, label_behaviors, run_inter_task

    subject, settings = _subject_and_settings(trained_run)
    behaviors = label_behaviors(subject, settings)
    features = capture(subject, settings, behaviors)
    with pytest.raises(ValueError, match="task=mixture"):
        run_inter_task(subject, settings, features, behaviors)


def test_a_split_too_small_for_a_probe_skips_the_stage_not_the_run(trained_run, monkeypatch):
    """Few pairs (e.g. 3 MEM / 1 GEN in the selection split) make probes impossible: the stage
    is skipped with its reason, and the neuron results still come back."""
    from memgen.analysis import stages

    def too_small(*_args, **_kwargs):
        raise ValueError("train split too small: 3 MEM / 1 GEN, need >= 2 of each")

    monkeypatch.setattr(stages, "run_probes", too_small)
    result = stages.analyse_model(*_subject_and_settings(trained_run),
                                  stages=("neurons", "probes"))
    assert "too small" in result.skipped["probes"] and result.probes is None
    assert "neurons/max_abs_r" in result.metrics
