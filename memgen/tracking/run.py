"""An MLflow run with a guaranteed end state, and the small logging helpers every stage uses.

Runs end FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM): never left RUNNING.
All logging goes through ``MlflowClient`` with an explicit ``run_id``, so nothing depends on
MLflow's global active run (which Lightning's MLFlowLogger never sets).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

import memgen
from memgen.config import PROJECT_ROOT, ConfigError
from memgen.environment import environment, environment_tags
from memgen.tracking.interrupts import (
    current_run,
    deferred,
    deferring,
    interrupts_between_writes,
    signals_ignored,
)
from memgen.tracking.store import artifact_root, tracking_uri


@dataclass
class TrackedRun:
    """The client and ids a stage needs to log into one run."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    uri: str
    # a resumed run: the last step each metric had before, so no step is logged twice
    done: dict[str, int] = field(default_factory=dict)

    def logged(self, key: str, step: int | None) -> bool:
        """Whether a resumed run already holds ``key`` at ``step``."""
        return key in self.done and (step or 0) <= self.done[key]

    @deferring
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow_metrics = [
            mlflow.entities.Metric(k, float(v), mlflow.utils.time.get_current_time_millis(),
                                   step or 0)
            for k, v in metrics.items() if v is not None and not self.logged(k, step)
        ]
        if mlflow_metrics:
            self.client.log_batch(self.run_id, metrics=mlflow_metrics)

    @deferring
    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    @deferring
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    @deferring
    def log_text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    @deferring
    def log_figure(self, figure, path: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, path)
        plt.close(figure)

    @deferring
    def log_table(self, frame, path: str) -> None:
        """A DataFrame as a parquet (or CSV) artifact: per-neuron data never goes to metrics."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            if local.suffix == ".parquet":
                frame.to_parquet(local, index=False)
            else:
                frame.to_csv(local, index=False)
            parent = str(Path(path).parent)
            self.client.log_artifact(self.run_id, str(local), None if parent == "." else parent)

    @deferring
    def log_dict(self, data: dict, path: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), path)

    @deferring
    def log_artifacts(self, local_dir: str | Path, path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), path)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(cfg: DictConfig, command: str) -> dict[str, str]:
    """Tags that make runs filterable in the UI."""
    return {
        "memgen.command": command,
        "task": cfg.task.name,
        "model.kind": cfg.model.kind,
        "model.arch": (cfg.model.arch if cfg.model.kind == "scratch"
                       else str(cfg.model.name_or_path)),
        "seed": str(cfg.seed),
        "git.commit": git_commit(),
        "memgen.version": memgen.__version__,
    } | environment_tags() | process_tags()


def process_tags() -> dict[str, str]:
    """Where the run's process lives: ``memgen runs clean`` finds RUNNING runs whose process
    is gone (kill -9, OOM, power loss) by these."""
    return {"memgen.host": socket.gethostname(), "memgen.pid": str(os.getpid())}


_BAD_PARAM_CHARS = re.compile(r"[^/\w.\- :]")


def param_name(key: str) -> str:
    """``key`` with characters MLflow rejects in a param name (``+``, ``*``, quotes) as ``_``."""
    return _BAD_PARAM_CHARS.sub("_", key)[:250]


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Dotted keys of the resolved config, for MLflow params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    safe: dict[str, Any] = {}
    for key, value in out.items():  # e.g. a task trigger '2+3' inside a param name
        name, n = param_name(key), 1
        while name in safe:
            n += 1
            name = f"{param_name(key)[:245]}_{n}"
        safe[name] = value
    return safe



def get_experiment_id(client: MlflowClient, cfg: DictConfig) -> str:
    name = cfg.tracking.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(cfg))
    except mlflow.exceptions.MlflowException:  # created concurrently by another process
        return client.get_experiment_by_name(name).experiment_id


def end_status(exc: BaseException | None) -> str:
    if exc is None:
        return "FINISHED"
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "KILLED"
    return "FAILED"


def _open_run(cfg: DictConfig, command: str, run_id: str | None,
              parent_run_id: str | None, run_name: str | None,
              extra_tags: Mapping[str, str] | None) -> TrackedRun:
    uri = tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    if run_id is not None:
        run = client.get_run(run_id)
        client.update_run(run_id, status="RUNNING")
        done = {m.key: m.step for m in run.data._metric_objs}  # latest = highest step
        resumed = TrackedRun(client, run_id, run.info.experiment_id, uri, done)
        resumed.set_tags(process_tags())
        resumed.log_dict(environment(), f"environment/resumed-{int(time.time())}.json")
        return resumed
    experiment_id = get_experiment_id(client, cfg)
    tags = run_tags(cfg, command) | dict(extra_tags or {})
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, tags=tags, run_name=run_name or cfg.tracking.run_name)
    tracked = TrackedRun(client, run.info.run_id, experiment_id, uri)
    tracked.log_params(flatten(cfg))
    tracked.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
    tracked.log_dict(environment(), "environment.json")
    return tracked


@contextmanager
def tracked_run(cfg: DictConfig, command: str, run_id: str | None = None,
                parent_run_id: str | None = None, run_name: str | None = None,
                extra_tags: Mapping[str, str] | None = None) -> Iterator[TrackedRun]:
    """Create (or reopen, for resume) a run, log the config, and always set its end status."""
    with interrupts_between_writes():
        tracked: TrackedRun | None = None
        error: BaseException | None = None
        try:
            with deferred():  # an interrupt during creation still ends the run
                tracked = _open_run(cfg, command, run_id, parent_run_id, run_name, extra_tags)
                if parent_run_id is None:  # the run a Ctrl-C hint names
                    current_run.update(run_id=tracked.run_id, command=command)
            yield tracked
        except BaseException as exc:
            error = exc
            raise
        finally:
            if tracked is not None:
                _terminate(tracked.uri, tracked.run_id, error)


def _terminate(uri: str, run_id: str, error: BaseException | None) -> None:
    """Record the end state; a fresh client per attempt, with signals ignored meanwhile.

    Interrupts are held back during store writes (``interrupts``), so the store is not left
    mid-transaction; the retries cover a store that is briefly locked by another process.
    """
    with signals_ignored():
        lost = _lost_store(uri)
        if lost:  # MLflow would recreate it empty and the run would report success
            raise ConfigError(f"tracking.uri: {lost} disappeared during run {run_id}; "
                              f"its records are lost")
        for attempt in range(5):
            try:
                client = MlflowClient(tracking_uri=uri)
                if error is not None:
                    client.set_tag(run_id, "memgen.error",
                                   f"{type(error).__name__}: {error}"[:5000])
                client.set_terminated(run_id, status=end_status(error))
                return
            except Exception as exc:  # noqa: BLE001 - retried, then reported
                if attempt == 4:
                    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise ConfigError(f"tracking.uri: cannot record the end of run {run_id} "
                                      f"in {uri} ({line[:200]})") from None
                time.sleep(0.5 * (attempt + 1))


def _lost_store(uri: str) -> str | None:
    """The SQLite file of ``uri`` if it no longer exists (deleted while the run was open)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    return None if db.exists() else str(db)
