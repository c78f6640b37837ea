"""Bad input fails before a run exists: exit 2, one line naming the key or file, no traceback,
no new row in the store. Also store damage, stale runs and param names MLflow would reject."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from memgen.cli import main
from memgen.tracking.run import flatten, param_name
from memgen.tracking.stale import clean
from tests.conftest import tiny_overrides

Case = tuple[str, Callable[[Path], list[str]], str]


def _store(tmp: Path) -> str:
    return f"sqlite:///{tmp}/mlruns/mlflow.db"


def _count_runs(uri: str) -> int:
    db = Path(uri[len("sqlite:///"):])
    if not db.exists() or db.stat().st_size == 0:
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from runs").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0  # a damaged store the case itself made


def _finished_run(tmp: Path) -> list[str]:
    client = MlflowClient(_store(tmp.parent))  # the shared store
    found = client.get_experiment_by_name("memgen")
    exp = found.experiment_id if found else client.create_experiment("memgen")
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id, "FINISHED")
    return [f"resume={run.info.run_id}"]


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _damaged(tmp: Path, data: bytes) -> list[str]:
    (tmp / "mlruns").mkdir(exist_ok=True)
    _file(tmp / "mlruns", "mlflow.db", data)
    return []


def _truncated(tmp: Path) -> list[str]:
    MlflowClient(_store(tmp)).search_experiments()  # a real store ...
    db = tmp / "mlruns" / "mlflow.db"
    db.write_bytes(db.read_bytes()[:20000])  # ... cut short
    return []


def _orphaned_artifacts(tmp: Path) -> list[str]:
    (tmp / "mlruns" / "artifacts" / "1").mkdir(parents=True)
    return []


def _garbage_lora_base(tmp: Path) -> list[str]:
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp / "base"
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(base)
    (base / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    return ["model=lora", f"model.name_or_path={base}"]


def _non_utf8_task_file(tmp: Path) -> list[str]:
    path = _file(tmp, "records.jsonl", b'{"input": "caf\xe9", "output": "x"}\n')
    return ["task=files", f"task.params.path={path}"]


def _unwritable_output(tmp: Path) -> list[str]:
    return [f"output_dir={_file(tmp, 'a_file', b'')}/sub"]


def _plain(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(overrides)


CASES: list[Case] = [
    ("experiment typo", _plain("experiment=quikc"), "experiment: no experiment 'quikc'"),
    ("experiment typo, appended", _plain("+experiment=quikc"), "quikc"),
    ("override without key", _plain("=3"), "override '=3' has no key"),
    ("gpu on a cpu machine", _plain("trainer.accelerator=gpu"), "trainer.accelerator"),
    ("unknown accelerator", _plain("trainer.accelerator=bogus"), "trainer.accelerator"),
    ("unknown precision", _plain("trainer.precision=bogus"), "trainer.precision"),
    ("unknown strategy", _plain("trainer.strategy=bogus"), "trainer.strategy"),
    ("devices not a count", _plain("trainer.devices=abc"), "trainer.devices"),
    ("zero devices", _plain("trainer.devices=0"), "trainer.devices"),
    ("nan weight decay", _plain("trainer.weight_decay=nan"), "trainer.weight_decay"),
    ("negative weight decay", _plain("trainer.weight_decay=-1"), "trainer.weight_decay"),
    ("infinite lr", _plain("trainer.lr=inf"), "trainer.lr"),
    ("nan gradient clip", _plain("trainer.gradient_clip_val=nan"), "trainer.gradient_clip_val"),
    ("nan mem ratio", _plain("task.mem_ratio=nan"), "task.mem_ratio"),
    ("nan in a list", _plain("analysis.steering.tune_alpha=[1,nan]"),
     "analysis.steering.tune_alpha"),
    ("negative seed", _plain("seed=-1"), "seed: expected an integer in"),
    ("seed too large", _plain("seed=4294967296"), "seed: expected an integer in"),
    ("negative sampler seed", _plain("sweep.sampler_seed=-3"), "sweep.sampler_seed"),
    ("negative consistency seed", _plain("analysis.consistency_seeds=[-1]"),
     "analysis.consistency_seeds"),
    ("unwritable output_dir", _unwritable_output, "output_dir: cannot create"),
    ("garbage LoRA base weights", _garbage_lora_base, "model.name_or_path"),
    ("non-UTF-8 task file", _non_utf8_task_file, "records.jsonl"),
    ("resume a FINISHED run", _finished_run, "is FINISHED"),
    ("garbage mlflow.db", lambda tmp: _damaged(tmp, b"not a database at all" * 50),
     "mlflow.db is not an SQLite database"),
    ("truncated mlflow.db", _truncated, "mlflow.db is damaged"),
    ("mlflow.db is a folder", lambda tmp: (tmp / "mlruns" / "mlflow.db").mkdir(parents=True)
     or [], "mlflow.db is not a file"),
    ("mlflow.db missing next to artifacts", _orphaned_artifacts, "mlflow.db is missing"),
    ("file store uri", _plain("tracking.uri=file:///tmp/nowhere"), "file store is not supported"),
    ("unsupported store scheme", _plain("tracking.uri=ftp://host/x"), "unsupported scheme"),
    ("unknown key", _plain("trainer.nope=1"), "trainer.nope"),
    ("wrong type", _plain("trainer.max_epochs=abc"), "trainer.max_epochs"),
    ("unknown group option", _plain("task=nope"), "task/nope"),
    ("top_k above the neuron count", _plain("analysis.top_k=1000000"), "analysis.top_k"),
    ("missing run id", _plain("resume=0123456789abcdef"), "0123456789abcdef"),
]


def test_bad_inputs_exit_2_naming_the_key_or_file_and_write_nothing(tmp_path, capsys):
    report = []
    shared = _store(tmp_path)  # one store (set up once) for the cases that do not damage it
    for i, (name, make, expected) in enumerate(CASES):
        case = tmp_path / f"case{i}"
        case.mkdir()
        extra = make(case)
        uri = _store(case) if "mlflow.db" in name else shared
        overrides = [o for o in tiny_overrides(case) if not o.startswith("tracking.uri=")]
        if not any(o.startswith("tracking.uri=") for o in extra):
            overrides.append(f"tracking.uri={uri}")
        rows = _count_runs(uri)
        capsys.readouterr()
        code = main(["train", *overrides, "trainer.max_epochs=1", *extra])
        captured = capsys.readouterr()
        err = captured.err.strip()
        report.append({"input": name, "message": err})
        assert code == 2, (name, err)
        assert err.startswith("memgen: error: ") and "\n" not in err, (name, err)
        assert expected in err, (name, err)
        assert "Traceback" not in captured.err + captured.out, name
        assert _count_runs(uri) == rows, name
    assert len(report) >= 30
    (tmp_path / "bad_inputs.json").write_text(json.dumps(report, indent=1))


def test_read_only_store_is_named(tmp_path, monkeypatch, capsys):
    """A read-only mlflow.db (simulated: the suite may run as root, who can write anyway)."""
    import memgen.tracking.store as store

    uri = _store(tmp_path)
    MlflowClient(uri).search_experiments()
    db = str(tmp_path / "mlruns" / "mlflow.db")
    real = store.os.access
    monkeypatch.setattr(store.os, "access",
                        lambda path, mode: False if str(path) == db else real(path, mode))
    assert main(["train", f"tracking.uri={uri}", f"output_dir={tmp_path}/o"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"memgen: error: tracking.uri: {db} is read-only; make it writable " \
                  f"(chmod u+w) or point tracking.uri elsewhere"


def test_first_run_on_an_empty_mlruns_creates_the_store(tmp_path):
    from memgen.config import compose
    from memgen.tracking.store import check_store

    (tmp_path / "mlruns").mkdir()
    check_store(compose([f"tracking.uri={_store(tmp_path)}"]))
    assert (tmp_path / "mlruns" / "mlflow.db").stat().st_size > 0


def test_runs_clean_marks_runs_whose_process_is_gone_killed(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    uri = _store(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("memgen")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    made = {
        "gone": {"memgen.host": host, "memgen.pid": gone},
        "alive": {"memgen.host": host, "memgen.pid": "1"},
        "elsewhere": {"memgen.host": "another-host", "memgen.pid": gone},
        "unknown": {},
    }
    ids = {name: client.create_run(exp, tags=tags).info.run_id for name, tags in made.items()}
    assert main(["runs", "list", f"tracking.uri={uri}"]) == 0
    assert client.get_run(ids["gone"]).info.status == "RUNNING"  # list changes nothing
    assert main(["runs", "clean", f"tracking.uri={uri}"]) == 0
    out = capsys.readouterr().out
    assert f"{ids['gone']}" in out and "marked KILLED" in out
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"gone": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING",
                      "unknown": "RUNNING"}
    assert [s.verdict for s in clean(client)] == ["alive", "elsewhere", "unknown"] or \
        sorted(s.verdict for s in clean(client)) == ["alive", "elsewhere", "unknown"]


def test_resume_of_a_running_run_that_is_alive_is_refused(tmp_path, capsys):
    import os
    import socket

    uri = _store(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("memgen")
    run = client.create_run(exp, tags={"memgen.host": socket.gethostname(),
                                       "memgen.pid": str(os.getppid())})
    assert main(["train", f"resume={run.info.run_id}", f"tracking.uri={uri}"]) == 2
    assert "is still running" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "expected"), [
    ("task.params.triggers.2+3", "task.params.triggers.2_3"),
    ("task.params.triggers.a*b'c", "task.params.triggers.a_b_c"),
    ("trainer.lr", "trainer.lr"),
])
def test_param_names_mlflow_would_reject_are_sanitized(key, expected):
    assert param_name(key) == expected


def test_flatten_keeps_colliding_sanitized_names_apart():
    from omegaconf import OmegaConf

    flat = flatten(OmegaConf.create({"t": {"a+b": 1, "a*b": 2}}))
    assert flat == {"t.a_b": 1, "t.a_b_2": 2}


def test_sweep_over_an_emptied_space_writes_nothing(tmp_path, capsys):
    uri = _store(tmp_path)
    code = main(["sweep", "sweep=training", f"tracking.uri={uri}", f"output_dir={tmp_path}/o",
                 "~sweep.space.model.n_embd", "~sweep.space.model.n_layer",
                 "~sweep.space.trainer.lr"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "sweep.space" in err and "\n" not in err, err
    assert _count_runs(uri) == 0
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_steering_sweep_on_a_model_run_without_pairs_writes_nothing(tmp_path, capsys):
    from omegaconf import OmegaConf

    from memgen.config import compose

    uri = _store(tmp_path)
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("memgen"), tags={"memgen.command": "run"})
    client.log_text(run.info.run_id, OmegaConf.to_yaml(compose()), "config.yaml")
    client.log_metric(run.info.run_id, "pairs/n", 0)
    client.set_terminated(run.info.run_id, "FINISHED")
    code = main(["sweep", "sweep=steering", f"sweep.run_id={run.info.run_id}",
                 f"tracking.uri={uri}", f"output_dir={tmp_path}/o"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no MEM/GEN pairs" in err and "\n" not in err, err
    assert _count_runs(uri) == 1
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


@pytest.mark.parametrize("command", ["sweep", "replicate"])
def test_sweep_and_replicate_on_several_devices_are_refused_up_front(tmp_path, capsys, command):
    """Lightning's launcher would re-run the whole sweep/replicate for rank 1: refused, exit 2,
    nothing written."""
    uri = _store(tmp_path)
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("tracking.uri=")]
    code = main([command, *overrides, f"tracking.uri={uri}", "trainer.accelerator=cpu",
                 "trainer.devices=2", "trainer.strategy=ddp"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("memgen: error: trainer.devices: memgen " + command), err
    assert "would start 2" in err and "\n" not in err
    assert _count_runs(uri) == 0
