"""Several devices, one job: one MLflow run, written by rank 0; validation rates as on one
device; analysis once; a dead rank never leaves the run RUNNING.

The slow tests start ``memgen`` with ``trainer.devices=2 trainer.strategy=ddp`` on CPUs (gloo):
Lightning's launcher re-executes the command for rank 1, so there are two real processes.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from memgen.tracking.run import TrackedRun
from memgen.training import distributed
from memgen.training.distributed import FollowerRun, record_rank_failure
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
DDP = ("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp")


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def _runs(tmp_path: Path):
    client = _client(tmp_path)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _new_run(tmp_path: Path) -> tuple[MlflowClient, str]:
    client = _client(tmp_path)
    experiment = client.create_experiment("memgen")
    return client, client.create_run(experiment).info.run_id


# ---- the pieces, in one process -------------------------------------------------------------

def test_rank_comes_from_the_launcher_environment(monkeypatch):
    for key in ("RANK", "NODE_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.global_rank() == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # the first process of a second machine
    assert not distributed.is_rank_zero()
    monkeypatch.setenv("RANK", "0")  # torchrun's global rank wins
    assert distributed.is_rank_zero()


def test_a_follower_overrides_every_write_of_a_tracked_run():
    writes = {name for name, _ in inspect.getmembers(TrackedRun, inspect.isfunction)
              if name.startswith(("log_", "set_"))}
    assert writes  # log_metrics, log_params, set_tags, log_frame, ...
    assert {name for name in writes if name not in vars(FollowerRun)} == set()


def test_a_follower_writes_nothing_and_its_client_refuses_writes(tmp_path):
    client, run_id = _new_run(tmp_path)
    follower = FollowerRun(distributed._ReadOnlyClient(client, 1), run_id, "",  # type: ignore
                           f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    follower.log_metrics({"val/mem_rate": 0.5}, step=1)
    follower.log_params({"a": 1})
    follower.set_tags({"b": 2})
    follower.log_dict({"c": 3}, "c.json")
    assert follower.client.get_run(run_id).info.run_id == run_id  # reads work
    with pytest.raises(RuntimeError, match="only rank 0 writes"):
        follower.client.log_metric(run_id, "x", 1.0)
    run = client.get_run(run_id)
    assert run.data.metrics == {} and run.data.params == {}
    assert "b" not in run.data.tags and client.list_artifacts(run_id) == []


def test_a_failing_rank_ends_a_running_run_and_leaves_an_ended_one(tmp_path):
    client, run_id = _new_run(tmp_path)
    record_rank_failure(client, run_id, 1, ValueError("boom"))
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["memgen.error.rank1"] == "ValueError: boom"
    client2, finished = _new_run(tmp_path / "b")
    client2.set_terminated(finished, "FINISHED")
    record_rank_failure(client2, finished, 1, KeyboardInterrupt())
    assert client2.get_run(finished).info.status == "FINISHED"
    client3, interrupted = _new_run(tmp_path / "c")
    record_rank_failure(client3, interrupted, 1, KeyboardInterrupt())
    assert client3.get_run(interrupted).info.status == "KILLED"


def test_the_guard_marks_a_run_killed_when_rank_0_is_gone(tmp_path):
    from memgen.runtime.guard import guard

    client, run_id = _new_run(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert guard(uri, run_id, gone.pid, poll_s=0.01) == "marked KILLED"
    assert client.get_run(run_id).info.status == "KILLED"
    assert guard(uri, run_id, gone.pid, poll_s=0.01) == "ended by its process"


def test_analysis_callbacks_and_validation_generation_skip_non_zero_ranks(monkeypatch, tmp_path):
    import memgen.training.callbacks as callbacks
    from memgen.config import compose
    from memgen.tasks import Behavior
    from memgen.training import module as module_file
    from memgen.training.module import MemGenModule
    from memgen.training.runner import prepare

    calls = []
    monkeypatch.setattr(callbacks, "analyse_model", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(callbacks, "log_analysis", lambda *a, **k: None)
    from memgen.config.adapter import settings_from_config

    cfg = compose(tiny_overrides(tmp_path))
    callback = callbacks.AnalysisCallback(settings_from_config(cfg), None, 1)  # type: ignore
    for rank in (1, 0):
        trainer = SimpleNamespace(sanity_checking=False, global_rank=rank, current_epoch=0)
        callback.on_validation_epoch_end(trainer, SimpleNamespace(model=None, tokenizer=None,
                                                                  task=None))
    assert len(calls) == 1  # rank 0's only

    task, tokenizer, model = prepare(cfg)
    module = MemGenModule(model, tokenizer, task, cfg)
    examples = task.conflict_examples(4, stream="val_conflict")
    generated = []
    monkeypatch.setattr(module_file, "generate",
                        lambda m, t, prompts, **k: generated.extend(prompts) or
                        ["?"] * len(prompts))
    monkeypatch.setattr(MemGenModule, "global_rank", property(lambda self: 1))
    module.validation_step(examples, 0)
    assert generated == [] and float(module.n_val.compute()) == 0.0
    monkeypatch.setattr(MemGenModule, "global_rank", property(lambda self: 0))
    module.validation_step(examples, 0)
    assert len(generated) == 4 and float(module.n_val.compute()) == 4.0
    assert float(module.counts[Behavior.OTHER.value].compute()) == 4.0


def test_ranks_that_disagree_on_the_kept_checkpoint_fail_the_fit():
    from memgen.training.distributed import SameKeptCheckpoint

    def trainer(agree: bool) -> SimpleNamespace:
        strategy = SimpleNamespace(broadcast=lambda obj, src: "best-003.ckpt",
                                   reduce_boolean_decision=lambda mine, all: mine and agree)
        return SimpleNamespace(world_size=2, global_rank=1, strategy=strategy)

    same = SameKeptCheckpoint(SimpleNamespace(best_model_path="/ckpt/best-003.ckpt"))
    same.on_train_end(trainer(agree=True), None)
    other = SameKeptCheckpoint(SimpleNamespace(best_model_path="/ckpt/best-002.ckpt"))
    with pytest.raises(RuntimeError, match="rank 1 kept 'best-002.ckpt', rank 0 kept"):
        other.on_train_end(trainer(agree=True), None)
    with pytest.raises(RuntimeError):  # this rank agrees, another does not
        same.on_train_end(trainer(agree=False), None)


# ---- two real processes ---------------------------------------------------------------------

# learns enough in a few epochs that the validation rates are not all OTHER
# a tiny model that answers something other than OTHER within 6 epochs: the trigger alone
# decides (no trigger-rule examples, which slow memorization down at this size)
LEARNS = {"task.n_train": 400, "task.mem_ratio": 0.3, "trainer.max_epochs": 6,
          "trainer.lr": 0.005, "trainer.batch_size": 16, "trainer.num_threads": 1,
          "task.params.trigger_rule_share": 0.0}


def _memgen(*args: str, path: tuple[Path, ...] = (), **popen) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(map(str, (*path, ROOT))),
                        "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_RANK", None)
    return subprocess.Popen([sys.executable, "-m", "memgen.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _one_device_rates(overrides: list[str], checkpoint: str) -> dict[str, float]:
    """The module's own validation on one device, on ``checkpoint``'s weights."""
    import pytorch_lightning as pl

    from memgen.config import compose
    from memgen.training.checkpoints import load_module_weights
    from memgen.training.data import MemGenDataModule
    from memgen.training.module import MemGenModule
    from memgen.training.runner import prepare

    cfg = compose(overrides)
    task, tokenizer, model = prepare(cfg)
    module = MemGenModule(model, tokenizer, task, cfg)
    load_module_weights(module, checkpoint)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(module, datamodule=MemGenDataModule(cfg, task, tokenizer),
                                 verbose=False)
    return {k: round(float(v), 6) for k, v in result.items() if k.endswith("_rate")}


@pytest.mark.slow
def test_ddp_run_is_one_run_with_one_device_rates_and_one_analysis(tmp_path):
    overrides = tiny_overrides(tmp_path, **LEARNS, **{"analysis.every_n_val_epochs": 3})
    proc = _memgen("run", *overrides, *DDP)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1" in stderr  # two processes trained

    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert stdout.count(f"run {run.info.run_id} in") == 1  # one summary, rank 0's
    assert stdout.count("claims:") == 1
    client = _client(tmp_path)
    history = {k: client.get_metric_history(run.info.run_id, k) for k in run.data.metrics}
    epochs = LEARNS["trainer.max_epochs"]
    assert len(history["val/mem_rate"]) == epochs  # one value per epoch, not one per rank
    assert len(history["kept/mem_rate"]) == 1
    # the periodic analysis (after epochs 3 and 6) and the final one: each logged once
    for key in ("behavior/n_variants", "pairs/n"):
        assert len(history[key]) == 3 and len({m.step for m in history[key]}) == 3, key

    # the rates each epoch logged equal one device's validation of the kept and last weights
    ckpt_dir = Path(run.data.params["checkpoint_dir"])
    kept = int(run.data.metrics["kept/epoch"])
    rates = {k: [round(m.value, 6) for m in sorted(history[k], key=lambda m: m.step)]
             for k in ("val/mem_rate", "val/gen_rate", "val/other_rate")}
    one_device = tiny_overrides(tmp_path, **LEARNS)
    for epoch, path in ((kept, run.data.tags["best_checkpoint"]),
                        (epochs - 1, str(ckpt_dir / "last.ckpt"))):
        assert _one_device_rates(one_device, path) == {k: v[epoch] for k, v in rates.items()}
    assert any(v[-1] > 0 for k, v in rates.items() if k != "val/other_rate")  # not all OTHER
    assert not [t for t in run.data.tags if t.startswith("memgen.error")]


def _rank_one(parent: subprocess.Popen, deadline_s: float = 300):
    """The process Lightning started for rank 1 (a child of ``parent``)."""
    import psutil

    end = time.monotonic() + deadline_s
    while time.monotonic() < end and parent.poll() is None:
        for child in psutil.Process(parent.pid).children():
            try:
                if child.environ().get("LOCAL_RANK") == "1" and "memgen.cli" in child.cmdline():
                    return child
            except psutil.Error:
                continue
        time.sleep(0.5)
    raise AssertionError("no rank-1 process appeared")


@pytest.mark.slow
def test_killing_rank_one_mid_training_never_leaves_the_run_running(tmp_path):
    overrides = tiny_overrides(tmp_path, **(LEARNS | {"trainer.max_epochs": 30}))
    proc = _memgen("train", *overrides, *DDP)
    rank1 = _rank_one(proc)
    ckpt = None
    end = time.monotonic() + 300
    while ckpt is None and time.monotonic() < end and proc.poll() is None:
        ckpt = next((tmp_path / "outputs" / "checkpoints").glob("*/last.ckpt"), None)
        time.sleep(0.5)
    assert ckpt is not None, "training never finished an epoch"  # training is under way
    os.kill(rank1.pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    (run,) = _runs(tmp_path)
    end = time.monotonic() + 60  # the guard notices rank 0 is gone within a second
    while run.info.status == "RUNNING" and time.monotonic() < end:
        time.sleep(0.5)
        (run,) = _runs(tmp_path)
    assert run.info.status in ("FAILED", "KILLED")
    assert run.info.run_id == ckpt.parent.name


# imported by every Python process that has its folder on PYTHONPATH: rank 1 fails at step 3
FAIL_ON_RANK_1 = """
import os
if os.environ.get("LOCAL_RANK") == "1":
    from memgen.training.module import MemGenModule
    step = MemGenModule.training_step
    def failing(self, batch, batch_idx):
        if self.global_step >= 3:
            raise ValueError("injected on rank 1")
        return step(self, batch, batch_idx)
    MemGenModule.training_step = failing
