"""``memgen sweep``: an Optuna study over config keys, one MLflow parent run, a child per trial.

memgen runs its own Optuna loop (the Hydra Optuna sweeper does not support Optuna 5): each
trial is the base config plus the trial's values, validated like any composed config.

- ``sweep=steering`` searches ``analysis.steering.*`` (top_k / top_fraction, alpha) on one
  trained model (``sweep.run_id``, default: the latest finished ``memgen run``). The model,
  its behaviors, activations and neuron statistics are computed once per worker.
- ``sweep=training`` retrains per trial (e.g. ``model.n_embd``, ``trainer.lr``) with median
  pruning on ``val/behavior_balance``.

Everything the sweep needs is checked before any model is loaded or trained (:func:`plan`).
Re-running the same study name on the same storage resumes the study and its parent run.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from memgen.config import RESULT_NEUTRAL, config_digest, overlay, plain, to_schema
from memgen.errors import ConfigError
from memgen.reporting.sweep_report import log_study
from memgen.sweeps.objectives import Objective, parse_objectives
from memgen.sweeps.space import Param, check_space, parse_space
from memgen.sweeps.storage import (
    PRUNERS,
    check_resume,
    check_storage,
    default_storage,
    load_study,
    open_storage,
    redact,
)
from memgen.sweeps.worker import Job, run_workers, split_trials
from memgen.tracking import load
from memgen.tracking.run import tracked_run
from memgen.tracking.search import runs_tagged
from memgen.tracking.store import check_store, tracking_uri

KINDS = ("steering", "training")
# Sections of the sweep command that a steering sweep applies on top of the model's run config:
# how to analyse and where to log are the sweep's; task, model and seed are the model's.
SWEEP_SECTIONS = ("analysis", "tracking", "sweep", "output_dir")
SWEEP_TRAINER_KEYS = ("num_threads", "accelerator", "devices")
_NAME = re.compile(r"^[\w.\-]+$")


@dataclass
class Plan:
    """A checked sweep: nothing has been loaded, trained or logged yet."""

    kind: str
    base: DictConfig
    params: list[Param]
    objectives: list[Objective]
    study_name: str
    storage: str
    model_run_id: str | None


def _check_settings(cfg: DictConfig) -> None:
    s = cfg.sweep
    if s.name == "none":
        raise ConfigError("sweep: choose a sweep, e.g. memgen sweep sweep=steering "
                          "(or sweep=training)")
    if s.kind not in KINDS:
        raise ConfigError(f"sweep.kind: expected one of {list(KINDS)}, got {s.kind!r}")
    if s.n_trials < 1:
        raise ConfigError(f"sweep.n_trials: expected a positive integer, got {s.n_trials}")
    if s.workers < 1:
        raise ConfigError(f"sweep.workers: expected a positive integer, got {s.workers}")
    if s.timeout is not None and not s.timeout > 0:
        raise ConfigError(f"sweep.timeout: expected seconds > 0 or null, got {s.timeout}")
    if s.pruner not in PRUNERS:
        raise ConfigError(f"sweep.pruner: expected one of {list(PRUNERS)}, got {s.pruner!r}")
    for key in ("name", "study_name"):  # both end up in the study name and a tag filter
        if s[key] is not None and not _NAME.match(s[key]):
            raise ConfigError(f"sweep.{key}: use letters, digits, '_', '.' or '-', "
                              f"got {s[key]!r}")


def steering_base(cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """The model run's config (task, model, seed) with the sweep command's analysis,
    tracking, sweep and device settings."""
    return to_schema(overlay(run_cfg, cfg, SWEEP_SECTIONS, SWEEP_TRAINER_KEYS))


def model_run(cfg: DictConfig) -> tuple[str, DictConfig]:
    """The run whose model is steered, and its config; a missing run or model fails here."""
    client = MlflowClient(tracking_uri(cfg))
    run_id = cfg.sweep.run_id or load.latest_run_id(client, cfg.tracking.experiment, "run")
    try:
        pairs = client.get_run(run_id).data.metrics.get("pairs/n")
    except mlflow.exceptions.MlflowException:
        pairs = None  # no such run: run_config says so
    if pairs is not None and pairs < 1:
        raise ConfigError(f"sweep.run_id: run {run_id} found no MEM/GEN pairs (pairs/n = 0): "
                          f"there are no neurons to steer; train a model that shows both "
                          f"behaviors first")
    try:
        run_cfg = load.run_config(client, run_id)
    except ConfigError as exc:
        raise ConfigError(f"sweep.run_id: {exc}") from None
    if "model" not in {a.path for a in client.list_artifacts(run_id)}:
        raise ConfigError(f"sweep.run_id: run {run_id} has no 'model' artifact (was it trained "
                          f"with tracking.log_model=false?)")
    return run_id, run_cfg


def config_hash(base: DictConfig, model_run_id: str | None) -> str:
    """Six hex digits of what defines the trials: the default study name changes with it.

    The search space and the objectives count (another space must not resume a study whose
    trials were drawn from a different one); trial counts, workers and storage do not.
    """
    study = OmegaConf.create({key: base.sweep[key] for key in ("kind", "space", "objectives")})
    return config_digest(base, drop=RESULT_NEUTRAL + ("sweep",),
                         extra=OmegaConf.to_yaml(study) + str(model_run_id))


def plan(cfg: DictConfig) -> Plan:
    """Every check of ``memgen sweep``, before any work; raises ConfigError with one line."""
    _check_settings(cfg)
    check_store(cfg)
    s = cfg.sweep
    params = parse_space(s.space)
    if not params:  # e.g. every key removed with ~: N identical trials would run
        raise ConfigError("sweep.space: empty after overrides; give at least one key, e.g. "
                          "sweep.space.analysis.steering.alpha={type:float,low:1,high:8}")
    run_id = None
    base = cfg
    if s.kind == "steering":
        run_id, run_cfg = model_run(cfg)
        base = steering_base(cfg, run_cfg)
    objectives = parse_objectives(s.objectives, s.kind, list(base.analysis.steering.controls))
    check_space(params, base, s.kind)
    storage = s.storage or default_storage(cfg)
    check_storage(storage, s.workers)
    default_name = f"{s.name}-" + (f"{run_id[:8]}-" if run_id else f"{base.task.name}-")
    name = s.study_name or default_name + config_hash(base, run_id)
    return Plan(s.kind, base, params, objectives, name, storage, run_id)


def _parent_tags(p: Plan) -> dict[str, str]:
    return {"memgen.sweep.study": p.study_name, "memgen.sweep.storage": redact(p.storage),
            "memgen.sweep.kind": p.kind, "memgen.sweep.model_run_id": p.model_run_id or "",
            "memgen.sweep.objectives": ", ".join(f"{o.direction} {o.metric}"
                                                 for o in p.objectives)}


def find_parent(p: Plan, study) -> str | None:
    """The parent run of a resumed study: recorded on the study, else found by its tags."""
    client = MlflowClient(tracking_uri(p.base))
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                return run_id
        except mlflow.exceptions.MlflowException:
            pass  # recorded by another tracking store
    runs = runs_tagged(client, p.base.tracking.experiment,
                       {"memgen.sweep.study": p.study_name, "memgen.command": "sweep"})
    storage = redact(p.storage)
    runs = [r for r in runs if r.data.tags.get("memgen.sweep.storage") == storage]
    return runs[0].info.run_id if runs else None


def sweep(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Plan, open (or resume) the study and its parent run, run the trials, log the outcome."""
    p = plan(cfg)
    s = cfg.sweep
    started = time.time()
    study = load_study(p.study_name, open_storage(p.storage), [o.direction for o in p.objectives])
    check_resume(study, {"memgen.kind": p.kind, "memgen.model_run_id": p.model_run_id or "",
                         "memgen.objectives": ",".join(o.metric for o in p.objectives)})
    start = len(study.get_trials(deepcopy=False))
    parent_id = find_parent(p, study)
    if parent_id:
        context = tracked_run(p.base, "sweep", run_id=parent_id)
    else:
        context = tracked_run(p.base, "sweep", run_name=p.study_name, extra_tags=_parent_tags(p))
    print(f"memgen sweep: study {p.study_name} ({redact(p.storage)}), {start} earlier trials, "
          f"{s.n_trials} new on {s.workers} worker(s)", file=sys.stderr)
    with context as parent:
        study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        if p.kind == "training" and len(p.objectives) > 1 and s.pruner != "none":
            parent.set_tags({"sweep.pruning": "off: Optuna does not prune multi-objective "
                                              "studies"})
        base = plain(p.base)
        deadline = None if s.timeout is None else started + float(s.timeout)
        jobs = [Job(kind=p.kind, study_name=p.study_name, storage=p.storage, base=base,
                    params=p.params, objectives=p.objectives, parent_run_id=parent.run_id,
                    pruner=s.pruner, sampler_seed=s.sampler_seed, start=start, n_trials=n,
                    model_run_id=p.model_run_id, deadline=deadline, worker=i,
                    workers=s.workers)
                for i, n in enumerate(split_trials(s.n_trials, s.workers))]
        run_workers(jobs)
        metrics, text = log_study(parent, study, p.objectives, p.params)
        metrics["sweep/wall_s"] = time.time() - started
        parent.log_metrics({"sweep/wall_s": metrics["sweep/wall_s"]})
    return metrics, {"run_id": parent.run_id, "study": study, "summary": text, "plan": p}
