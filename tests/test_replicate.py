"""``memgen replicate``: parent and children, aggregates against numpy/scipy, resume, a failing
seed, parallel workers, the claims scorecard and its bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from memgen.analysis.timing import is_timing
from memgen.cli import main
from memgen.commands.replicate import replicate, split_seeds, summarise
from memgen.config import compose
from memgen.replicates.aggregate import aggregate, describe, t_interval
from memgen.replicates.claims import FAIL, NA, PASS, score_claims
from tests.conftest import tiny_overrides

SEEDS = [0, 1, 2]


def replicate_overrides(root: Path, **extra: object) -> list[str]:
    return tiny_overrides(root, **{"replicate.seeds": "[0,1,2]", "trainer.num_threads": 1,
                                   "tracking.log_model": False,
                                   "tracking.log_checkpoints": False, **extra})


def _children(cfg, parent_id: str):
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicate")
    cfg = compose(replicate_overrides(root, **{"tracking.log_model": True}))  # re-analysed below
    metrics, objects = replicate(cfg)
    return {"cfg": cfg, "metrics": metrics, "objects": objects, "root": root}


# -- statistics -------------------------------------------------------------------------------
def test_t_interval_is_scipys_and_describe_is_numpys():
    values = [0.2, 0.35, 0.5, 0.41]
    low, high = t_interval(values)
    mean, sem = np.mean(values), stats.sem(values)
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 3, loc=mean, scale=sem))
    d = describe(values)
    assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(np.std(values, ddof=1))
    assert d["median"] == pytest.approx(np.median(values))
    assert (d["min"], d["max"], d["n"]) == (0.2, 0.5, 4)
    assert all(math.isnan(x) for x in t_interval([0.3]))
    assert t_interval([0.3, 0.3]) == (0.3, 0.3)


def test_aggregate_keeps_only_metrics_every_seed_has():
    per_seed = {0: {"a": 1.0, "b": 2.0, "train/loss_step": 3.0}, 1: {"a": 3.0, "b": math.nan}}
    table = aggregate(per_seed)
    assert list(table["metric"]) == ["a"]
    assert table.iloc[0]["mean"] == 2.0


def test_split_seeds_round_robin():
    assert split_seeds([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert split_seeds([7], 3) == [[7]]


# -- the scorecard ----------------------------------------------------------------------------
GOOD_RUN = {
    "kept/mem_rate": 0.3, "kept/gen_rate": 0.4, "pairs/n": 250.0,
    "pairs/n_examples_with_pairs": 40.0,
    "neurons/max_abs_r": 0.8, "neurons/chance_max_abs_r_q95": 0.3,
    "probe/best_acc": 0.95, "probe/baseline/input_only_acc": 0.6,
    "probe/baseline/shuffled_acc": 0.55, "probe/baseline/majority_acc": 0.57,
    "steer/to_gen/success": 0.9, "steer/to_mem/success": 0.8,
    "steer/to_gen/control_random/success": 0.05, "steer/to_gen/control_low_r/success": 0.1,
    "steer/to_mem/control_random/success": 0.2, "steer/to_mem/control_shuffled/success": 0.0,
    "side/clean_acc_drop": 0.01, "side/clean_acc": 0.98,
    "consistency/intra/jaccard": 0.6, "consistency/intra/expected_jaccard": 0.05,
    "consistency/intra/p_value": 1e-9,
    "consistency/intra/transfer/to_gen/success": 0.7,
    "consistency/intra/transfer/to_mem/success": 0.6,
    "consistency/intra/transfer/to_gen/control_random/success": 0.1,
    "consistency/intra/transfer/to_mem/control_random/success": 0.1,
}


def test_scorecard_statistics_are_the_hand_computed_margins():
    rows = {r.name: r for r in score_claims(GOOD_RUN, compose([]).claims)}
    assert rows["behaviors"].value == 0.3
    assert rows["differentiation"].value == pytest.approx(0.5)
    assert rows["prediction"].value == pytest.approx(0.95 - 0.6)
    assert rows["steering"].value == pytest.approx(min(0.9 - 0.1, 0.8 - 0.2))
    assert rows["transfer"].value == pytest.approx(0.5)
    assert rows["consistency"].value == 1e-9
    verdicts = {name: r.verdict for name, r in rows.items()}
    assert verdicts == {name: PASS for name in rows} | {"inter_task": NA}


@pytest.mark.parametrize("claim,key,across", [
    ("behaviors", "min_behavior_rate", 0.3), ("pairs", "min_pairs", 250),
    ("differentiation", "min_r_margin", 0.5), ("prediction", "min_probe_margin", 0.35),
    ("steering", "min_steer_margin", 0.6), ("side_effects", "max_clean_drop", 0.01),
    ("consistency", "max_p_value", 1e-9), ("transfer", "min_transfer_margin", 0.5),
])
def test_verdict_flips_when_the_threshold_crosses_the_statistic(claim, key, across):
    cfg = compose([])
    below, above = across * 0.9, across * 1.1
    lenient, strict = (below, above) if key.startswith("min") else (above, below)
    for threshold, verdict in ((lenient, PASS), (strict, FAIL)):
        claims = dict(cfg.claims) | {key: threshold}
        rows = {r.name: r for r in score_claims(GOOD_RUN, claims)}
        assert rows[claim].verdict == verdict, (claim, threshold)


def test_a_statistic_within_float_noise_of_its_threshold_is_on_it():
    run = GOOD_RUN | {"side/clean_acc_drop": 0.925 - 0.905}  # 0.020000000000000018
    rows = {r.name: r for r in score_claims(run, compose([]).claims)}
    assert rows["side_effects"].value > 0.02 and rows["side_effects"].verdict == PASS


def test_missing_measurements_are_not_applicable():
    rows = score_claims({"kept/mem_rate": 0.5, "kept/gen_rate": 0.1}, compose([]).claims)
    verdicts = {r.name: r.verdict for r in rows}
    assert verdicts["behaviors"] == FAIL
    assert {verdicts[n] for n in ("steering", "prediction", "consistency")} == {NA}


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("replicate.seeds=[]", "replicate.seeds"),
    ("replicate.seeds=[1,1]", "replicate.seeds"),
    ("replicate.workers=0", "replicate.workers"),
    ("claims.bogus=1", "claims.bogus"),
    ("claims.max_p_value=2", "claims.max_p_value"),
])
def test_bad_replicate_input_is_one_line_and_exit_2(tmp_path, capsys, override, key):
    store = tmp_path / "mlruns"
    code = main(["replicate", f"tracking.uri=sqlite:///{store}/mlflow.db",
                 f"output_dir={tmp_path / 'out'}", override])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and key in err, err
    assert not (store / "mlflow.db").exists()  # nothing ran, nothing was written


# -- end to end -------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_seeds_make_one_parent_and_three_finished_children(three_seeds):
    cfg, parent_id = three_seeds["cfg"], three_seeds["objects"]["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("memgen.command") == "replicate"]
    assert [r.info.run_id for r in parents] == [parent_id]
    assert parents[0].info.status == "FINISHED"
    kids = _children(cfg, parent_id)
    assert sorted(int(r.data.tags["seed"]) for r in kids) == SEEDS
    assert {r.info.status for r in kids} == {"FINISHED"}
    assert {r.data.tags["memgen.command"] for r in kids} == {"run"}  # ordinary runs
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"claims.csv", "claims_summary.csv", "replicate", "claims"} <= artifacts


@pytest.mark.slow
def test_parent_mean_and_ci_equal_numpy_scipy_on_the_children(three_seeds):
    cfg, parent_id = three_seeds["cfg"], three_seeds["objects"]["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    parent = client.get_run(parent_id).data.metrics
    kids = _children(cfg, parent_id)
    shared = set.intersection(*(set(r.data.metrics) for r in kids))
    aggregated = {k.removesuffix("/mean") for k in parent if k.endswith("/mean")}
    assert {"kept/mem_rate", "kept/gen_rate", "val/behavior_balance"} <= aggregated <= shared
    assert not any(k.startswith(("train/", "claims/")) for k in aggregated)
    for key in aggregated:
        values = [r.data.metrics[key] for r in kids]
        mean = float(np.mean(values))
        assert parent[f"{key}/mean"] == pytest.approx(mean), key
        if np.std(values) > 0:
            low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
        else:
            low = high = mean
        assert (parent[f"{key}/ci_low"], parent[f"{key}/ci_high"]) == pytest.approx((low, high))
    assert parent["replicate/n_finished"] == 3 and parent["replicate/n_failed"] == 0
    per_seed = pd.read_csv(client.download_artifacts(parent_id, "replicate/per_seed.csv",
                                                     str(three_seeds["root"] / "dl")))
    assert sorted(per_seed["seed"]) == SEEDS
    assert "claims/behaviors/pass_rate" in parent


@pytest.mark.slow
def test_rerun_skips_finished_seeds(three_seeds):
    cfg, parent_id = three_seeds["cfg"], three_seeds["objects"]["run_id"]
    metrics, objects = replicate(cfg)
    assert objects["run_id"] == parent_id
    assert len(_children(cfg, parent_id)) == 3
    assert metrics["kept/mem_rate/mean"] == three_seeds["metrics"]["kept/mem_rate/mean"]


@pytest.mark.slow
def test_a_failing_seed_is_counted_and_the_others_go_on(tmp_path, monkeypatch):
    from memgen.training import runner

    original = runner.fit

    def fit_failing_on_seed_1(cfg, *args, **kwargs):
        if cfg.seed == 1:
            raise RuntimeError("seed 1 breaks")
        return original(cfg, *args, **kwargs)

    monkeypatch.setattr(runner, "fit", fit_failing_on_seed_1)
    cfg = compose(replicate_overrides(tmp_path, **{"replicate.seeds": "[0,1]"}))
    metrics, objects = replicate(cfg)
    kids = {int(r.data.tags["seed"]): r.info.status for r in _children(cfg, objects["run_id"])}
    assert kids == {0: "FINISHED", 1: "FAILED"}
    assert metrics["replicate/n_failed"] == 1 and metrics["replicate/n_finished"] == 1
    assert "kept/mem_rate/mean" in metrics  # the finished seed is still aggregated
    assert "failed: [1]" in objects["summary"]
    # rerun: the failed seed is retried, the finished one is not
    monkeypatch.setattr(runner, "fit", original)
    metrics, objects = replicate(cfg)
    runs = _children(cfg, objects["run_id"])
    assert sorted((int(r.data.tags["seed"]), r.info.status) for r in runs) == [
        (0, "FINISHED"), (1, "FAILED"), (1, "FINISHED")]
    assert metrics["replicate/n_failed"] == 0


@pytest.mark.slow
def test_two_workers_give_the_same_aggregates_as_one(three_seeds, tmp_path):
    """Two spawned workers, one seed each, at the same thread count as the in-process run:
    the same numbers, bit for bit, as the one-worker replicate's children of those seeds."""
    cfg = compose(replicate_overrides(tmp_path, **{"replicate.workers": 2,
                                                   "replicate.seeds": "[1,2]"}))
    metrics, objects = replicate(cfg)
    assert len(_children(cfg, objects["run_id"])) == 2
    one = three_seeds["cfg"]
    by_seed = {int(r.data.tags["seed"]): r.data.metrics
               for r in _children(one, three_seeds["objects"]["run_id"])}
    expected = summarise(one, {s: by_seed[s] for s in (1, 2)}, []).metrics
    # stage times differ run to run (and by what each run logs): every result agrees exactly
    results = {k: v for k, v in metrics.items() if not is_timing(k) and k != "replicate/wall_s"}
    expected = {k: v for k, v in expected.items() if not is_timing(k)}
    assert set(results) == set(expected)
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-12), key


