"""Reliable runs: bad input fails fast and writes nothing; crashes lose nothing; resume continues
the same run; determinism; concurrent writers to one store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from memgen.analysis.timing import is_timing
from memgen.cli import main
from memgen.commands.run import train
from memgen.config import compose
from memgen.errors import NonFiniteLossError
from memgen.tracking.run import tracked_run
from memgen.training.runner import fit, prepare
from tests.conftest import tiny_overrides


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("memgen")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _bad_inputs(tmp: Path) -> list[tuple[str, list[str], str]]:
    malformed = tmp / "bad.jsonl"
    malformed.write_text('{"input": "a", "output": "b"}\n{"input": 3}\n')
    a_file = tmp / "not_a_dir"
    a_file.write_text("")
    return [
        ("unknown group option", ["task=nope"], "Could not find 'task/nope'"),
        ("unknown key", ["trainer.nope=1"], "trainer.nope"),
        ("malformed override", ["trainer.max_epochs=="], "Error parsing override"),
        ("wrong type", ["trainer.max_epochs=abc"], "trainer.max_epochs"),
        ("negative size", ["task.n_train=-5"], "task.n_train: expected a positive integer"),
        ("fraction out of range", ["analysis.top_fraction=2"], "analysis.top_fraction"),
        ("non-finite alpha", ["analysis.steering.alpha=nan"], "analysis.steering.alpha"),
        ("negative alpha", ["analysis.steering.alpha=-1"], "analysis.steering.alpha"),
        ("unknown task name", ["task.name=bogus"], "task.name: expected one of"),
        ("top_k above the neuron count", ["analysis.top_k=1000000"],
         "analysis.top_k: expected at most the"),
        ("steering top_k above the neuron count", ["analysis.steering.top_k=1000000"],
         "analysis.steering.top_k"),
        ("unknown site", ["analysis.sites=[resid.99]"], "analysis.sites: site 'resid.99'"),
        ("steering site not analysed", ["analysis.sites=[resid]",
                                        "analysis.steering.sites=mlp.1",
                                        "analysis.steering.tune_sites=[]"],
         "analysis.steering.sites: 'mlp.1' is not an analysed site"),
        ("steering sites the site candidates would ignore", ["analysis.steering.sites=resid"],
         "analysis.steering.sites: expected the default 'mlp' while "
         "analysis.steering.tune_sites=['mlp', 'resid'] picks the sites per direction (to "
         "steer these sites alone add analysis.steering.tune_sites=[])"),
        ("duplicate consistency seeds", ["analysis.consistency_seeds=[1,1]"],
         "analysis.consistency_seeds: expected distinct integers"),
        ("missing run id", ["resume=0123456789abcdef"], "0123456789abcdef"),
        ("missing model directory", ["model=lora", f"model.name_or_path={tmp}/no_model"],
         "model.name_or_path"),
        ("malformed task file", ["task=files", f"task.params.path={malformed}"],
         "line 2"),
        ("unwritable mlruns", [f"tracking.uri=sqlite:///{a_file}/mlflow.db"],
         "tracking.uri: cannot create"),
        ("unreachable tracking server", [f"tracking.uri=http://127.0.0.1:{_free_port()}"],
         "is not reachable"),
    ]


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    uri = f"sqlite:///{store}/mlflow.db"
    report = []
    for name, overrides, expected in _bad_inputs(tmp_path):
        args = ["train", f"tracking.uri={uri}", "trainer.max_epochs=1", *overrides]
        started = time.monotonic()
        code = main(args)
        elapsed = time.monotonic() - started
        err = capsys.readouterr().err.strip()
        report.append({"input": name, "overrides": overrides, "message": err})
        assert code == 2, (name, err)
        assert err.startswith("memgen: error: ") and "\n" not in err, (name, err)
        assert expected in err, (name, err)
        assert elapsed < 30, (name, elapsed)
        assert not store.exists() or not _runs(uri), name
    assert len(report) >= 15
    (tmp_path / "bad_inputs.json").write_text(json.dumps(report, indent=1))


def test_unreachable_server_fails_within_seconds(tmp_path, capsys):
    started = time.monotonic()
    # a non-routable loopback port: refused at once; the timeout bounds a silent host
    code = main(["train", f"tracking.uri=http://127.0.0.1:{_free_port()}"])
    assert code == 2
    assert time.monotonic() - started < 10
    assert "not reachable" in capsys.readouterr().err


@pytest.mark.slow
def test_exception_mid_training_marks_failed_and_keeps_metrics_and_checkpoint(tmp_path,
                                                                               monkeypatch):
    from memgen.training.module import MemGenModule

    original = MemGenModule.training_step

    def exploding_step(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 2:
            raise RuntimeError("disk on fire")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(MemGenModule, "training_step", exploding_step)
    cfg = compose(tiny_overrides(tmp_path, **{"trainer.max_epochs": 3}))
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(cfg)
    (run,) = _runs(cfg.tracking.uri)
    assert run.info.status == "FAILED"
    assert "disk on fire" in run.data.tags["memgen.error"]
    client = MlflowClient(cfg.tracking.uri)
    assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) >= 7
    assert "val/mem_rate" in run.data.metrics  # epoch 0 validated before the crash
    ckpt_dir = Path(run.data.params["checkpoint_dir"])
    assert {"last.ckpt", "on_exception.ckpt"} <= {p.name for p in ckpt_dir.glob("*.ckpt")}
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/on_exception.ckpt" in logged


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message_and_fails_the_run(tmp_path):
    cfg = compose(tiny_overrides(tmp_path))
    task, tokenizer, model = prepare(cfg)
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="training loss is nan"):
        with tracked_run(cfg, "train") as run:
            fit(cfg, run, task, tokenizer, model)
    (found,) = _runs(cfg.tracking.uri)
    assert found.info.status == "FAILED"
    assert "NonFiniteLossError" in found.data.tags["memgen.error"]


def _train_process(tmp_path: Path, *extra: str) -> subprocess.Popen:
    overrides = tiny_overrides(tmp_path, **{"trainer.max_epochs": 200})
    return subprocess.Popen([sys.executable, "-m", "memgen.cli", "train", *overrides, *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})


def _wait_for_epochs(uri: str, epochs: int, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            runs = _runs(uri)
        except Exception:  # noqa: BLE001 - the store may not exist yet
            runs = []
        if runs:
            history = MlflowClient(uri).get_metric_history(runs[0].info.run_id, "val/mem_rate")
            if len(history) >= epochs:
                return runs[0].info.run_id
        time.sleep(1)
    raise TimeoutError("training did not log in time")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_kills_the_run_and_resume_continues_it(tmp_path, sig):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    process = _train_process(tmp_path)
    try:
        run_id = _wait_for_epochs(uri, 2)
        process.send_signal(sig)
        process.wait(timeout=120)
    finally:
        process.kill()
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    steps_before = [m.step for m in client.get_metric_history(run_id, "train/loss_step")]
    assert steps_before
    assert list(Path(run.data.params["checkpoint_dir"]).glob("*.ckpt"))
    if sig != signal.SIGINT:
        return
    # resume into the same run: the metric steps continue
    epochs_done = len(client.get_metric_history(run_id, "val/mem_rate"))
    code = main(["train", f"resume={run_id}", f"tracking.uri={uri}",
                 f"trainer.max_epochs={epochs_done + 2}"])  # the interrupt may land mid-epoch
    assert code == 0
    assert [r.info.run_id for r in _runs(uri)] == [run_id]
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    steps_after = [m.step for m in client.get_metric_history(run_id, "train/loss_step")]
    assert max(steps_after) > max(steps_before)
    assert len(client.get_metric_history(run_id, "val/mem_rate")) > epochs_done


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics_and_weights(tmp_path):
    results = []
    for name in ("a", "b"):
        cfg = compose(tiny_overrides(tmp_path / name))
        metrics, objects = train(cfg)
        client = MlflowClient(cfg.tracking.uri)
        history = [m.value for m in client.get_metric_history(objects["run_id"],
                                                              "train/loss_step")]
        state = objects["trained"].model.state_dict()
        results.append((metrics, history, state))
    (m_a, h_a, s_a), (m_b, h_b, s_b) = results
    assert {k: v for k, v in m_a.items() if not is_timing(k)} == {
        k: v for k, v in m_b.items() if not is_timing(k)}  # stage times vary; results do not
    assert any(is_timing(k) for k in m_a)
    assert h_a == h_b
    assert all(torch.equal(s_a[k], s_b[k]) for k in s_a)


@pytest.mark.slow
def test_four_processes_share_one_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    overrides = tiny_overrides(tmp_path, **{"trainer.max_epochs": 1, "trainer.num_threads": 1})
    processes = [subprocess.Popen([sys.executable, "-m", "memgen.cli", "train", *overrides,
                                   f"seed={seed}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for seed in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [e[-1500:] for e in errors]
    runs = _runs(uri)
    assert len(runs) == 4
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2", "3"]
    client = MlflowClient(uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"val/mem_rate", "kept/gen_rate", "train/loss_epoch"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "train/loss_step")) >= 7
        assert "model" in {a.path for a in client.list_artifacts(run.info.run_id)}
