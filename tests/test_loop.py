"""The research loop on one model: ``memgen analyse`` re-runs the analysis of a finished run,
bad ids fail in one line, a run's artifacts suffice to recompute its neuron table, stage
timings are logged, and no analysis pass runs on padded input without an attention mask."""

from __future__ import annotations

import math
import traceback
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from memgen.analysis.settings import Subject
from memgen.analysis.stages import analyse_model
from memgen.analysis.timing import StageTimer, is_timing
from memgen.cli import main
from memgen.commands.analyse import MODEL_RUN_TAG, analyse
from memgen.config import compose
from memgen.config.adapter import settings_from_config
from tests.conftest import BOTH_BEHAVIORS, tiny_overrides
from tests.helpers_sweep import fit_designed, store_overrides

# the default steering compares its site candidates (tune_sites): one "steering_kinds" lap
ANALYSIS_STAGES = ("labelling", "capture", "neurons", "probes", "clean_baseline",
                   "attribution", "steering_kinds", "grid", "consistency", "transfer")


def test_stage_timer_books_laps_and_adds_repeats(monkeypatch):
    clock = iter([10.0, 11.5, 14.0, 14.25, 20.0])
    monkeypatch.setattr("memgen.analysis.timing.time.perf_counter", lambda: next(clock))
    timer = StageTimer()  # 10.0
    assert timer.lap("capture") == 1.5
    timer.restart()  # 14.0: 11.5..14.0 is booked nowhere
    timer.lap("labelling")  # 0.25
    timer.lap("labelling")  # 5.75
    assert timer.metrics() == {"time/capture_s": 1.5, "time/labelling_s": 6.0}
    assert is_timing("time/total_s") and not is_timing("steer/min_success")


# -- memgen analyse on the session's trained model ------------------------------------------------
@pytest.fixture(scope="module")
def analysed(trained_run):
    """``memgen analyse`` on the trained run's model, with the run's settings and threads."""
    run_id = trained_run["objects"]["run_id"]
    cfg = compose(tiny_overrides(trained_run["root"], **BOTH_BEHAVIORS) + [f"run={run_id}"])
    metrics, objects = analyse(cfg)
    return {"cfg": cfg, "metrics": metrics, "objects": objects}


@pytest.mark.slow
def test_analyse_gives_the_metrics_of_the_run_that_trained_the_model(trained_run, analysed):
    ran = trained_run["objects"]["analysis"].metrics
    again = analysed["objects"]["analysis"].metrics
    results = {k for k in ran if not is_timing(k)}
    assert {"pairs/n", "neurons/max_abs_r", "probe/best_acc", "steer/min_success",
            "consistency/intra/jaccard"} <= results
    assert {k: again[k] for k in results} == {k: ran[k] for k in results}
    # the scorecard reads the same model: kept/* rates are the model run's
    for key in ("kept/mem_rate", "kept/gen_rate"):
        assert analysed["metrics"][key] == pytest.approx(trained_run["metrics"][key], rel=1e-3)


@pytest.mark.slow
def test_analyse_logs_a_new_run_tagged_with_the_model_run_and_no_training(trained_run,
                                                                          analysed):
    client = MlflowClient(analysed["cfg"].tracking.uri)
    model_run = trained_run["objects"]["run_id"]
    run = client.get_run(analysed["objects"]["run_id"])
    assert run.info.run_id != model_run and run.info.status == "FINISHED"
    assert run.data.tags[MODEL_RUN_TAG] == model_run
    assert run.data.tags["memgen.command"] == "analyse"
    assert run.data.tags["seed"] == str(trained_run["cfg"].seed)
    assert not any(k.startswith("train/") for k in run.data.metrics)
    assert "time/load_s" in run.data.metrics and "time/labelling_s" in run.data.metrics
    paths = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "claims.csv", "neurons", "behavior", "config.yaml"} <= paths
    assert "checkpoints" not in paths and "model" not in paths


@pytest.mark.slow
def test_every_run_logs_its_stage_timings_and_the_report_shows_them(trained_run, tmp_path):
    client = MlflowClient(trained_run["cfg"].tracking.uri)
    run_id = trained_run["objects"]["run_id"]
    metrics = client.get_run(run_id).data.metrics
    for stage in ("task", "training", "kept_rates", "analysis", "logging", "report", "total",
                  *ANALYSIS_STAGES):
        assert metrics[f"time/{stage}_s"] >= 0, stage
    assert metrics["time/total_s"] >= metrics["time/training_s"] + metrics["time/analysis_s"]
    assert metrics["time/analysis_s"] >= metrics["time/labelling_s"] + metrics["time/capture_s"]
    html = client.download_artifacts(run_id, "report.html", str(tmp_path))
    text = open(html, encoding="utf-8").read()
    assert "Stage timings" in text and ">steering_kinds<" in text and ">training<" in text