# -- p-values over seeds ----------------------------------------------------------------------
def test_p_values_get_worst_median_and_count_below_never_a_t_interval():
    from memgen.replicates.aggregate import (
        aggregate_metrics,
        claims_over_seeds,
        format_replicate_scorecard,
    )

    p_values = {0: 8.5e-67, 1: 1e-3, 2: 0.2}
    per_seed = {s: {"consistency/intra/p_value": p, "a": float(s)} for s, p in p_values.items()}
    table = aggregate(per_seed, p_threshold=0.01)
    row = table.set_index("metric").loc["consistency/intra/p_value"]
    assert (row["worst"], row["median"], row["n_below"]) == (0.2, 1e-3, 2)
    assert all(math.isnan(row[c]) for c in ("mean", "std", "ci_low", "ci_high"))
    metrics = aggregate_metrics(table)
    assert metrics["consistency/intra/p_value/worst"] == 0.2
    assert metrics["consistency/intra/p_value/median"] == 1e-3
    assert metrics["consistency/intra/p_value/n_below"] == 2
    assert not any(k.startswith("consistency/intra/p_value/") and k.endswith(
        ("/mean", "/ci_low", "/ci_high")) for k in metrics)
    assert metrics["a/mean"] == 1.0  # other metrics keep their mean and t-interval
    claims = compose([]).claims
    scored = {s: score_claims(GOOD_RUN | {"consistency/intra/p_value": p}, claims)
              for s, p in p_values.items()}
    _, summary = claims_over_seeds(scored, [])
    consistency = summary.set_index("claim").loc["consistency"]
    assert (consistency["worst"], consistency["median"], consistency["n_pass"]) == (0.2, 1e-3, 2)
    assert math.isnan(consistency["mean"]) and math.isnan(consistency["ci_low"])
    line = next(ln for ln in format_replicate_scorecard(summary).splitlines()
                if ln.startswith("consistency"))
    assert "worst 0.2, median 0.001" in line and "[" not in line


