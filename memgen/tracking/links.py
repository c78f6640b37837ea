"""Links into the MLflow UI: the page of one run, the runs list of an experiment."""

from __future__ import annotations

from omegaconf import DictConfig


def ui_base(cfg: DictConfig) -> str:
    """The UI's address: the tracking server itself, else where ``memgen ui`` serves."""
    uri = str(cfg.tracking.uri or "")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return str(cfg.tracking.get("ui_url") or "http://127.0.0.1:5000").rstrip("/")


def run_url(cfg: DictConfig, experiment_id: str, run_id: str) -> str:
    """The run's page (overview, description, artifacts with report.html)."""
    return f"{ui_base(cfg)}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_url(cfg: DictConfig, experiment_id: str) -> str:
    """The experiment's runs list (the "Machine learning" view)."""
    return f"{ui_base(cfg)}/#/experiments/{experiment_id}/runs"
