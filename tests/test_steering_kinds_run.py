"""Kinds end to end on the session's trained model (no extra training): the pruned tuning on the
selection split, one evaluation per candidate, kinds.csv rows, per-kind metrics, the ceiling."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from memgen.analysis.settings import Subject
from memgen.config.adapter import settings_from_config

pytestmark = pytest.mark.slow


def _subject_and_settings(trained_run):
    trained = trained_run["objects"]["trained"]
    return (Subject(trained.model, trained.tokenizer, trained.task),
            settings_from_config(trained_run["cfg"]))


def test_kinds_are_tuned_on_selection_and_reported_on_evaluation(trained_run, tmp_path):
    from memgen.analysis.stages import analyse_model

    subject, settings = _subject_and_settings(trained_run)
    steering = dataclasses.replace(
        settings.steering, tune_kinds=("add", "set_mean", "interchange", "ablate"),
        tune_positions=("last_prompt", "prompt"), tune_sites=("mlp",), tune_keep=2,
        tune_top_fraction=(0.05, 0.1), tune_alpha=(3.0,))
    result = analyse_model(subject, settings.with_steering(steering),
                           stages=("neurons", "steering"))
    kinds = result.kinds
    scores = kinds.tuning.scores
    screened = scores[scores["stage"] == "screen"]
    assert len(screened) == 8  # every kind x positions once
    # each direction's own numbers are kept: the joint ones are their min / max
    two = scores[scores["kind"] != "ablate"]
    assert (two["min_success"] == two[["to_gen_success", "to_mem_success"]].min(axis=1)).all()
    assert (two["max_control_success"] == two[["to_gen_max_control_success",
                                               "to_mem_max_control_success"]].max(axis=1)).all()
    refined = scores[scores["stage"] == "refine"]
    assert len({(r.kind, r.positions) for r in refined.itertuples()}) <= 2
    table = kinds.table
    assert len({(r.kind, r.positions) for r in table.itertuples()}) == 8
    assert set(table.loc[table["kind"] == "ablate", "direction"]) == {"to_gen"}
    assert set(table.loc[table["kind"] == "interchange", "strongest_control"]) == {
        "random_source"}
    assert table["margin_shift"].notna().all() and table["wrong_way"].between(0, 1).all()
    assert result.steering is kinds.result and kinds.pick == kinds.tuning.candidate
    m = result.metrics
    # each direction steered with its own pick (tune_per_direction): the run's result for it
    # is that candidate's kinds.csv row, at that direction's own tuned cell
    assert set(kinds.picks) == {"to_gen", "to_mem"}
    for d, cand in kinds.picks.items():
        row = table[table["steered"] & (table["direction"] == d)]
        assert len(row) == 1
        assert tuple(row[["kind", "positions", "sites"]].iloc[0]) == cand
        assert row["success"].iloc[0] == result.steering.selected[d].success
        assert m[f"steer/tuned/{d}/alpha"] == row["alpha"].iloc[0] == result.steering.cell(d)[1]
        # which budget binds: relaxing a budget never lowers the best selection-split success
        free = m[f"steer/budget/{d}/unbounded"]
        for budget in ("within", "control_only", "drop_only"):
            value = m[f"steer/budget/{d}/{budget}"]
            assert math.isnan(value) or value <= free
    # logged: each direction's pick as a tag, and the kinds table with its steered rows
    from mlflow.tracking import MlflowClient

    from memgen.reporting.report import log_analysis
    from memgen.tracking.run import tracked_run

    cfg = trained_run["cfg"]
    with tracked_run(cfg, "analyse", run_name="kinds-logged") as run:
        log_analysis(run, result)
    client = MlflowClient(cfg.tracking.uri)
    tags = client.get_run(run.run_id).data.tags
    assert {tags[f"memgen.steered.{d}"] for d in kinds.picks} == {
        "/".join(c) for c in kinds.picks.values()}
    logged = pd.read_csv(client.download_artifacts(run.run_id, "steering/kinds.csv",
                                                   str(tmp_path)))
    assert logged["steered"].sum() == len(kinds.picks)
    assert "steer/kind/set_mean/prompt/to_mem/success" in m
    assert "steer/kind/ablate/last_prompt/to_gen/max_control_success" in m
    assert 0 <= m["steer/ceiling/to_mem/reachable"] <= 1
    assert m["steer/ceiling/to_mem/n"] == len(kinds.ceiling) > 0
    # interchange is scored on items with a counterpart only (both directions together)
    inter = table[(table["kind"] == "interchange") & (table["positions"] == "prompt")]
    assert 0 < inter["n"].sum() <= len(result.behaviors.evaluation.items)


def test_default_picks_mlp_or_resid_per_direction(trained_run):
    """The default's candidates are add on the MLP and add on resid at the last prompt token;
    both are scored on the evaluation split and each direction steers with one of them."""
    from memgen.analysis.stages import analyse_model

    subject, settings = _subject_and_settings(trained_run)
    assert settings.steering.tune_sites == ("mlp", "resid")
    result = analyse_model(subject, settings, stages=("neurons", "steering"))
    assert result.tuning is None and result.kinds.tuning is not None
    rows = result.kinds.table
    assert set(rows["kind"]) == {"add:mlp", "add:resid"}
    assert set(rows["positions"]) == {"last_prompt"}
    picked = rows[rows["steered"]]
    assert sorted(picked["direction"]) == ["to_gen", "to_mem"]
    for row in picked.itertuples():
        assert math.isclose(row.success, result.steering.selected[row.direction].success)


def test_one_site_spec_stays_todays_steering_and_adds_margins(trained_run):
    import dataclasses

    from memgen.analysis.stages import analyse_model

    subject, settings = _subject_and_settings(trained_run)
    settings = settings.with_steering(dataclasses.replace(settings.steering, tune_sites=()))
    result = analyse_model(subject, settings, stages=("neurons", "steering"))
    assert result.tuning is not None and result.kinds.tuning is None  # today's path
    rows = result.kinds.table
    assert list(rows["kind"].unique()) == ["add"]
    assert rows["positions"].iloc[0] == ("last_prompt" if settings.steering.last_prompt_only
                                         else "every_pass")
    for d in ("to_gen", "to_mem"):
        assert math.isclose(rows.loc[rows["direction"] == d, "success"].iloc[0],
                            result.steering.selected[d].success)
    assert result.steering.items["margin_before"].notna().any()


def _same(a: dict, b: dict) -> None:
    keep = [k for k in a if not k.startswith(("time/", "steering/tf_"))]
    assert sorted(keep) == sorted(k for k in b if not k.startswith(("time/", "steering/tf_")))
    for key in keep:
        assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key])), key


def test_forced_labels_change_no_result_on_the_trained_model(trained_run):
    """analysis.steering.forced_labels on and off: the same tuned cell, grid, items and
    metrics, for the default (legacy) path and for every kind x position."""
    from memgen.analysis.stages import analyse_model

    subject, settings = _subject_and_settings(trained_run)
    kinds = dataclasses.replace(
        settings.steering, tune_kinds=("add", "add_scaled", "set_mean", "interchange",
                                       "ablate"),
        tune_positions=("last_prompt", "every_pass", "prompt", "all"), tune_keep=1,
        tune_top_fraction=(0.05,), tune_alpha=(3.0, 9.0))
    for steering in (settings.steering, kinds):
        results = []
        for forced in (False, True):
            s = settings.with_steering(dataclasses.replace(steering, forced_labels=forced))
            results.append(analyse_model(subject, s, stages=("neurons", "steering", "grid")))
        off, on = results
        _same(off.metrics, on.metrics)
        assert on.metrics["steering/tf_items"] > 0 and "steering/tf_items" not in off.metrics
        assert on.steering.items.equals(off.steering.items)
        assert on.grid.equals(off.grid)
        if off.tuning is not None:
            assert on.tuning.scores.equals(off.tuning.scores)
        if off.kinds.tuning is not None:
            assert on.kinds.tuning.scores.equals(off.kinds.tuning.scores)
            assert on.kinds.table.equals(off.kinds.table)