# -- the research loop: re-analyse the replicate's models, compare --------------------------------
@pytest.fixture(scope="module")
def reanalysed(three_seeds):
    """``replicate.models=<three_seeds>`` at another ``analysis.top_fraction``; training is
    forbidden."""
    from memgen.training import runner

    source = three_seeds["objects"]["run_id"]
    cfg = compose(replicate_overrides(three_seeds["root"], **{"replicate.models": source,
                                                              "analysis.top_fraction": 0.2}))

    def no_training(*args, **kwargs):
        raise AssertionError("replicate.models trained a model")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "fit", no_training)
        metrics, objects = replicate(cfg)
        again, again_objects = replicate(cfg)  # a re-run: every seed finished already
    return {"cfg": cfg, "metrics": metrics, "objects": objects, "source": source,
            "again": again, "again_objects": again_objects}


@pytest.mark.slow
def test_reanalysis_has_one_analyse_child_per_seed_and_trains_nothing(three_seeds, reanalysed):
    cfg, parent_id = reanalysed["cfg"], reanalysed["objects"]["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    parent = client.get_run(parent_id)
    assert parent_id != reanalysed["source"] and parent.info.status == "FINISHED"
    assert parent.data.tags["memgen.replicate.models"] == reanalysed["source"]
    assert "seed" not in parent.data.tags  # a replicate has no single seed
    assert "seed" not in client.get_run(reanalysed["source"]).data.tags
    models = {int(r.data.tags["seed"]): r.info.run_id
              for r in _children(three_seeds["cfg"], reanalysed["source"])}
    kids = _children(cfg, parent_id)
    assert sorted(int(r.data.tags["seed"]) for r in kids) == SEEDS
    for kid in kids:
        assert kid.info.status == "FINISHED"
        assert kid.data.tags["memgen.command"] == "analyse"
        assert kid.data.tags["memgen.model_run"] == models[int(kid.data.tags["seed"])]
        assert not any(k.startswith("train/") for k in kid.data.metrics)
        assert {"checkpoints", "model"}.isdisjoint(
            a.path for a in client.list_artifacts(kid.info.run_id))
    # the re-run found the same parent and ran nothing new
    assert reanalysed["again_objects"]["run_id"] == parent_id
    assert len(_children(cfg, parent_id)) == len(SEEDS)


@pytest.mark.slow
def test_reanalysis_of_chosen_seeds_takes_only_those_and_names_a_missing_one(three_seeds,
                                                                             reanalysed):
    """``replicate.seeds`` on the command line picks seeds of the source; a seed the source
    lacks is refused by name, before any run is created."""
    from memgen.errors import ConfigError
    from memgen.training import runner

    source, root = reanalysed["source"], three_seeds["root"]
    cfg = compose(replicate_overrides(root, **{"replicate.models": source,
                                               "analysis.top_fraction": 0.2,
                                               "replicate.seeds": "[2]"}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "fit", lambda *a, **k: pytest.fail("trained"))
        metrics, objects = replicate(cfg, seeds_given=True)
    kids = _children(cfg, objects["run_id"])
    assert objects["run_id"] != reanalysed["objects"]["run_id"]  # another seed set: new parent
    assert [int(r.data.tags["seed"]) for r in kids] == [2]
    assert metrics["replicate/n_finished"] == 1
    bad = compose(replicate_overrides(root, **{"replicate.models": source,
                                               "replicate.seeds": "[2,99]"}))
    with pytest.raises(ConfigError, match=r"replicate.seeds: \[99\] are not finished seeds"):
        replicate(bad, seeds_given=True)


@pytest.mark.slow
def test_seeds_kept_from_other_code_are_named_and_fresh_runs_them_again(three_seeds, reanalysed,
                                                                         capsys):
    """A re-run under another commit says which kept seeds that code made;
    ``replicate.fresh=true`` then starts a new parent that runs every seed."""
    import memgen.commands.replicate as replicate_mod
    from memgen.training import runner

    source, root = reanalysed["source"], three_seeds["root"]
    overrides = {"replicate.models": source, "analysis.top_fraction": 0.2,
                 "replicate.seeds": "[2]"}
    cfg = compose(replicate_overrides(root, **overrides))
    first = replicate(cfg, seeds_given=True)[1]["run_id"]  # made (or kept) under this code
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "fit", lambda *a, **k: pytest.fail("trained"))
        patch.setattr(replicate_mod, "context_tags",
                      lambda: {"mlflow.source.git.commit": "f" * 40})
        again = replicate(cfg, seeds_given=True)[1]["run_id"]
        line = capsys.readouterr().err
        assert again == first
        assert "seed(s) [2] finished earlier under commit" in line
        assert "this checkout: fffffff" in line and "replicate.fresh=true" in line
        fresh = compose(replicate_overrides(root, **overrides, **{"replicate.fresh": True}))
        new = replicate(fresh, seeds_given=True)[1]["run_id"]
    assert new != first
    assert [int(r.data.tags["seed"]) for r in _children(cfg, new)] == [2]
    assert len(_children(cfg, first)) == 1  # the old parent keeps its own


@pytest.mark.slow
def test_reanalysis_aggregates_equal_its_childrens(reanalysed):
    cfg, parent_id = reanalysed["cfg"], reanalysed["objects"]["run_id"]
    parent = MlflowClient(cfg.tracking.uri).get_run(parent_id).data.metrics
    kids = _children(cfg, parent_id)
    means = {k.removesuffix("/mean") for k in parent if k.endswith("/mean")}
    assert {"kept/mem_rate", "behavior/mem_rate", "time/labelling_s"} <= means
    for key in means:
        values = [r.data.metrics[key] for r in kids]
        assert parent[f"{key}/mean"] == pytest.approx(np.mean(values)), key
        if np.std(values) > 0:
            low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                         scale=stats.sem(values))
            assert (parent[f"{key}/ci_low"], parent[f"{key}/ci_high"]) == pytest.approx(
                (low, high)), key
    for key in (k.removesuffix("/worst") for k in parent if k.endswith("/worst")):
        values = [r.data.metrics[key] for r in kids]
        assert parent[f"{key}/worst"] == max(values)
        assert parent[f"{key}/median"] == pytest.approx(np.median(values))
    assert reanalysed["again"]["kept/mem_rate/mean"] == reanalysed["metrics"][
        "kept/mem_rate/mean"]


