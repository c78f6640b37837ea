"""``memgen replicate``: one experiment over several training seeds, with error bars.

One MLflow parent run holds one child per seed; each child is an ordinary ``memgen run`` run
(``pipeline.run`` with a parent), logging everything a run logs. The parent gets every shared
summary metric's across-seed mean and 95% CI, a per-seed table and the claims scorecard.

The parent is keyed by the config without its seed (:func:`memgen.config.config_digest`):
re-running the same command reopens it, skips the seeds that FINISHED under it and reruns
the FAILED or KILLED ones. A seed that fails is recorded as failed; the others go on.
Workers come from the sweep machinery (:func:`memgen.sweeps.worker.run_parallel`).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from memgen.config import RESULT_NEUTRAL, ConfigError, config_digest, to_schema
from memgen.replicates.aggregate import (
    aggregate,
    aggregate_metrics,
    claims_over_seeds,
    format_replicate_scorecard,
    per_seed_table,
)
from memgen.replicates.claims import score_claims
from memgen.tracking.run import tracked_run
from memgen.tracking.search import children, runs_tagged
from memgen.tracking.store import check_store, tracking_uri

COMMAND = "replicate"
KEY_TAG = "memgen.replicate.key"


@dataclass
class SeedJob:
    """One worker's seeds, picklable for ``spawn``."""

    base: dict[str, Any]
    seeds: list[int]
    parent_run_id: str
    parent_name: str
    worker: int = 0


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_seed(cfg: DictConfig) -> int:
    """``trainer.num_threads`` if set, else the cores split evenly between the workers."""
    if cfg.trainer.num_threads:
        return int(cfg.trainer.num_threads)
    return max(1, cores() // cfg.replicate.workers)


def replicate_key(cfg: DictConfig) -> str:
    """What defines the experiment, without its seed: the parent run's identity."""
    return config_digest(cfg, drop=RESULT_NEUTRAL + ("seed",))


def seed_config(base: dict[str, Any], seed: int) -> DictConfig:
    return to_schema(base | {"seed": seed})


def check_seeds(cfg: DictConfig, seeds: list[int]) -> None:
    """Every seed's config validates, and the first builds its task and model, before the
    parent run exists: a bad seed or task file used to leave a FAILED parent behind."""
    from memgen.pipeline import prepare  # noqa: PLC0415 - Lightning only where training happens

    base = OmegaConf.to_container(cfg, resolve=True)
    configs = []
    for seed in seeds:
        try:
            configs.append(seed_config(base, seed))
        except ConfigError as exc:
            raise ConfigError(f"replicate.seeds: seed {seed}: {exc}") from None
    prepare(configs[0])


def run_seeds(job: SeedJob) -> None:
    """A worker: each of its seeds as one ``memgen run`` child; a failing seed is recorded
    (its child ends FAILED) and the next one goes on. Ctrl-C stops the worker."""
    from memgen import pipeline  # noqa: PLC0415 - Lightning only where training happens
    from memgen.sweeps.trials import failed_child  # noqa: PLC0415

    for seed in job.seeds:
        cfg = seed_config(job.base, seed)
        name = f"{job.parent_name}/seed-{seed}"
        try:
            pipeline.run(cfg, parent_run_id=job.parent_run_id, run_name=name)
        except ConfigError as exc:  # nothing ran: a FAILED child says why
            failed_child(cfg, job.parent_run_id, name, {"seed": str(seed)}, {"seed": seed},
                         str(exc), command="run")
            print(f"memgen replicate: seed {seed} failed: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - the child run is FAILED; the others go on
            print(f"memgen replicate: seed {seed} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)


def split_seeds(seeds: list[int], workers: int) -> list[list[int]]:
    """Round-robin shares, so that slow late seeds spread over the workers."""
    shares = [seeds[i::workers] for i in range(workers)]
    return [share for share in shares if share]


def _finished_seeds(client: MlflowClient, cfg: DictConfig, parent_run_id: str) -> dict[int, Any]:
    """seed -> the newest FINISHED child run of that seed."""
    out: dict[int, Any] = {}
    for run in children(client, cfg.tracking.experiment, parent_run_id):
        seed = run.data.tags.get("seed")
        if run.info.status == "FINISHED" and seed is not None and seed.lstrip("-").isdigit():
            out[int(seed)] = run
    return out


def find_parent(client: MlflowClient, cfg: DictConfig, key: str) -> str | None:
    runs = runs_tagged(client, cfg.tracking.experiment, {KEY_TAG: key,
                                                         "memgen.command": COMMAND})
    return runs[-1].info.run_id if runs else None


def replicate(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run (or resume) every seed, then aggregate and score on the parent run."""
    check_store(cfg)
    started = time.time()
    seeds = [int(s) for s in cfg.replicate.seeds]
    check_seeds(cfg, seeds)
    key = replicate_key(cfg)
    name = cfg.replicate.name or f"replicate-{cfg.task.name}-{key}"
    client = MlflowClient(tracking_uri(cfg))
    parent_id = find_parent(client, cfg, key)
    tags = {KEY_TAG: key, "memgen.replicate.seeds": ",".join(map(str, seeds))}
    context = (tracked_run(cfg, COMMAND, run_id=parent_id) if parent_id
               else tracked_run(cfg, COMMAND, run_name=name, extra_tags=tags))
    with context as parent:
        done = _finished_seeds(client, cfg, parent.run_id)
        todo = [s for s in seeds if s not in done]
        threads = threads_per_seed(cfg)
        print(f"memgen replicate: {name}, seeds {seeds}: {len(seeds) - len(todo)} finished "
              f"earlier, {len(todo)} to run on {cfg.replicate.workers} worker(s) x {threads} "
              f"thread(s)", file=sys.stderr)
        if todo:
            from memgen.sweeps.worker import run_parallel  # noqa: PLC0415

            base = OmegaConf.to_container(cfg, resolve=True)
            base["trainer"]["num_threads"] = threads
            jobs = [SeedJob(base, share, parent.run_id, name, worker=i)
                    for i, share in enumerate(split_seeds(todo, cfg.replicate.workers))]
            run_parallel(run_seeds, jobs, "memgen-replicate")
        finished = {s: r for s, r in _finished_seeds(client, cfg, parent.run_id).items()
                    if s in seeds}
        failed = [s for s in seeds if s not in finished]
        result = summarise(cfg, {s: dict(r.data.metrics) for s, r in finished.items()}, failed)
        result.metrics["replicate/wall_s"] = time.time() - started
        from memgen.tracking.replicate_report import log_replicate  # noqa: PLC0415

        log_replicate(parent, result)
    return result.metrics, {"run_id": parent.run_id, "summary": result.text, "result": result}


@dataclass
class ReplicateResult:
    """What a replicate computed from its children; the tracking layer logs it."""

    seeds: list[int]
    failed: list[int]
    aggregates: Any  # DataFrame: one row per shared metric
    per_seed: Any  # DataFrame: seeds x shared metrics
    claims_long: Any  # DataFrame: claim x seed verdicts
    claims_summary: Any  # DataFrame: claim, pass count, CI of the statistic
    metrics: dict[str, float]
    text: str


def summarise(cfg: DictConfig, per_seed: dict[int, dict[str, float]], failed: list[int]
              ) -> ReplicateResult:
    """Aggregates, per-seed table and scorecard from the finished seeds' metrics."""
    table = aggregate(per_seed) if per_seed else None
    scored = {seed: score_claims(m, cfg.claims) for seed, m in per_seed.items()}
    long, summary = claims_over_seeds(scored, failed)
    metrics = aggregate_metrics(table) if table is not None else {}
    metrics |= {"replicate/n_seeds": float(len(per_seed) + len(failed)),
                "replicate/n_finished": float(len(per_seed)),
                "replicate/n_failed": float(len(failed))}
    for row in summary.itertuples(index=False):
        metrics[f"claims/{row.claim}/pass_rate"] = float(row.pass_rate)
    keys = list(table["metric"]) if table is not None else []
    text = (f"replicate: {len(per_seed)} seed(s) finished"
            + (f", failed: {failed}" if failed else "") + "\n\n"
            + format_replicate_scorecard(summary))
    return ReplicateResult(sorted(per_seed), failed, table, per_seed_table(per_seed, keys),
                           long, summary, metrics, text)

