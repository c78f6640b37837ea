"""``memgen analyse run=<id>``: the whole analysis on the model of a finished run, no training.

Trying a new intervention, k or labelling needs no retraining: the model comes from the
run's ``model`` artifact (:func:`memgen.training.reopen.load_run`, as the steering sweep loads it);
task, model and seed come from that run's config; ``analysis.*`` and ``claims.*`` come from this
command line. The result is a new run (command ``analyse``, tag ``memgen.model_run``) with what
``memgen run`` logs after training: labels, neurons, probes, steering, consistency, the claims
scorecard and ``report.html``. The model run's ``kept/*`` rates (its validation conflict set)
and ``val/best_*`` are copied, so the scorecard's ``behaviors`` claim reads the same model.

A missing, unfinished or model-less run fails in one line before anything is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from memgen.analysis.settings import Subject
from memgen.analysis.stages import analyse_model
from memgen.analysis.timing import StageTimer
from memgen.config import overlay, to_schema
from memgen.config.adapter import settings_from_config
from memgen.errors import ConfigError
from memgen.replicates.claims import format_scorecard, score_claims
from memgen.reporting.replicate_report import log_scorecard
from memgen.reporting.report import finish_run, log_analysis, log_summary, summary
from memgen.tracking import load
from memgen.tracking.run import tracked_run
from memgen.tracking.store import tracking_uri
from memgen.training import reopen

COMMAND = "analyse"
MODEL_RUN_TAG = "memgen.model_run"
# what this command line decides; everything else (task, model, seed, trainer) is the model's
OWN_SECTIONS = ("analysis", "claims", "tracking", "output_dir")
OWN_TRAINER_KEYS = ("accelerator", "devices")
# copied from the model run: properties of the model measured when it was kept
MODEL_METRICS = ("kept/", "val/best_")


def require_store(cfg: DictConfig, key: str) -> None:
    """A local store that does not exist holds no run: say so instead of creating it."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ConfigError(f"{key}: no runs to read, the store {uri} does not exist")


def analysis_base(cfg: DictConfig, run_cfg: DictConfig, run_id: str | None) -> DictConfig:
    """The model run's config with this command's analysis, claims, tracking and output.

    ``trainer.num_threads`` is this command's when set, else the model run's: the numbers
    depend on the thread count, so by default the analysis runs as the model's run did.
    """
    data = overlay(run_cfg, cfg, (*OWN_SECTIONS, "replicate"), OWN_TRAINER_KEYS)
    if cfg.trainer.num_threads:
        data["trainer"]["num_threads"] = int(cfg.trainer.num_threads)
    data |= {"run": run_id, "resume": None}
    return to_schema(data)


def check_model_run(client: MlflowClient, run_id: str | None, key: str = "run") -> Any:
    """The run behind ``run_id``: it exists, FINISHED, and logged a ``model``."""
    if not run_id:
        raise ConfigError(f"{key}: expected the id of a finished run, e.g. "
                          f"memgen analyse run=<run id>")
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow's not-found error, or a malformed id
        raise ConfigError(f"{key}: no run '{run_id}' in this tracking store") from None
    if run.info.status != "FINISHED":
        raise ConfigError(f"{key}: run {run_id} is {run.info.status}, not FINISHED; analyse "
                          f"a run that finished")
    if "model" not in {a.path for a in client.list_artifacts(run_id)}:
        raise ConfigError(f"{key}: run {run_id} has no 'model' artifact (was it trained with "
                          f"tracking.log_model=false?)")
    return run


def analyse(cfg: DictConfig, parent_run_id: str | None = None, run_name: str | None = None
            ) -> tuple[dict[str, float], dict[str, Any]]:
    """Check and load ``cfg.run``'s model, then analyse it in a new run; returns (metrics,
    objects) like ``memgen.commands.run.run``."""
    from memgen.training.runner import check_analysis  # noqa: PLC0415 - Lightning-free otherwise

    timer, started = StageTimer(), time.perf_counter()
    require_store(cfg, "run")
    client = MlflowClient(tracking_uri(cfg))
    model_run = check_model_run(client, cfg.run)
    base = analysis_base(cfg, load.run_config(client, cfg.run), cfg.run)
    if base.trainer.num_threads:
        torch.set_num_threads(base.trainer.num_threads)
    loaded = reopen.load_run(client, cfg.run, device=reopen.device_of(base))
    check_analysis(base, loaded.model)
    timer.lap("load")
    metrics = {k: v for k, v in model_run.data.metrics.items() if k.startswith(MODEL_METRICS)}
    with tracked_run(base, COMMAND, parent_run_id=parent_run_id, run_name=run_name,
                     extra_tags={MODEL_RUN_TAG: cfg.run}) as tracked:
        timer.restart()
        log_summary(tracked, metrics, step=None)
        analysis = analyse_model(Subject(loaded.model, loaded.tokenizer, loaded.task),
                                 settings_from_config(base), allow_no_pairs=True)
        timer.lap("analysis")
        figures = log_analysis(tracked, analysis)
        metrics |= analysis.metrics
        claims = score_claims(metrics, base.claims)
        log_scorecard(tracked, claims)
        timer.lap("logging")
        metrics |= timer.metrics()
        log_summary(tracked, timer.metrics(), step=None)
        report_s = finish_run(tracked, metrics, None, analysis, claims, figures)
        ends = {"time/report_s": report_s, "time/total_s": time.perf_counter() - started}
        log_summary(tracked, ends, step=None)
        metrics |= ends
    return metrics, {"run_id": tracked.run_id, "experiment_id": tracked.experiment_id,
                     "model_run_id": cfg.run, "analysis": analysis, "claims": claims,
                     "cfg": base,
                     "summary": summary(analysis) + "\n\nclaims\n" + format_scorecard(claims)}