# -- the artifacts recompute the neuron table ---------------------------------------------------
@pytest.mark.slow
def test_the_logged_splits_and_model_recompute_the_neuron_table(trained_run, tmp_path):
    """Downloaded tables and the logged model only: no task, no seed, no split rebuilt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from memgen.analysis.capture import collect_features

    client = MlflowClient(trained_run["cfg"].tracking.uri)
    run_id = trained_run["objects"]["run_id"]

    def table(path: str) -> pd.DataFrame:
        return pd.read_parquet(client.download_artifacts(run_id, path, str(tmp_path)))

    neurons, splits = table("neurons/neurons.parquet"), table("behavior/splits.parquet")
    pairs = table("behavior/pairs.parquet")
    model_dir = client.download_artifacts(run_id, "model", str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    params = client.get_run(run_id).data.params
    # the splits are what the pairs say: every pair's variants, by the pair's split
    for name in ("selection", "evaluation"):
        in_pairs = {(g, k) for g, i, j in pairs.loc[pairs["split"] == name, ["group", "i", "j"]]
                    .itertuples(index=False) for k in (i, j)}
        rows = splits[splits["split"] == name]
        assert set(zip(rows["group"], rows["variant"], strict=True)) == in_pairs
    assert set(splits["behavior"]) == {"MEM", "GEN"}
    assert (splits["label"] == (splits["behavior"] == "MEM")).all()
    # activations as the run captured them: selection then evaluation, same batch size
    sites = sorted(set(neurons["site"]))
    with torch.no_grad():
        values = collect_features(model, tokenizer, list(splits["prompt"]), sites,
                                  int(params["analysis.batch_size"]))
    selected = (splits["split"] == "selection").to_numpy()
    y = splits["label"].to_numpy()[selected].astype(bool)
    for site in sites:
        x = values[site].double().numpy()[selected]
        nmd = x[y].mean(0) - x[~y].mean(0)
        r = np.array([np.corrcoef(x[:, i], y)[0, 1] if x[:, i].std() > 0 else 0.0
                      for i in range(x.shape[1])])
        rows = neurons[neurons["site"] == site].sort_values("index")
        assert (rows["n_mem"] == y.sum()).all() and (rows["n_gen"] == (~y).sum()).all()
        np.testing.assert_allclose(rows["nmd"], nmd, atol=1e-5, rtol=1e-5, err_msg=site)
        np.testing.assert_allclose(rows["r"], r, atol=1e-5, err_msg=site)


# -- bad ids: one line, exit 2, nothing written ---------------------------------------------------
@pytest.fixture(scope="module")
def bad_store(tmp_path_factory):
    """A store holding a RUNNING run and a FINISHED run without a model (no training)."""
    root = tmp_path_factory.mktemp("bad-ids")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("memgen", artifact_location=(root / "art").as_uri())
    running = client.create_run(exp).info.run_id
    modelless = client.create_run(exp, tags={"memgen.command": "run"}).info.run_id
    client.set_terminated(modelless, "FINISHED")
    return uri, client, exp, running, modelless


@pytest.mark.parametrize("command,bad,says", [
    ("analyse", "run=nosuchrun", "run: no run 'nosuchrun'"),
    ("analyse", "run={running}", "is RUNNING, not FINISHED"),
    ("analyse", "run={modelless}", "has no 'model' artifact"),
    ("analyse", "", "run: expected the id of a finished run"),
    ("replicate", "replicate.models=nosuchrun", "replicate.models: no run 'nosuchrun'"),
    ("replicate", "replicate.models={modelless}", "is not a replicate parent"),
    ("compare", "nosuchrun {modelless}", "compare: no run 'nosuchrun'"),
    ("compare", "{modelless} {running}", "is RUNNING, not FINISHED"),
])
def test_bad_ids_and_unfinished_runs_are_one_line_exit_2_and_write_nothing(
        bad_store, tmp_path, capsys, command, bad, says):
    uri, client, exp, running, modelless = bad_store
    args = bad.format(running=running, modelless=modelless).split()
    capsys.readouterr()  # MLflow's schema set-up chatter
    code = main([command, *args, f"tracking.uri={uri}", f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and says in err, err
    runs = client.search_runs([exp])
    assert sorted(r.info.run_id for r in runs) == sorted([running, modelless])
    assert not list(client.list_artifacts(modelless))


@pytest.mark.parametrize("command,args", [("analyse", ["run=abc"]), ("compare", ["a", "b"]),
                                          ("replicate", ["replicate.models=abc"])])
def test_a_missing_store_is_named_and_not_created(tmp_path, capsys, command, args):
    store = tmp_path / "mlruns"
    code = main([command, *args, f"tracking.uri=sqlite:///{store}/mlflow.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not exist" in err, err
    assert not (store / "mlflow.db").exists()


# -- every analysis pass on padded input has a mask -----------------------------------------------
@pytest.mark.slow  # fits a model (fit_designed)
def test_no_analysis_pass_runs_without_an_attention_mask_on_padded_input(tmp_path):
    """A forward hook on the model sees every pass of a full ``analyse_model`` (labelling,
    capture, probes' inputs, steering, grid, consistency): any pass whose ``input_ids`` hold
    the pad token must carry an ``attention_mask`` (transformers' "We strongly recommend
    passing in an `attention_mask`" case)."""
    cfg = compose(store_overrides(tmp_path, **{  # addends up to 30: prompts differ in length
        "task.params.high": 30, "task.n_conflict": 24, "task.n_clean": 8, "task.n_perturbations": 2,
        "model.n_layer": 2, "model.n_embd": 64, "model.n_head": 2, "trainer.num_threads": 1,
        "analysis.n_shuffles": 2, "analysis.steering.grid_alpha": "[3.0]",
        "analysis.steering.grid_top_fraction": "[0.05]",
        "analysis.steering.tune_alpha": "[3.0]", "analysis.steering.tune_top_fraction": "[0.1]",
        "analysis.batch_size": 16}))
    task, tokenizer, model, _ = fit_designed(cfg)
    pad = tokenizer.pad_token_id
    seen = {"passes": 0, "padded": 0, "unmasked_padded": []}

    def check(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        seen["passes"] += 1
        if bool((ids == pad).any()):
            seen["padded"] += 1
            if kwargs.get("attention_mask") is None:
                where = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()
                         if "/memgen/" in f.filename]
                seen["unmasked_padded"].append((tuple(ids.shape), where[-3:]))

    # the default path, then every intervention kind's own runner (issue 26's generation)
    settings = settings_from_config(cfg)
    kinds = settings.with_steering(replace(
        settings.steering, tune_kinds=("add", "add_scaled", "set_mean", "interchange", "ablate"),
        tune_positions=("last_prompt", "every_pass", "all"), tune_sites=("mlp", "resid")))
    # the LM head wrapper and the backbone it calls (transformers warns from the backbone)
    handles = [m.register_forward_pre_hook(check, with_kwargs=True)
               for m in (model, model.transformer)]
    try:
        analysis = analyse_model(Subject(model, tokenizer, task), settings)
        with_kinds = analyse_model(Subject(model, tokenizer, task), kinds)
    finally:
        for handle in handles:
            handle.remove()
    assert analysis.steering is not None and analysis.consistency is not None  # every stage ran
    assert with_kinds.kinds is not None and len(with_kinds.kinds.table) > 0
    assert seen["passes"] > 100 and seen["padded"] > 0  # padded batches were exercised
    assert seen["unmasked_padded"] == [], (f"{len(seen['unmasked_padded'])} passes without a "
                                           f"mask, the first from {seen['unmasked_padded'][:1]}")
    assert math.isfinite(analysis.metrics["steer/min_success"])


def test_a_config_logged_before_num_beams_moved_still_loads():
    """Runs logged with ``trainer.num_beams`` are re-analysed and resumed under today's closed
    schema: the stored key is moved to ``analysis.decoding.num_beams``, its value kept."""
    from omegaconf import OmegaConf

    from memgen.config import compose, to_schema
    from memgen.tracking.load import upgraded

    stored = OmegaConf.to_container(compose([]), resolve=True)
    del stored["analysis"]["decoding"]["num_beams"]
    stored["trainer"]["num_beams"] = 3
    cfg = to_schema(upgraded(OmegaConf.create(stored)))
    assert cfg.analysis.decoding.num_beams == 3 and "num_beams" not in cfg.trainer


def test_a_generated_pad_is_content_and_eos_ends_the_text():
    """A steered model can emit its PAD token mid-answer; it must stay in the text (so the
    answer is OTHER) instead of being dropped, which spliced "1<pad>2" into a correct "12"."""
    from memgen.analysis.generation import decode_new_tokens
    from memgen.training.data import make_task, task_tokenizer

    tok = task_tokenizer(make_task(compose([])))
    one, two = tok.convert_tokens_to_ids(["1", "2"])
    pad, eos = tok.pad_token_id, tok.eos_token_id
    ids = torch.tensor([[one, two, eos, eos], [one, pad, two, eos], [one, two, pad, pad]])
    clean, spliced, unfinished = decode_new_tokens(tok, ids)
    assert clean == "12"
    assert spliced != "12" and spliced.startswith("1") and spliced.endswith("2")
    assert unfinished.startswith("12") and unfinished != "12"
