"""The GPU paths CI cannot run: ``trainer=gpu`` (bf16) and ``model=lora_llama32``.

Skipped without CUDA. On a machine with a GPU: ``make test ARGS="-m gpu"``. The Llama is a tiny
one this module saves itself, in the shape of the paper's config (q/v LoRA adapters); nothing
is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from memgen.config import compose
from tests.conftest import tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _finished(cfg, run_id: str):
    run = MlflowClient(cfg.tracking.uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    return run


def test_gpu_trainer_runs_the_whole_job_in_bf16_on_the_gpu(tmp_path):
    from memgen.commands.run import run

    cfg = compose(["trainer=gpu", *tiny_overrides(tmp_path)])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    torch.cuda.reset_peak_memory_stats()
    metrics, objects = run(cfg)
    assert torch.cuda.max_memory_allocated() > 0  # Lightning trained on the GPU
    logged = _finished(cfg, objects["run_id"])
    assert logged.data.params["trainer.precision"] == "bf16-mixed"
    for key in ("train/loss_epoch", "val/behavior_balance", "kept/mem_rate", "pairs/n"):
        assert key in logged.data.metrics and key in metrics
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))


def test_lora_llama32_config_fine_tunes_a_local_llama_on_the_gpu(tmp_path):
    from memgen.commands.run import train
    from memgen.training.data import make_task, task_tokenizer
    from memgen.training.lora import is_lora_param
    from tests.test_lora import TINY_TASK, TINY_TRAIN, tiny_base, tiny_cfg

    base = tmp_path / "tiny-llama"
    tokenizer = task_tokenizer(make_task(tiny_cfg(tmp_path)))
    tiny_base("llama", len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    cfg = compose([*TINY_TASK, *TINY_TRAIN, f"output_dir={tmp_path}",
                   f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "model=lora_llama32",
                   f"model.name_or_path={base}", "trainer=gpu", "trainer.max_epochs=2"])
    assert list(cfg.model.lora.target_modules) == ["q_proj", "v_proj"]  # the paper's adapters
    torch.cuda.reset_peak_memory_stats()
    metrics, objects = train(cfg)
    assert torch.cuda.max_memory_allocated() > 0
    logged = _finished(cfg, objects["run_id"])
    assert logged.data.tags["model.kind"] == "lora"
    assert logged.data.metrics["model/params_trainable"] < logged.data.metrics["model/params_total"]
    model = objects["trained"].model
    assert all(is_lora_param(n) for n, p in model.named_parameters() if p.requires_grad)
    files = {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(objects["run_id"],
                                                                           "model")}
    assert "model/adapter_config.json" in files
    assert Path(cfg.output_dir, "checkpoints", objects["run_id"]).is_dir()