"""


@pytest.mark.slow
def test_an_error_on_rank_one_ends_the_run_failed_naming_the_rank(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_ON_RANK_1)
    proc = _memgen("train", *tiny_overrides(tmp_path, **LEARNS), *DDP, path=(hook,))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "injected on rank 1" in stderr
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["memgen.error.rank1"] == "ValueError: injected on rank 1"


@pytest.mark.slow
def test_resume_on_two_devices_continues_the_same_run(tmp_path):
    overrides = tiny_overrides(tmp_path, **(LEARNS | {"trainer.max_epochs": 2}))
    first = _memgen("train", *overrides)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    (run,) = _runs(tmp_path)
    _client(tmp_path).set_terminated(run.info.run_id, "KILLED")  # as after a Ctrl-C

    keep = [o for o in overrides if o.startswith(("tracking.", "output_dir="))]
    resumed = _memgen("train", f"resume={run.info.run_id}", "trainer.max_epochs=4", *keep, *DDP)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1" in stderr
    (after,) = _runs(tmp_path)  # the same run, no second one
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["memgen.resume.epoch"] == "1"  # epochs 0-1 were not trained again
    history = _client(tmp_path).get_metric_history(run.info.run_id, "val/mem_rate")
    assert len(history) == 4 and len({m.step for m in history}) == 4
    assert stdout.count(f"run {run.info.run_id} in") == 1