@pytest.mark.slow
def test_compare_prints_both_scorecards_and_the_paired_difference(three_seeds, reanalysed,
                                                                  capsys, tmp_path):
    cfg = reanalysed["cfg"]
    a, b = reanalysed["source"], reanalysed["objects"]["run_id"]
    assert main(["compare", a, b, f"tracking.uri={cfg.tracking.uri}"]) == 0
    out = capsys.readouterr().out
    assert "== scorecard A ==" in out and "== scorecard B ==" in out
    assert sum(line.startswith("behaviors ") for line in out.splitlines()) == 2
    client = MlflowClient(cfg.tracking.uri)
    paired = pd.read_csv(client.download_artifacts(b, f"compare/vs_{a}.csv", str(tmp_path)))
    assert f"compare/vs_{a}.html" in {x.path for x in client.list_artifacts(b, "compare")}
    by_seed = {side: {int(r.data.tags["seed"]): r.data.metrics for r in _children(cfg, parent)}
               for side, parent in (("a", a), ("b", b))}
    rows = paired.set_index("metric")
    for key in ("time/labelling_s", "behavior/mem_rate", "kept/mem_rate"):
        diffs = [by_seed["b"][s][key] - by_seed["a"][s][key] for s in SEEDS]  # by hand
        mean = float(np.mean(diffs))
        if np.std(diffs) > 0:
            low, high = stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=stats.sem(diffs))
        else:
            low = high = mean
        row = rows.loc[key]
        assert row["n"] == 3 and row["diff"] == pytest.approx(mean, abs=1e-12), key
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12), key
        assert bool(row["excludes_0"]) == (low > 0 or high < 0), key
    # the same model analysed twice labels the same: no difference in behavior
    assert rows.loc["kept/mem_rate", "diff"] == 0 and not rows.loc["kept/mem_rate", "excludes_0"]
    assert not any("p_value" in key for key in rows.index)  # no t-interval for p-values
    shown = next(line for line in out.splitlines() if line.startswith("kept/mem_rate "))
    assert shown.split()[1] == "3"


