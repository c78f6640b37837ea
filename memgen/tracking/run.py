"""An MLflow run with a guaranteed end state, and the small logging helpers every stage uses.

Runs end FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM): never left RUNNING.
All logging goes through ``MlflowClient`` with an explicit ``run_id``, so nothing depends on
MLflow's global active run (which Lightning's MLFlowLogger never sets).
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import socket
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
from memgen.config import PROJECT_ROOT, plain
from memgen.environment import environment, environment_tags
from memgen.errors import ConfigError
from memgen.numbers import clean
from memgen.runtime.interrupts import (
    Uninterruptible,
    current_run,
    deferred,
    deferring,
    interrupts_between_writes,
    signals_ignored,
)
from memgen.tracking.store import artifact_root, tracking_uri

# The experiment tag the MLflow 3 UI reads to open an experiment on its runs ("Machine
# learning") instead of the GenAI traces page (mlflow/server/js: ExperimentKind).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI
PREVIEW_ROWS = 200  # rows of the CSV next to a parquet table (the UI previews CSV, not parquet)


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
        """float32 noise removed (0.86, not 0.8600000143051147)."""
        mlflow_metrics = [
            mlflow.entities.Metric(k, clean(v), mlflow.utils.time.get_current_time_millis(),
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
    def log_figure(self, figure, path: str) -> bytes:
        """The figure as a PNG artifact; returns the PNG, so a report can inline it."""
        import matplotlib.pyplot as plt  # noqa: PLC0415 - pyplot only once a figure is logged

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        png = buffer.getvalue()
        self.log_bytes(png, path)
        return png

    @deferring
    def log_bytes(self, data: bytes, path: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            local.write_bytes(data)
            parent = str(Path(path).parent)
            self.client.log_artifact(self.run_id, str(local), None if parent == "." else parent)

    def describe(self, text: str) -> None:
        """The run's description (markdown), shown on its page and as a list column."""
        self.set_tags({NOTE_TAG: text[:5000]})

    @deferring
    def log_frame(self, frame, path: str) -> None:
        """A DataFrame as a parquet (or CSV) artifact: per-neuron data never goes to metrics.
        (Not ``mlflow.log_table``, which stores JSON for its own table viewer.)

        A parquet table also gets ``<name>_top<N>.csv`` of its first rows beside it: the
        MLflow artifact viewer previews CSV but not parquet.
        """
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            files = [local]
            if local.suffix == ".parquet":
                frame.to_parquet(local, index=False)
                preview = local.with_name(f"{local.stem}_top{PREVIEW_ROWS}.csv")
                frame.head(PREVIEW_ROWS).to_csv(preview, index=False, float_format="%.4g")
                files.append(preview)
            else:
                frame.to_csv(local, index=False)
            parent = str(Path(path).parent)
            for file in files:
                self.client.log_artifact(self.run_id, str(file),
                                         None if parent == "." else parent)

    @deferring
    def log_dict(self, data: dict, path: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), path)

    @deferring
    def log_artifacts(self, local_dir: str | Path, path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), path)


def context_tags() -> dict[str, str]:
    """MLflow's own source, user and git tags (``mlflow.source.*``, ``mlflow.user``).

    MLflow finds git from the entry point (``sys.argv[0]``); a console script or a test runner
    in the virtualenv may not be inside the checkout, so git falls back to the project root.
    """
    from mlflow.tracking.context.registry import resolve_tags  # noqa: PLC0415
    from mlflow.utils import git_utils  # noqa: PLC0415

    tags = dict(resolve_tags())
    if "mlflow.source.git.commit" not in tags:
        for key, get in (("mlflow.source.git.commit", git_utils.get_git_commit),
                         ("mlflow.source.git.branch", git_utils.get_git_branch),
                         ("mlflow.source.git.repoURL", git_utils.get_git_repo_url)):
            value = get(str(PROJECT_ROOT))
            if value:
                tags[key] = value
    return tags


def model_label(cfg: DictConfig) -> str:
    """``gpt2-2x64`` for a scratch model, the base's last path part for LoRA."""
    m = cfg.model
    if m.kind == "scratch":
        return f"{m.arch}-{m.n_layer}x{m.n_embd}"
    return f"lora-{Path(str(m.name_or_path)).name}"


def default_run_name(cfg: DictConfig, command: str) -> str:
    """``<task>-<model>-s<seed>-<4 hex>``: what it is, and unique among runs of one seed."""
    prefix = "" if command in ("run", "train") else f"{command}-"
    return f"{prefix}{cfg.task.name}-{model_label(cfg)}-s{cfg.seed}-{secrets.token_hex(2)}"


# parents over several seeds: no ``seed`` tag (their seeds are ``memgen.replicate.seeds``)
NO_SEED_COMMANDS = ("replicate",)


def run_tags(cfg: DictConfig, command: str) -> dict[str, str]:
    """Tags that make runs filterable in the UI."""
    context = context_tags()
    tags = context | {
        "memgen.command": command,
        "task": cfg.task.name,
        "model.kind": cfg.model.kind,
        "model.arch": (cfg.model.arch if cfg.model.kind == "scratch"
                       else str(cfg.model.name_or_path)),
        "seed": str(cfg.seed),
        "git.commit": context.get("mlflow.source.git.commit", "unknown"),
        "memgen.version": memgen.__version__,
    } | environment_tags() | process_tags()
    if command in NO_SEED_COMMANDS:
        tags.pop("seed")
    return tags


# config sections that apply to one model kind only (the others stay out of the params)
_KIND_PARAMS = {"scratch": ("model.name_or_path", "model.lora.", "model.log_merged"),
                "lora": ("model.arch", "model.n_layer", "model.n_embd", "model.n_head",
                         "model.n_positions", "model.intermediate_size", "model.dropout")}


def applicable(params: dict[str, Any], cfg: DictConfig) -> dict[str, Any]:
    """Params without those of the other model kind (no LoRA rank on a scratch model)."""
    drop = _KIND_PARAMS.get(cfg.model.kind, ())
    if cfg.model.kind == "scratch" and cfg.model.arch != "llama":
        drop = (*drop, "model.intermediate_size")
    return {k: v for k, v in params.items() if not k.startswith(drop)}


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

    walk("", plain(cfg))
    safe: dict[str, Any] = {}
    for key, value in out.items():  # e.g. a task trigger '2+3' inside a param name
        name, n = param_name(key), 1
        while name in safe:
            n += 1
            name = f"{param_name(key)[:245]}_{n}"
        safe[name] = value
    return safe


def get_experiment_id(client: MlflowClient, cfg: DictConfig) -> str:
    """The experiment's id, created when missing; marked as model training, so the UI opens it
    on its runs (an experiment kind someone chose in the UI is kept)."""
    name = cfg.tracking.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_root(cfg),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:  # created concurrently by another process
            experiment = client.get_experiment_by_name(name)
    assert experiment is not None  # it exists: found, or created by the other process
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


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
    client: MlflowClient = Uninterruptible(MlflowClient(tracking_uri=uri))  # type: ignore
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
    name = run_name or cfg.tracking.run_name or default_run_name(cfg, command)
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    tracked = TrackedRun(client, run.info.run_id, experiment_id, uri)
    tracked.log_params(applicable(flatten(cfg), cfg))
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
