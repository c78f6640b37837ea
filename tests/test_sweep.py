"""``memgen sweep``: Optuna studies as MLflow parent/child runs, resume, workers, pruning, errors.

Steering sweeps run on a model built in seconds by ``tests/helpers_sweep.py`` (designed
MEM/GEN targets, logged as a finished ``memgen run``). Every store, study and output lives
under pytest's tmp directories.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

import memgen.sweeps.trials as trials_mod
import memgen.training.runner as runner
from memgen.commands.sweep import plan, sweep
from memgen.config import compose
from memgen.errors import ConfigError
from memgen.sweeps.objectives import known_metric, parse_objectives
from memgen.sweeps.pruning import OptunaPruning
from memgen.sweeps.space import parse_space, trial_config
from memgen.sweeps.storage import MEDIAN_STARTUP_TRIALS, MEDIAN_WARMUP_EPOCHS, redact
from memgen.sweeps.worker import split_trials
from memgen.training import reopen
from tests.conftest import tiny_overrides
from tests.helpers_sweep import make_steering_run, store_overrides

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """(store root, run id) of a finished run whose model shows MEM/GEN pairs."""
    root = tmp_path_factory.mktemp("sweep-model")
    cfg, run_id = make_steering_run(root)
    metrics = MlflowClient(cfg.tracking.uri).get_run(run_id).data.metrics
    assert metrics["pairs/n"] >= 4 and metrics["behavior/mem_rate"] > 0.2
    return root, run_id


def steering_cfg(model_run, tmp_path, *extra: str, **keys: object):
    """A steering sweep over the fixture model, logged to a per-test experiment."""
    root, run_id = model_run
    keys = {"sweep": "steering", "sweep.run_id": run_id, "sweep.n_trials": 3,
            "sweep.storage": f"sqlite:///{tmp_path}/optuna.db", "trainer.num_threads": 1,
            "output_dir": str(tmp_path / "outputs")} | keys
    return compose(store_overrides(root, experiment=f"sweep-{tmp_path.name}", **keys)
                   + list(extra))


def runs_of(cfg):
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return client, ([] if exp is None else client.search_runs(
        [exp.experiment_id], order_by=["attributes.start_time ASC"]))


def children_of(runs, parent_id):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


# -- steering sweeps ----------------------------------------------------------------------------

@pytest.mark.slow  # the module's model_run fixture trains a model
def test_steering_trials_reuse_one_loaded_model_and_log_a_pareto_front(model_run, tmp_path,
                                                                        monkeypatch):
    counts = {"load_run": 0, "contrast": 0, "unsteered_clean": 0, "run_steering": 0}

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapped)

    spy(reopen, "load_run")
    for name in ("contrast", "unsteered_clean", "run_steering"):
        spy(trials_mod, name)

    def no_training(*args, **kwargs):
        raise AssertionError("a steering trial must not train")
    monkeypatch.setattr(runner, "fit", no_training)
    monkeypatch.setattr(runner, "prepare", no_training)

    cfg = steering_cfg(model_run, tmp_path)  # two objectives: success up, clean-acc drop down
    metrics, objects = sweep(cfg)
    # the model, its neurons and its unsteered clean baseline once; each trial only steers
    assert counts == {"load_run": 1, "contrast": 1, "unsteered_clean": 1, "run_steering": 3}
    client, runs = runs_of(cfg)
    parent = client.get_run(objects["run_id"])
    children = children_of(runs, parent.info.run_id)
    assert len(runs) == 4 and len(children) == 3
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["memgen.sweep.study"] == objects["study"].study_name
    assert parent.data.tags["memgen.sweep.model_run_id"] == model_run[1]
    study = objects["study"]
    for child in children:
        trial = study.trials[int(child.data.tags["optuna.trial_number"])]
        assert child.info.status == "FINISHED"
        assert child.data.tags["optuna.state"] == "COMPLETE"
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
        for key, value in trial.params.items():  # the trial's values are the child's config
            assert float(child.data.params[key]) == pytest.approx(value)
        assert child.data.metrics["steer/min_success"] == trial.values[0]
        assert child.data.metrics["side/clean_acc_drop"] == trial.values[1]
    pareto = {t.number for t in study.best_trials}
    assert parent.data.tags["pareto/trials"] == ",".join(map(str, sorted(pareto)))
    assert metrics["sweep/n_pareto"] == len(pareto)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/trials.csv", "sweep/pareto.csv", "sweep/pareto_front.png",
            "sweep/history_steer_min_success.png",
            "sweep/contour_side_clean_acc_drop.png"} <= artifacts


@pytest.mark.slow  # the module's model_run fixture trains a model
def test_best_trial_on_the_parent_and_a_resume_extends_the_same_study_and_parent(model_run,
                                                                                tmp_path):
    extra = ["sweep.objectives=[{metric:side/kl,direction:minimize}]",
             "~sweep.space.analysis.steering.top_fraction",
             "+sweep.space.analysis.steering.top_k={type:int,low:1,high:16,log:true}"]
    cfg = steering_cfg(model_run, tmp_path, *extra, **{"sweep.study_name": "kl-study"})
    metrics, objects = sweep(cfg)
    client, runs = runs_of(cfg)
    parent_id = objects["run_id"]
    parent = client.get_run(parent_id)
    children = children_of(runs, parent_id)
    assert len(children) == 3
    best = min(children, key=lambda r: r.data.metrics["side/kl"])
    assert parent.data.tags["best/mlflow_run_id"] == best.info.run_id
    for key in ("analysis.steering.alpha", "analysis.steering.top_k"):
        assert float(parent.data.tags[f"best/{key}"]) == pytest.approx(float(best.data.params[key]))
    for key in ("side/kl", "steer/to_gen/success", "steer/k"):
        assert parent.data.metrics[f"best/{key}"] == pytest.approx(best.data.metrics[key])
    assert metrics["best/side/kl"] == pytest.approx(objects["study"].best_value)
    assert {"sweep/importance_side_kl.png", "sweep/contour_side_kl.png"} <= {
        a.path for a in client.list_artifacts(parent_id, "sweep")}

    cfg2 = steering_cfg(model_run, tmp_path, *extra,
                        **{"sweep.study_name": "kl-study", "sweep.n_trials": 2})
    metrics2, objects2 = sweep(cfg2)
    assert objects2["run_id"] == parent_id
    _, runs = runs_of(cfg2)
    assert len([r for r in runs if r.data.tags.get("memgen.command") == "sweep"]) == 1
    children = children_of(runs, parent_id)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3, 4]
    assert len(objects2["study"].trials) == 5 and metrics2["sweep/n_complete"] == 5
    params = [tuple(r.data.params[k] for k in ("analysis.steering.alpha",
                                               "analysis.steering.top_k")) for r in children]
    assert len(set(params)) == 5  # the resume samples anew, it does not replay the first trials
    assert client.get_run(parent_id).info.status == "FINISHED"


@pytest.mark.slow
def test_two_workers_run_exactly_n_trials_each_logged_once(model_run, tmp_path):
    cfg = steering_cfg(model_run, tmp_path, **{
        "sweep.workers": 2, "sweep.n_trials": 4,
        "sweep.storage": f"journal:{tmp_path}/optuna.journal"})
    metrics, objects = sweep(cfg)
    study = objects["study"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    _, runs = runs_of(cfg)
    children = children_of(runs, objects["run_id"])
    assert len(children) == 4
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {
        r.info.run_id for r in children}
    assert {r.data.tags["memgen.sweep.worker"] for r in children} == {"0", "1"}
    assert metrics["sweep/n_complete"] == 4


# -- training sweeps ----------------------------------------------------------------------------

def training_cfg(tmp_path, *extra: str, **keys: object):
    keys = {"sweep": "training", "sweep.n_trials": 1, "sweep.study_name": "train-study",
            "sweep.storage": f"sqlite:///{tmp_path}/optuna.db", "trainer.num_threads": 1,
            "tracking.log_checkpoints": "false"} | keys
    return compose(tiny_overrides(tmp_path, **keys)
                   + ["~sweep.space.model", "sweep.space.trainer.lr.low=1e-7",
                      "sweep.space.trainer.lr.high=1e-6", *extra])


@pytest.mark.slow
def test_training_sweep_prunes_a_trial_behind_the_median(tmp_path):
    epochs = MEDIAN_WARMUP_EPOCHS + 3
    cfg = training_cfg(tmp_path, **{"trainer.max_epochs": epochs})
    # Earlier trials that reached a balance of 0.9 at every epoch: a tiny-lr model (balance 0)
    # falls below their median as soon as the warm-up epochs are over.
    study = optuna.create_study(study_name="train-study", storage=cfg.sweep.storage,
                                direction="maximize")
    dist = {"trainer.lr": optuna.distributions.FloatDistribution(1e-7, 1e-6, log=True)}
    for _ in range(MEDIAN_STARTUP_TRIALS):
        study.add_trial(optuna.trial.create_trial(
            params={"trainer.lr": 5e-7}, distributions=dist, value=0.9,
            intermediate_values={e: 0.9 for e in range(epochs)}))
    metrics, objects = sweep(cfg)
    trial = objects["study"].trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert max(trial.intermediate_values) == MEDIAN_WARMUP_EPOCHS  # stopped early
    client, runs = runs_of(cfg)
    (child,) = children_of(runs, objects["run_id"])
    assert child.info.status == "KILLED"
    assert child.data.tags["optuna.state"] == "PRUNED"
    history = client.get_metric_history(child.info.run_id, "val/behavior_balance")
    assert len(history) == MEDIAN_WARMUP_EPOCHS + 1 < epochs
    assert metrics["sweep/n_pruned"] == 1


@pytest.mark.slow
def test_training_trial_retrains_and_logs_its_model(tmp_path):
    cfg = training_cfg(tmp_path, "sweep.objectives=[{metric:kept/other_rate,direction:minimize}]",
                       **{"trainer.max_epochs": 1, "sweep.pruner": "none"})
    metrics, objects = sweep(cfg)
    client, runs = runs_of(cfg)
    (child,) = children_of(runs, objects["run_id"])
    assert child.info.status == "FINISHED"
    assert "kept/other_rate" in child.data.metrics and "val/mem_rate" in child.data.metrics
    assert "model" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert float(child.data.params["trainer.lr"]) == objects["study"].best_params["trainer.lr"]
    assert metrics["best/kept/other_rate"] == child.data.metrics["kept/other_rate"]


# -- errors before any work ---------------------------------------------------------------------

BAD = [
    (["sweep.space.analysis.steering.alpha.low=12"], "empty or inverted range"),
    (["sweep.space.analysis.steering.alpha.low=10"], "empty or inverted range"),
    (["sweep.space.analysis.steering.alpha.type=complex"], "sweep.space.analysis.steering.alpha"
                                                           ".type: expected one of"),
    (["sweep.space.analysis.steering.alpha.low=0", "sweep.space.analysis.steering.alpha.log=true"],
     "log: true needs low > 0"),
    (["+sweep.space.analysis.steering.nope={type:int,low:1,high:3}"], "not a config key"),
    (["+sweep.space.model.n_embd={type:int,low:32,high:64}"], "can only vary analysis.steering"),
    (["sweep.space.analysis.steering.top_fraction.high=2"], "2.0 is not a valid value"),
    (["sweep.objectives=[{metric:steer/to_gen/succes,direction:maximize}]"],
     "unknown metric 'steer/to_gen/succes' for a steering sweep; did you mean"),
    (["sweep.objectives=[{metric:val/mem_rate,direction:maximize}]"], "unknown metric"),
    (["sweep.objectives=[{metric:side/kl,direction:up}]"], "direction: expected"),
    (["sweep.objectives=[]"], "sweep.objectives: empty"),
    (["sweep.run_id=deadbeef"], "sweep.run_id: run id 'deadbeef': no such run"),
    (["sweep.workers=2"], "SQLite does not take 2 parallel workers"),
    (["sweep.pruner=hyperband"], "sweep.pruner: expected one of"),
    (["sweep.n_trials=0"], "sweep.n_trials: expected a positive integer"),
    (["sweep.storage=redis://localhost"], "sweep.storage: expected"),
    (["sweep.storage=postgresql://me:secret@127.0.0.1:9/optuna"],
     "sweep.storage: cannot open postgresql://me:***@127.0.0.1:9/optuna"),
    (["sweep.name='a b'"], "sweep.name: use letters"),
]


@pytest.mark.slow  # the module's model_run fixture trains a model
@pytest.mark.parametrize(("extra", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_sweeps_fail_before_any_work_with_one_line(model_run, tmp_path, monkeypatch, extra,
                                                       message):
    def no_load(*args, **kwargs):
        raise AssertionError("nothing may be loaded before the checks pass")
    monkeypatch.setattr(reopen, "load_run", no_load)
    cfg = steering_cfg(model_run, tmp_path, *extra)
    with pytest.raises(ConfigError, match=None) as info:
        sweep(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert runs_of(cfg)[1] == []


def test_a_steering_sweep_without_any_trained_run_says_what_to_do(tmp_path):
    cfg = compose(store_overrides(tmp_path, **{"sweep": "steering"}))
    with pytest.raises(ConfigError, match="no finished 'memgen run' run"):
        sweep(cfg)
    with pytest.raises(ConfigError, match="choose a sweep"):
        sweep(compose(store_overrides(tmp_path)))


@pytest.mark.slow  # a subprocess that imports memgen: seconds
def test_cli_reports_a_bad_range_in_one_line_with_exit_code_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "memgen.cli", "sweep", "sweep=steering",
         f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
         "sweep.space.analysis.steering.alpha.high=0.1"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "memgen: error: sweep.space.analysis.steering.alpha: empty or inverted range, expected "
        "low < high, got low=0.5, high=0.1")


# -- pieces -------------------------------------------------------------------------------------

def test_space_nested_and_dotted_forms_agree_and_sample_every_type():
    nested = parse_space({"analysis": {"steering": {
        "alpha": {"type": "float", "low": 0.5, "high": 8.0, "log": True},
        "top_k": {"type": "int", "low": 1, "high": 64, "step": 1}}},
        "analysis.decoding.num_beams": {"type": "categorical", "choices": [1, 2]}})
    dotted = parse_space({"analysis.steering.alpha": {"type": "float", "low": 0.5, "high": 8.0,
                                                      "log": True},
                          "analysis.steering.top_k": {"type": "int", "low": 1, "high": 64,
                                                      "step": 1},
                          "analysis.decoding.num_beams": {"type": "categorical",
                                                          "choices": [1, 2]}})
    assert nested == dotted
    trial = optuna.trial.FixedTrial({"analysis.steering.alpha": 2.0,
                                     "analysis.steering.top_k": 7,
                                     "analysis.decoding.num_beams": 2})
    assert [p.suggest(trial) for p in nested] == [2.0, 7, 2]
    with pytest.raises(ConfigError, match="unknown field 'choises'"):
        parse_space({"a": {"type": "categorical", "choises": [1]}})
    with pytest.raises(ConfigError, match="expected an integer"):
        parse_space({"a": {"type": "int", "low": 1.5, "high": 3}})


def test_trial_config_validates_and_keeps_top_k_and_top_fraction_exclusive():
    base = compose(["analysis.steering.top_fraction=0.1"])
    cfg = trial_config(base, {"analysis.steering.top_k": 5, "analysis.steering.alpha": 2})
    assert cfg.analysis.steering.top_k == 5 and cfg.analysis.steering.top_fraction is None
    assert cfg.analysis.steering.alpha == 2.0 and base.analysis.steering.top_fraction == 0.1
    with pytest.raises(ConfigError, match="model.n_embd"):
        trial_config(base, {"model.n_embd": 130})  # not a multiple of n_head=4


def test_objective_names_come_from_the_analysis_code():
    assert known_metric("steer/to_mem/control_low_r/success", "steering")
    assert known_metric("probe/acc/resid.2", "training")
    assert not known_metric("probe/acc/resid.2", "steering")
    assert known_metric("val/best_behavior_balance", "training")
    with pytest.raises(ConfigError, match="needs analysis.steering.controls to include 'random'"):
        parse_objectives([{"metric": "steer/to_gen/control_random/success",
                           "direction": "maximize"}], "steering", controls=["low_r"])


def test_pruning_callback_stops_lightning_and_the_trial_raises_pruned():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0))
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=0.8,
                                              intermediate_values={0: 0.8}))
    trial = study.ask(dist)
    callback = OptunaPruning(trial)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, should_stop=False,
                              callback_metrics={"val/behavior_balance": torch.tensor(0.1)})
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop
    assert study.trials[-1].intermediate_values == {0: pytest.approx(0.1)}
    with pytest.raises(optuna.TrialPruned, match="epoch 0"):
        callback.raise_if_pruned()


def test_small_helpers():
    assert split_trials(5, 2) == [3, 2] and split_trials(1, 3) == [1, 0, 0]
    assert redact("postgresql://me:secret@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"


@pytest.mark.slow  # the module's model_run fixture trains a model
def test_default_storage_sits_next_to_the_tracking_db(model_run, tmp_path):
    cfg = steering_cfg(model_run, tmp_path, **{"sweep.storage": "null"})
    root = model_run[0]
    assert plan(cfg).storage == f"sqlite:///{root / 'mlruns' / 'optuna.db'}"
    cfg = steering_cfg(model_run, tmp_path, **{"sweep.storage": "null", "sweep.workers": 3})
    assert plan(cfg).storage == f"journal:{root / 'mlruns' / 'optuna.journal'}"
    assert plan(cfg).study_name.startswith(f"steering-{model_run[1][:8]}-")


@pytest.mark.slow  # the module's model_run fixture trains a model
def test_default_study_name_follows_the_space_and_objectives_not_the_trial_count(model_run,
                                                                                 tmp_path):
    def name(**keys):
        return plan(steering_cfg(model_run, tmp_path, **{"sweep.storage": "null",
                                                          **keys})).study_name

    base = name()
    assert name(**{"sweep.n_trials": 7, "sweep.workers": 2}) == base  # resumes the same study
    assert name(**{"sweep.space.analysis.steering.alpha.high": 4.0}) != base
    assert name(**{"sweep.objectives": "[{metric:'side/kl',direction:minimize}]"}) != base



@pytest.mark.slow  # the module's model_run fixture trains a model
def test_loading_a_run_gives_a_working_model_and_leaves_no_download_behind(model_run):
    import tempfile

    root, run_id = model_run
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    pattern = f"memgen-{run_id[:8]}-*"
    before = set(Path(tempfile.gettempdir()).glob(pattern))
    loaded = reopen.load_run(MlflowClient(uri), run_id)
    assert set(Path(tempfile.gettempdir()).glob(pattern)) == before
    ids = loaded.tokenizer("1+2", return_tensors="pt").input_ids
    assert loaded.model(ids).logits.shape[-1] == len(loaded.tokenizer)
