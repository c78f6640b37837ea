"""Several processes, one job: which rank this process is, and what only rank 0 does.

With ``trainer.devices=N trainer.strategy=ddp`` Lightning's launcher re-executes the command
line for ranks 1..N-1 when ``trainer.fit`` starts, with ``LOCAL_RANK`` (and ``NODE_RANK``,
``WORLD_SIZE``) in their environment. Each re-executed process composes the same config and
reaches the run set-up before any Trainer exists, so the rank is read from those variables
(Lightning's ``rank_zero_only.rank`` is set from them at import).

- Rank 0 creates (or reopens) the MLflow run and exports its id in ``MEMGEN_RUN_ID`` before
  ``fit``; the launcher's children inherit it. Other ranks get a :class:`FollowerRun`: reads
  work, writes are dropped, so no stage logs twice.
- A failing non-zero rank records the run's end itself (FAILED, or KILLED on an interrupt):
  Lightning's process observer SIGKILLs rank 0 when a child exits non-zero, so rank 0 could
  not. A rank that is SIGKILLed records nothing; the guard process
  (:mod:`memgen.runtime.guard`) then marks the run KILLED once rank 0 is gone.
- After ``fit`` the other ranks return: the kept checkpoint's analysis runs once, on rank 0.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from memgen.tracking.run import TrackedRun, end_status, tracked_run
from memgen.tracking.store import tracking_uri

log = logging.getLogger(__name__)

RUN_ID_ENV = "MEMGEN_RUN_ID"
CHECKPOINT_ENV = "MEMGEN_RESUME_CHECKPOINT"


def global_rank() -> int:
    """This process's rank in the job, known before a Trainer exists (0 on one device)."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only  # noqa: PLC0415

    if os.environ.get("RANK", "").isdigit():  # torchrun, SLURM-style launchers
        return int(os.environ["RANK"])
    node, local = (int(os.environ.get(k, "0") or 0) for k in ("NODE_RANK", "LOCAL_RANK"))
    if node:  # a process on another machine: never rank 0 (its exact rank comes with fit)
        return node * max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)) + local
    return local or int(getattr(rank_zero_only, "rank", 0) or 0)


def is_rank_zero() -> bool:
    return global_rank() == 0


class _ReadOnlyClient:
    """An ``MlflowClient`` for a non-zero rank: a write is a bug, so it raises."""

    _WRITES = ("log_", "set_", "create_", "update_", "delete_", "restore_", "rename_")

    def __init__(self, client: MlflowClient, rank: int) -> None:
        self._client, self._rank = client, rank

    def __getattr__(self, name: str):
        if name.startswith(self._WRITES):
            raise RuntimeError(f"rank {self._rank} tried {name}: only rank 0 writes to the run")
        return getattr(self._client, name)


class FollowerRun(TrackedRun):
    """The job's run as a non-zero rank sees it: every ``TrackedRun`` write is a no-op."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        return None

    def log_params(self, params: Mapping[str, object]) -> None:
        return None

    def set_tags(self, tags: Mapping[str, object]) -> None:
        return None

    def log_text(self, text: str, path: str) -> None:
        return None

    def log_figure(self, figure, path: str) -> bytes:
        import matplotlib.pyplot as plt  # noqa: PLC0415

        plt.close(figure)
        return b""

    def log_bytes(self, data: bytes, path: str) -> None:
        return None

    def log_frame(self, frame, path: str) -> None:
        return None

    def log_dict(self, data: dict, path: str) -> None:
        return None

    def log_artifacts(self, local_dir: str | Path, path: str | None = None) -> None:
        return None


@contextmanager
def job_run(cfg: DictConfig, command: str, run_id: str | None = None,
            parent_run_id: str | None = None, run_name: str | None = None
            ) -> Iterator[TrackedRun]:
    """Rank 0: :func:`tracked_run`. Other ranks: the run rank 0 exported, read-only; on an
    error they record its end (rank 0 is killed by Lightning's observer when they exit)."""
    rank = global_rank()
    if rank == 0:
        with tracked_run(cfg, command, run_id=run_id, parent_run_id=parent_run_id,
                         run_name=run_name) as tracked:
            yield tracked
        return
    uri = tracking_uri(cfg)
    exported = os.environ.get(RUN_ID_ENV, "")
    if not exported:
        log.warning("memgen: rank %d has no %s (not started by Lightning's launcher); it "
                    "logs nothing", rank, RUN_ID_ENV)
    client = MlflowClient(tracking_uri=uri)
    follower = FollowerRun(_ReadOnlyClient(client, rank), exported, "", uri)  # type: ignore
    try:
        yield follower
    except BaseException as exc:
        if exported:
            record_rank_failure(client, exported, rank, exc)
        raise


def record_rank_failure(client: MlflowClient, run_id: str, rank: int,
                        exc: BaseException) -> None:
    """End a still-RUNNING run FAILED (KILLED on an interrupt), naming the rank and error."""
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return  # rank 0 already recorded the end
        client.set_tag(run_id, f"memgen.error.rank{rank}", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(run_id, status=end_status(exc))
    except Exception as store_error:  # noqa: BLE001 - the guard still ends the run
        log.warning("memgen: rank %d could not record the run's end (%s)", rank, store_error)


def world_size(trainer: pl.Trainer) -> int:
    return int(trainer.num_devices) * int(trainer.num_nodes)


@contextmanager
def launching(trainer: pl.Trainer, run: TrackedRun, ckpt_path: str | None) -> Iterator[None]:
    """Around ``trainer.fit`` on rank 0 of a multi-process job: export the run id (and the
    resume checkpoint) to the ranks the launcher starts, and start the run's guard."""
    if world_size(trainer) < 2 or not is_rank_zero():
        yield
        return
    exported = {RUN_ID_ENV: run.run_id, CHECKPOINT_ENV: ckpt_path or ""}
    previous = {key: os.environ.get(key) for key in exported}
    os.environ.update(exported)
    start_guard(run)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def exported_checkpoint() -> str | None:
    """The checkpoint rank 0 resumes from (a non-zero rank must not re-check the run: rank 0
    has already reopened it, and its live pid would refuse the resume)."""
    return os.environ.get(CHECKPOINT_ENV) or None


def start_guard(run: TrackedRun) -> subprocess.Popen:
    """A detached process that marks the run KILLED if this process dies leaving it RUNNING."""
    return subprocess.Popen(
        [sys.executable, "-m", "memgen.runtime.guard", run.uri, run.run_id, str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)  # its own session: a Ctrl-C to the job does not stop it


class SameKeptCheckpoint(pl.Callback):
    """Fails ``fit`` if the ranks disagree on the kept checkpoint (they share the synced
    validation metric, so they must not)."""

    def __init__(self, best: pl.callbacks.ModelCheckpoint) -> None:
        self.best = best

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        mine = Path(self.best.best_model_path).name
        chosen = trainer.strategy.broadcast(mine, src=0)
        if not trainer.strategy.reduce_boolean_decision(mine == chosen, all=True):
            raise RuntimeError(f"rank {trainer.global_rank} kept {mine!r}, rank 0 kept "
                               f"{chosen!r}: the validation metric differs between ranks")
