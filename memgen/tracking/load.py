"""Reopening a finished run: its resolved config, model, tokenizer and task.

A sweep over steering settings, a resume, or a notebook starts from an MLflow run id instead of
retraining. Weights come from the ``model`` artifact (safetensors via ``from_pretrained``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from memgen.config import ConfigError, to_schema
from memgen.tasks import Task
from memgen.training.data import make_task


@dataclass
class LoadedRun:
    """A trained model and everything needed to analyse it again."""

    run_id: str
    cfg: DictConfig
    model: Any
    tokenizer: Any
    task: Task


def latest_run_id(client: MlflowClient, experiment: str, command: str = "run") -> str:
    """The newest FINISHED run made by ``memgen <command>`` in ``experiment``."""
    exp = client.get_experiment_by_name(experiment)
    runs = [] if exp is None else client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`memgen.command` = '{command}' and "
                                           f"attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise ConfigError(f"sweep.run_id: no finished 'memgen {command}' run in experiment "
                          f"'{experiment}'; train one first or pass sweep.run_id=<id>")
    return runs[0].info.run_id


def run_config(client: MlflowClient, run_id: str) -> DictConfig:
    """The run's resolved ``config.yaml``, validated against today's schema."""
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"run id '{run_id}': no such run in this tracking store") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "config.yaml", tmp)
        return to_schema(OmegaConf.load(path))


def load_run(client: MlflowClient, run_id: str, device: str = "cpu") -> LoadedRun:
    """Config, model (``model`` artifact), tokenizer and task of a finished run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    cfg = run_config(client, run_id)
    cache = Path(tempfile.mkdtemp(prefix=f"memgen-{run_id[:8]}-"))
    try:
        local = client.download_artifacts(run_id, "model", str(cache))
    except (mlflow.exceptions.MlflowException, OSError):
        raise ConfigError(f"run id '{run_id}': it has no 'model' artifact "
                          f"(was it trained with tracking.log_model=false?)") from None
    tokenizer = AutoTokenizer.from_pretrained(local)
    if (Path(local) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM  # noqa: PLC0415

        model = AutoPeftModelForCausalLM.from_pretrained(local)
    else:
        model = AutoModelForCausalLM.from_pretrained(local)
    return LoadedRun(run_id, cfg, model.to(device).eval(), tokenizer, make_task(cfg))
