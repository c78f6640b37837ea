"""Links into the MLflow UI: the page of one run.

MLflow 3.17's UI picks its mode (GenAI or model training) from the link's ``workflowType``
parameter, else from what the browser last chose (default: GenAI); the experiment tag
``mlflow.experimentKind`` that memgen also sets is read only where that mode switch is off.
So every link memgen prints names the mode: it opens on the runs, not on empty trace charts.
"""

from __future__ import annotations

from omegaconf import DictConfig

MODE = "workflowType=machine_learning"


def ui_base(cfg: DictConfig) -> str:
    """The UI's address: the tracking server itself, else where ``memgen ui`` serves."""
    uri = str(cfg.tracking.uri or "")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return str(cfg.tracking.get("ui_url") or "http://127.0.0.1:5000").rstrip("/")


def run_url(cfg: DictConfig, experiment_id: str, run_id: str) -> str:
    """The run's page (overview, description, artifacts with report.html)."""
    return f"{ui_base(cfg)}/#/experiments/{experiment_id}/runs/{run_id}?{MODE}"
