"""A finished run's config read back from MLflow: the stored config (upgraded to today's keys),
the latest run of an experiment, and the config a ``resume=`` continues with.

The run's model is reopened by :mod:`memgen.training.reopen`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import cast

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from memgen.config import to_schema
from memgen.errors import ConfigError


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
        return to_schema(upgraded(cast(DictConfig, OmegaConf.load(path))))  # memgen wrote it


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
    from memgen.tracking.stale import check_resumable  # noqa: PLC0415

    if check:
        check_resumable(client, cfg.resume, uri)
    stored = run_config(client, cfg.resume)
    dotlist = [o for o in overrides if "=" in o and not o.startswith(("+", "~"))
               and "." in o.split("=", 1)[0] or o.startswith(("seed=", "output_dir="))]
    merged = OmegaConf.merge(stored, OmegaConf.from_dotlist(dotlist),
                             {"resume": cfg.resume, "tracking": cfg.tracking})
    return to_schema(cast(DictConfig, merged))  # merged onto a DictConfig