def test_system_metrics_are_not_aggregated_or_compared():
    """MLflow's system metrics describe the host (disk, CPU), not a seed's result: neither the
    replicate's aggregates nor `compare`'s paired differences include them."""
    from memgen.commands.compare import paired_differences
    from memgen.replicates.aggregate import summary_keys

    a = {s: {"pairs/n": 100.0 + s, "system/disk_usage_megabytes": 10.0 + s} for s in (0, 1, 2)}
    b = {s: {"pairs/n": 110.0 + s, "system/disk_usage_megabytes": 99.0 + s} for s in (0, 1, 2)}
    assert summary_keys(a) == ["pairs/n"]
    paired = paired_differences(a, b)
    assert list(paired["metric"]) == ["pairs/n"] and paired["diff"].iloc[0] == 10.0


def test_the_thread_count_per_seed_is_part_of_a_replicates_identity(tmp_path, monkeypatch):
    """The same seed trains to another model at 2 threads than at 1, so a replicate at 2
    threads never reuses the seeds of one at 1; workers that split the cores to the same
    thread count are the same experiment."""
    from memgen.commands import replicate as command

    monkeypatch.setattr(command, "cores", lambda: 2)

    def key(seeds=(0, 1, 2), **extra):
        return command.replicate_key(compose(tiny_overrides(tmp_path, **extra)), list(seeds))

    one = key(**{"replicate.workers": 2})  # 2 cores / 2 workers: 1 thread per seed
    assert one == key(**{"replicate.workers": 1, "trainer.num_threads": 1})
    assert one != key(**{"replicate.workers": 1, "trainer.num_threads": 2})
    assert one != key(**{"replicate.workers": 1})  # 2 cores, one worker: 2 threads
    assert key(**{"trainer.progress_bar": True}) == key()  # result-neutral keys stay out
    # other seeds are another parent (its scorecard covers its own seeds); order is not identity
    assert key(seeds=(5, 6, 7)) != key() and key(seeds=(2, 0, 1)) == key()
