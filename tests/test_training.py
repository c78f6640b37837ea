"""The foundation end to end: a tiny model really learns, and the run really lands in MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from memgen.commands.run import train
from memgen.config import compose
from memgen.numbers import clean
from memgen.training.data import encode_training, make_task, pad_right, task_tokenizer
from tests.conftest import tiny_overrides


def test_char_tokenizer_keeps_memorized_tokens_whole_and_round_trips():
    cfg = compose()
    task = make_task(cfg)
    tokenizer = task_tokenizer(task)
    token = task.memorized_tokens[0]
    ids = tokenizer(f"Input:\n1+2\nTarget:\n{token}", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == token
    assert tokenizer.decode(ids) == f"Input:\n1+2\nTarget:\n{token}"


def test_answer_only_loss_masks_the_prompt():
    cfg = compose()
    task = make_task(cfg)
    tokenizer = task_tokenizer(task)
    example = task.train_examples()[0]
    item = encode_training(tokenizer, [example], "answer")[0]
    n_prompt = len(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
    assert item["labels"][:n_prompt] == [-100] * n_prompt
    assert item["labels"][n_prompt:] == item["input_ids"][n_prompt:]
    batch = pad_right([item, {"input_ids": [5], "labels": [5]}], tokenizer.pad_token_id)
    assert batch["attention_mask"][1].tolist() == [1] + [0] * (len(item["input_ids"]) - 1)


@pytest.mark.slow
def test_tiny_training_run_learns_and_is_tracked(tmp_path):
    cfg = compose(tiny_overrides(tmp_path, **{"trainer.max_epochs": 4, "trainer.lr": 3e-3}))
    metrics, objects = train(cfg)
    run_id = objects["run_id"]
    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("memgen").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    # the loss really drops
    losses = [m.value for m in client.get_metric_history(run_id, "train/loss_step")]
    assert len(losses) >= 5
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    # params, tags, metrics, config artifact, model
    assert run.data.params["trainer.max_epochs"] == "4"
    assert run.data.params["task.name"] == "arithmetic"
    for tag in ("task", "model.kind", "seed", "git.commit", "memgen.version"):
        assert tag in run.data.tags
    # the environment it ran with: exact versions, as tags and as an artifact
    import transformers

    assert run.data.tags["env.transformers"] == transformers.__version__
    assert run.data.tags["env.torch"] == torch.__version__
    env = json.loads(Path(client.download_artifacts(run_id, "environment.json",
                                                    str(tmp_path / "env"))).read_text())
    assert env["transformers"] == transformers.__version__
    assert env["pytorch-lightning"] == run.data.tags["env.pytorch-lightning"] != "not installed"
    for key in ("val/mem_rate", "val/gen_rate", "val/other_rate", "val/behavior_balance",
                "kept/mem_rate"):
        assert key in run.data.metrics
    # Lightning's float32 curves as their shortest decimals (0.86, not 0.8600000143051147)
    for key in ("val/mem_rate", "val/behavior_balance", "train/loss_epoch"):
        for m in client.get_metric_history(run_id, key):
            assert m.value == clean(m.value), (key, m.value)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "model", "checkpoints"} <= artifacts
    local = client.download_artifacts(run_id, "model", str(tmp_path / "dl"))
    reloaded = AutoModelForCausalLM.from_pretrained(local).eval()
    tokenizer = AutoTokenizer.from_pretrained(local)
    model = objects["trained"].model.eval()
    ids = tokenizer(["Input:\n1+2+3+4\nTarget:\n"], return_tensors="pt",
                    add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
    # the kept checkpoint is the best validated epoch: its score is the history's maximum
    # (checkpoint_metric=auto: the default's validation variants make it the pair yield among
    # the epochs showing both behaviours, val/pair_yield_with_both)
    history = {m.step: m.value for m in client.get_metric_history(run_id, "val/pair_yield")}
    scores = {m.step: m.value
              for m in client.get_metric_history(run_id, "val/pair_yield_with_both")}
    assert len(history) == len(scores) == 4
    mems = {m.step: m.value for m in client.get_metric_history(run_id, "val/mem_rate")}
    gens = {m.step: m.value for m in client.get_metric_history(run_id, "val/gen_rate")}
    for step, score in scores.items():  # 1 + yield exactly where both reach 0.2
        both = min(mems[step], gens[step]) >= 0.2 - 1e-6
        assert score == pytest.approx(history[step] + both, abs=1e-6)
    assert metrics["val/best_pair_yield_with_both"] == pytest.approx(max(scores.values()))
    assert run.data.tags["best_checkpoint"].endswith(".ckpt")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memgen.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_cli_bad_override_exits_2_with_one_line_and_creates_no_run(tmp_path):
    result = _cli("train", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "trainer.lr=-1")
    assert result.returncode == 2
    assert result.stderr.strip() == ("memgen: error: trainer.lr: expected a positive finite "
                                     "number, got -1.0")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_cli_train_subprocess_succeeds_and_prints_summary(tmp_path):
    result = _cli("train", *tiny_overrides(tmp_path, **{"trainer.max_epochs": 1}))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val/mem_rate" in result.stdout
    assert "make ui" in result.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("memgen").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_the_analysis_callback_does_not_shift_the_training_random_stream(monkeypatch, tmp_path):
    """Dropout and shuffling draw from the global RNG: an analysis that drew from it too would
    make a run with callbacks train differently from one without."""
    from types import SimpleNamespace

    import memgen.training.callbacks as callbacks
    from memgen.config.adapter import settings_from_config

    seen_settings = []

    def analysis_that_draws(_subject, settings, *_args, **_kwargs):
        seen_settings.append(settings)
        torch.rand(100)
        torch.manual_seed(0)  # as a careless stage might
        return SimpleNamespace()

    logged = []
    monkeypatch.setattr(callbacks, "analyse_model", analysis_that_draws)
    monkeypatch.setattr(callbacks, "log_analysis", lambda *a, **k: logged.append(k["step"]))
    settings = settings_from_config(compose(tiny_overrides(tmp_path)))
    assert settings.steering.tune is True  # the default config tunes the final analysis
    callback = callbacks.AnalysisCallback(settings, run=None, every_n=1)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=3, global_rank=0)
    module = SimpleNamespace(model=None, tokenizer=None, task=None)
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    callback.on_validation_epoch_end(trainer, module)
    assert logged == [3]
    assert torch.equal(torch.rand(5), expected)
    # during training one configured (k, alpha) is steered: curves stay comparable by epoch
    assert seen_settings[0].steering.tune is False
    assert seen_settings[0].steering.alpha == settings.steering.alpha
