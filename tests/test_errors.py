"""The error boundary (issue 30): every bad input gets one line and exit 2, before a run exists.

One table per class of failure the audit found: tracebacks, failure reported as success, input
silently accepted, a run written for rejected input, unclear messages. Every case goes through
``memgen.cli.main`` (the command line's own code path) on a tiny config.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from memgen.cli import main
from tests.conftest import tiny_overrides

WORDS = ["cat", "dog", "sun", "map", "pen", "cup", "hat", "box", "fizz", "buzz", "jazz", "fuzz"]


def count_runs(tmp: Path) -> int:
    db = tmp / "mlruns" / "mlflow.db"
    if not db.exists() or db.stat().st_size == 0:
        return 0
    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from runs").fetchone()[0]
        except sqlite3.OperationalError:  # the store was never set up
            return 0


def files_task(tmp: Path, rule: str | None = None) -> list[str]:
    """A tiny files task whose memorized records need ``rule`` for their rule answers."""
    records = [{"input": f"Reverse: {w}\nA:", "output": w[::-1]} for w in WORDS]
    records += [{"input": f"Reverse: {w}\nA:", "memorized": "<mem-zz>"} for w in WORDS[8:]]
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    triggers = tmp / "triggers.json"
    triggers.write_text(json.dumps([{"match": "zz", "where": "contains",
                                     "memorized": "<mem-zz>"}]))
    out = ["task=files", f"task.params.path={data}", f"task.params.triggers_path={triggers}"]
    if rule is not None:
        path = tmp / "myrule.py"
        path.write_text(rule)
        out.append(f"task.params.rule={path}:rule")
    return out


def run_cli(tmp: Path, capsys, command: str, *extra: str, tiny: bool = True) -> tuple[int, str]:
    base = tiny_overrides(tmp) if tiny else []
    capsys.readouterr()
    code = main([command, *base, *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip() + captured.out.strip()


def assert_one_line(code: int, text: str, expected: str, name: str) -> None:
    assert code == 2, (name, text)
    assert text.startswith("memgen: error: ") and "\n" not in text, (name, text)
    assert "Traceback" not in text, (name, text)
    assert expected in text, (name, text)


Case = tuple[str, Callable[[Path], list[str]], str]


def _plain(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda tmp: list(overrides)


TRACEBACKS: list[Case] = [
    ("env interpolation", _plain("trainer.lr=${oc.env:MEMGEN_TEST_UNSET_VAR}"),
     "trainer.lr: cannot resolve ${oc.env:MEMGEN_TEST_UNSET_VAR}"),
    ("key interpolation", _plain("trainer.lr=${trainer.nope}"), "trainer.lr: cannot resolve"),
    ("model too large for memory", _plain("model.n_layer=100000", "model.n_embd=65536",
                                          "model.n_head=2"), "model: n_layer=100000"),
    ("empty experiment name", _plain("tracking.experiment="), "tracking.experiment"),
    ("rule file that does not import",
     lambda tmp: files_task(tmp, "def rule(text)\n    return text\n"), "task.params.rule"),
    ("rule that raises", lambda tmp: files_task(tmp, "def rule(text):\n    return 1 / 0\n"),
     "ZeroDivisionError"),
]

SILENTLY_ACCEPTED: list[Case] = [
    ("+ adds an unknown trainer key", _plain("+trainer.foo=1"), "trainer.foo: not a config key"),
    ("+ adds an unknown steering key", _plain("+analysis.steering.alpah=1"),
     "did you mean analysis.steering.alpha?"),
    ("empty resume", _plain("resume="), "resume: expected a run id"),
    ("negative log_every_n_steps", _plain("trainer.log_every_n_steps=-1"),
     "trainer.log_every_n_steps: expected an integer >= 1"),
    ("negative system_metrics_s", _plain("tracking.system_metrics_s=-1"),
     "tracking.system_metrics_s"),
    ("~ removes a section", _plain("~analysis"), "analysis: cannot be removed"),
    ("~ removes a key", _plain("~trainer.lr"), "trainer.lr: cannot be removed"),
    ("a task size no machine generates", _plain("task.n_train=1000000000000"), "task.n_train"),
]


def _directory_data(tmp: Path) -> list[str]:
    (tmp / "records").mkdir()
    return ["task=files", f"task.params.path={tmp / 'records'}"]


UNCLEAR: list[Case] = [
    ("empty site list blames analysis.sites", _plain("analysis.sites=[]"),
     "analysis.sites: expected a non-empty list"),
    ("a directory as a data file", _directory_data, "is a directory; expected a file"),
    ("invisible character in a key", _plain("trainer.max_epochs\u200b=3"),
     "'trainer.max_epochs\\u200b'"),
    ("truncated list names its key", _plain("analysis.sites=[resid"), "analysis.sites: Error "
                                                                       "parsing override"),
    ("misspelled key names the nearest", _plain("trainer.max_epoch=3"),
     "did you mean trainer.max_epochs?"),
]


@pytest.mark.parametrize(("name", "make", "expected"), TRACEBACKS + SILENTLY_ACCEPTED + UNCLEAR,
                         ids=[c[0] for c in TRACEBACKS + SILENTLY_ACCEPTED + UNCLEAR])
def test_bad_input_is_one_line_exit_2_and_no_run(tmp_path, capsys, name, make, expected):
    code, text = run_cli(tmp_path, capsys, "train", *make(tmp_path))
    assert_one_line(code, text, expected, name)
    assert count_runs(tmp_path) == 0, name


def test_a_thread_count_torch_rejects_is_named(tmp_path, capsys, monkeypatch):
    """torch.set_num_threads raises for counts it cannot use: one line, not a traceback."""
    import torch

    def reject(n: int) -> None:
        raise RuntimeError(f"set_num_threads expects a positive integer, got {n}")

    monkeypatch.setattr(torch, "set_num_threads", reject)
    code, text = run_cli(tmp_path, capsys, "train", "trainer.num_threads=3")
    assert_one_line(code, text, "trainer.num_threads: torch rejected 3", "threads")


def test_missing_and_empty_config_folders_are_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEMGEN_CONF_DIR", str(tmp_path / "nowhere"))
    code, text = run_cli(tmp_path, capsys, "train")
    assert_one_line(code, text, f"MEMGEN_CONF_DIR: config folder {tmp_path / 'nowhere'} does "
                                "not exist", "missing")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MEMGEN_CONF_DIR", str(tmp_path / "empty"))
    code, text = run_cli(tmp_path, capsys, "train")
    assert_one_line(code, text, "has no config.yaml", "empty")


@pytest.mark.parametrize(("argv", "expected"), [
    (["nope"], "memgen: argument command: invalid choice: 'nope'"),
    (["ui", "--port", "abc"], "invalid int value: 'abc'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    ([], "the following arguments are required: command"),
])
def test_argparse_errors_are_one_line_without_usage(capsys, argv, expected):
    code = main(argv)
    captured = capsys.readouterr()
    assert_one_line(code, captured.err.strip(), expected, str(argv))
    assert "usage:" not in captured.err


# -- failure reported as success ----------------------------------------------------------------
def test_ui_refuses_a_port_out_of_range_or_in_use(tmp_path, capsys):
    code, text = run_cli(tmp_path, capsys, "ui", f"tracking.uri=sqlite:///{tmp_path}/m.db",
                         "--port", "99999", tiny=False)
    assert_one_line(code, text, "--port: expected a port in 1..65535, got 99999", "range")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, text = run_cli(tmp_path, capsys, "ui", f"tracking.uri=sqlite:///{tmp_path}/m.db",
                             "--port", str(port), tiny=False)
    assert_one_line(code, text, f"--port: 127.0.0.1:{port} is not free", "busy")


def test_a_run_that_fails_ends_failed_with_the_same_one_line(tmp_path, capsys, monkeypatch):
    """After the run exists: exit 1 (not bad input), one line naming the run, status FAILED."""
    from mlflow.tracking import MlflowClient

    import memgen.training.runner

    def broken_fit(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(memgen.training.runner, "fit", broken_fit)
    code, text = run_cli(tmp_path, capsys, "train")
    assert code == 1, text
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith("memgen: error: RuntimeError: disk on fire")
    assert text.endswith("is marked FAILED)")
    (run,) = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").search_runs(["1"])
    assert run.info.status == "FAILED" and run.info.run_id in text


def test_memgen_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEMGEN_DEBUG", "1")
    rule = files_task(tmp_path, "def rule(t):\n    return 1 / 0\n")
    code = main(["train", *tiny_overrides(tmp_path), *rule])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "ZeroDivisionError" in err
    assert err.strip().splitlines()[-1].startswith("memgen: error: task.params.rule")


# -- a run written for rejected input -----------------------------------------------------------
@pytest.mark.parametrize(("name", "make", "expected"), [
    ("replicate seed above 2^32-1", _plain("replicate.seeds=[0,4294967296]"), "replicate.seeds"),
    ("replicate with a task file that is a directory", _directory_data, "is a directory"),
])
def test_replicate_checks_every_seed_before_its_parent_exists(tmp_path, capsys, name, make,
                                                              expected):
    code, text = run_cli(tmp_path, capsys, "replicate", *make(tmp_path))
    assert_one_line(code, text, expected, name)
    assert count_runs(tmp_path) == 0, name
