"""Reopening a finished run: its resolved config, model, tokenizer and task.

A sweep over steering settings, ``memgen analyse`` or a notebook starts from an MLflow run id
instead of retraining. Weights come from the ``model`` artifact (safetensors via
``from_pretrained``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from memgen.errors import ConfigError
from memgen.tasks import Task
from memgen.tracking.load import run_config
from memgen.training.data import chat_task, make_task


@dataclass
class LoadedRun:
    """A trained model and everything needed to analyse it again."""

    run_id: str
    cfg: DictConfig
    model: Any
    tokenizer: Any
    task: Task


def device_of(cfg: DictConfig) -> str:
    """Where a reopened model runs: CUDA when the config asks for a GPU and one is present."""
    import torch  # noqa: PLC0415

    wants_gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto")
    return "cuda" if wants_gpu and torch.cuda.is_available() else "cpu"


def load_run(client: MlflowClient, run_id: str, device: str = "cpu") -> LoadedRun:
    """Config, model (``model`` artifact), tokenizer and task of a finished run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    cfg = run_config(client, run_id)
    # the weights are read into memory, so the downloaded copy is removed right after
    with tempfile.TemporaryDirectory(prefix=f"memgen-{run_id[:8]}-") as cache:
        try:
            local = client.download_artifacts(run_id, "model", cache)
        except (mlflow.exceptions.MlflowException, OSError):
            raise ConfigError(f"run id '{run_id}': it has no 'model' artifact "
                              f"(was it trained with tracking.log_model=false?)") from None
        tokenizer = AutoTokenizer.from_pretrained(local)
        if (Path(local) / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM  # noqa: PLC0415

            model = AutoPeftModelForCausalLM.from_pretrained(local)
        else:
            model = AutoModelForCausalLM.from_pretrained(local)
    task = chat_task(cfg, make_task(cfg), tokenizer)
    return LoadedRun(run_id, cfg, model.to(device).eval(), tokenizer, task)
