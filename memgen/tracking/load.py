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
from memgen.training.data import chat_task, make_task


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


# Keys that moved since a run could have been logged: old path -> new path, so that a stored
# config (a model to re-analyse, a run to resume) still loads under today's closed schema.
MOVED_KEYS = {"trainer.num_beams": "analysis.decoding.num_beams"}


def upgraded(raw: DictConfig) -> DictConfig:
    """A stored config with every key of :data:`MOVED_KEYS` at its current place."""
    for old, new in MOVED_KEYS.items():
        parent, leaf = old.rsplit(".", 1)
        node = OmegaConf.select(raw, parent, default=None)
        if isinstance(node, DictConfig) and leaf in node:
            value = node[leaf]
            del node[leaf]
            OmegaConf.update(raw, new, value, force_add=True)
    return raw


def run_config(client: MlflowClient, run_id: str) -> DictConfig:
    """The run's resolved ``config.yaml``, validated against today's schema."""
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ConfigError(f"run id '{run_id}': no such run in this tracking store") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, "config.yaml", tmp)
        return to_schema(upgraded(OmegaConf.load(path)))


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


def resumed_config(cfg: DictConfig, overrides: list[str], check: bool = True) -> DictConfig:
    """The config of run ``cfg.resume`` with this command's ``key=value`` overrides on top.

    A resumed run continues the same experiment, so its stored config wins over today's
    defaults; only what the command line names explicitly (e.g. a longer ``max_epochs``)
    changes. Tracking settings always come from the command, which knows where the store is.
    ``check=False`` (a job's non-zero rank) reads the run that rank 0 has already reopened.
    """
    from memgen.tracking.store import tracking_uri  # noqa: PLC0415

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ConfigError(f"resume: no run '{cfg.resume}' (the store {uri} does not exist)")
    client = MlflowClient(uri)
    from memgen.runs import check_resumable  # noqa: PLC0415

    if check:
        check_resumable(client, cfg.resume, uri)
    stored = run_config(client, cfg.resume)
    dotlist = [o for o in overrides if "=" in o and not o.startswith(("+", "~"))
               and "." in o.split("=", 1)[0] or o.startswith(("seed=", "output_dir="))]
    merged = OmegaConf.merge(stored, OmegaConf.from_dotlist(dotlist),
                             {"resume": cfg.resume, "tracking": cfg.tracking})
    return to_schema(merged)
