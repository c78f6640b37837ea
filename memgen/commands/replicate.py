"""``memgen replicate``: one experiment over several training seeds, with error bars.

One MLflow parent run holds one child per seed; each child is an ordinary ``memgen run`` run
(``commands.run.run`` with a parent), logging everything a run logs. The parent gets every shared
summary metric's across-seed mean and 95% CI, a per-seed table and the claims scorecard.

The parent is keyed by the config without its seed (:func:`memgen.config.config_digest`):
re-running the same command reopens it, skips the seeds that FINISHED under it and reruns
the FAILED or KILLED ones. A seed that fails is recorded as failed; the others go on.
Workers come from the sweep machinery (:func:`memgen.sweeps.worker.run_parallel`).

``replicate.models=<parent id>`` trains nothing: each child is ``memgen analyse`` on the model
of the earlier replicate's FINISHED child of that seed, under this command's ``analysis.*``.
Its key is the source parent and the analysis config, so the same command resumes it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from memgen.config import RESULT_NEUTRAL, config_digest, plain, to_schema
from memgen.errors import ConfigError
from memgen.replicates.aggregate import (
    aggregate,
    aggregate_metrics,
    claims_over_seeds,
    format_replicate_scorecard,
    per_seed_table,
)
from memgen.replicates.claims import score_claims
from memgen.tracking.run import context_tags, tracked_run
from memgen.tracking.search import children, runs_tagged
from memgen.tracking.store import check_store, tracking_uri

COMMAND = "replicate"
KEY_TAG = "memgen.replicate.key"
MODELS_TAG = "memgen.replicate.models"  # the replicate whose models a re-analysis reads


@dataclass
class SeedJob:
    """One worker's seeds, picklable for ``spawn``."""

    base: dict[str, Any]
    seeds: list[int]
    parent_run_id: str
    parent_name: str
    worker: int = 0
    models: dict[int, str] | None = None  # seed -> model run id: analyse, do not train


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


def replicate_key(cfg: DictConfig, seeds: list[int]) -> str:
    """What defines the experiment and its seeds: the parent run's identity (seeds 5-9 of a
    config are another parent than its seeds 0-4, so each parent's scorecard covers its own
    seeds). A re-analysis is defined by its source replicate, the seeds it takes from it and
    the analysis config alone (task and model are the source's)."""
    seed_list = ",".join(map(str, sorted(seeds)))
    if cfg.replicate.models:
        return config_digest(cfg, drop=tuple(str(k) for k in cfg if k != "analysis"),
                             extra=f"models={cfg.replicate.models};seeds={seed_list}")
    # the thread count per seed changes float reduction order, hence the trained models: a
    # replicate at 2 threads is another experiment than the same config at 1
    return config_digest(cfg, drop=RESULT_NEUTRAL + ("seed",),
                         extra=f"threads={threads_per_seed(cfg)};seeds={seed_list}")


def seed_config(base: dict[str, Any], seed: int) -> DictConfig:
    return to_schema(base | {"seed": seed})


def check_seeds(cfg: DictConfig, seeds: list[int]) -> None:
    """Every seed's config validates, and the first builds its task and model, before the
    parent run exists: a bad seed or task file leaves no FAILED parent behind."""
    from memgen.training.runner import prepare  # noqa: PLC0415 - Lightning only where training happens

    base = plain(cfg)
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
    from memgen.commands.run import run  # noqa: PLC0415 - Lightning only where training happens
    from memgen.sweeps.trials import failed_child  # noqa: PLC0415

    for seed in job.seeds:
        cfg = seed_config(job.base | ({"run": job.models[seed]} if job.models else {}), seed)
        name = f"{job.parent_name}/seed-{seed}"
        try:
            if job.models:
                from memgen.commands.analyse import analyse  # noqa: PLC0415

                analyse(cfg, parent_run_id=job.parent_run_id, run_name=name)
            else:
                run(cfg, parent_run_id=job.parent_run_id, run_name=name)
        except ConfigError as exc:  # nothing ran: a FAILED child says why
            failed_child(cfg, job.parent_run_id, name, {"seed": str(seed)}, {"seed": seed},
                         str(exc), command="analyse" if job.models else "run")
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


def other_code(done: dict[int, Any], seeds: list[int]) -> str:
    """A line naming the seeds kept from an earlier invocation that ran another git commit
    than this checkout ('' when there are none, or no commit is known)."""
    now = context_tags().get("mlflow.source.git.commit")
    if not now:
        return ""
    before = {s: done[s].data.tags.get("git.commit", "unknown") for s in seeds if s in done}
    stale = {s: c for s, c in before.items() if c != now}
    if not stale:
        return ""
    commits = ", ".join(sorted({c[:7] for c in stale.values()}))
    return (f"seed(s) {sorted(stale)} finished earlier under commit {commits} (this checkout: "
            f"{now[:7]})")


def finished_children(client: MlflowClient, parent: Any) -> dict[int, Any]:
    """seed -> the newest FINISHED child of a parent run (in the parent's experiment)."""
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"], max_results=50000)
    out: dict[int, Any] = {}
    for run in runs:
        seed = run.data.tags.get("seed")
        if run.info.status == "FINISHED" and seed is not None and seed.lstrip("-").isdigit():
            out[int(seed)] = run
    return out


def replicate_parent(client: MlflowClient, run_id: str, key: str) -> Any:
    """A FINISHED ``memgen replicate`` parent run; otherwise one line naming ``key``."""
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow's not-found error, or a malformed id
        raise ConfigError(f"{key}: no run '{run_id}' in this tracking store") from None
    if run.data.tags.get("memgen.command") != COMMAND:
        raise ConfigError(f"{key}: run {run_id} is not a replicate parent (it was made by "
                          f"memgen {run.data.tags.get('memgen.command', '?')})")
    if run.info.status != "FINISHED":
        raise ConfigError(f"{key}: replicate {run_id} is {run.info.status}, not FINISHED")
    return run


def source_models(client: MlflowClient, source_id: str) -> tuple[Any, dict[int, str]]:
    """The source replicate and seed -> its FINISHED child's run id, every one with a model."""
    from memgen.commands.analyse import check_model_run  # noqa: PLC0415

    key = "replicate.models"
    source = replicate_parent(client, source_id, key)
    kids = finished_children(client, source)
    if not kids:
        raise ConfigError(f"{key}: replicate {source_id} has no finished seed to re-analyse")
    for run in kids.values():
        check_model_run(client, run.info.run_id, key)
    return source, {seed: run.info.run_id for seed, run in sorted(kids.items())}


def source_config(client: MlflowClient, cfg: DictConfig, source_id: str, seeds: list[int]
                  ) -> DictConfig:
    """The parent's config of a re-analysis: the source replicate's task and model (its params
    and tags say what was analysed) with this command's analysis, claims and tracking."""
    from memgen.commands.analyse import analysis_base  # noqa: PLC0415
    from memgen.tracking.load import run_config  # noqa: PLC0415

    merged = plain(analysis_base(cfg, run_config(client, source_id), None))
    merged["replicate"]["seeds"] = seeds
    return to_schema(merged)


def find_parent(client: MlflowClient, cfg: DictConfig, key: str) -> str | None:
    runs = runs_tagged(client, cfg.tracking.experiment, {KEY_TAG: key,
                                                         "memgen.command": COMMAND})
    return runs[-1].info.run_id if runs else None


def reanalysed_seeds(cfg: DictConfig, models: dict[int, str], seeds_given: bool) -> list[int]:
    """The source's seeds a re-analysis takes: ``replicate.seeds`` when the command line set
    it (each must be one of the source's), else every seed of the source."""
    if not seeds_given:
        return sorted(models)
    seeds = [int(s) for s in cfg.replicate.seeds]
    missing = [s for s in seeds if s not in models]
    if missing:
        raise ConfigError(f"replicate.seeds: {missing} are not finished seeds of replicate "
                          f"{cfg.replicate.models} (its seeds: {sorted(models)})")
    return seeds


def replicate(cfg: DictConfig, seeds_given: bool = False
              ) -> tuple[dict[str, float], dict[str, Any]]:
    """Run (or resume) every seed, then aggregate and score on the parent run;
    ``seeds_given``: the command line set ``replicate.seeds`` (a re-analysis then takes only
    those seeds of its source)."""
    check_store(cfg)
    started = time.time()
    client = MlflowClient(tracking_uri(cfg))
    models: dict[int, str] = {}
    seeds = [int(s) for s in cfg.replicate.seeds]
    check_seeds(cfg, seeds)
    extra: dict[str, str] = {}
    if cfg.replicate.models:  # the source's seeds, its models: nothing is trained
        source, models = source_models(client, cfg.replicate.models)
        seeds = reanalysed_seeds(cfg, models, seeds_given)
        models = {s: models[s] for s in seeds}
        key = replicate_key(cfg, seeds)
        cfg = source_config(client, cfg, source.info.run_id, seeds)
        name = cfg.replicate.name or f"reanalyse-{source.info.run_name}-{key}"
        extra = {MODELS_TAG: cfg.replicate.models}
    else:
        key = replicate_key(cfg, seeds)
        name = cfg.replicate.name or f"replicate-{cfg.task.name}-{key}"
    parent_id = None if cfg.replicate.fresh else find_parent(client, cfg, key)
    tags = {KEY_TAG: key, "memgen.replicate.seeds": ",".join(map(str, seeds))} | extra
    context = (tracked_run(cfg, COMMAND, run_id=parent_id) if parent_id
               else tracked_run(cfg, COMMAND, run_name=name, extra_tags=tags))
    with context as parent:
        done = _finished_seeds(client, cfg, parent.run_id)
        todo = [s for s in seeds if s not in done]
        stale = other_code(done, seeds)
        if stale:
            print(f"memgen replicate: {stale}; their numbers are that code's: "
                  "replicate.fresh=true runs every seed again under a new parent",
                  file=sys.stderr)
        threads = threads_per_seed(cfg)
        print(f"memgen replicate: {name}, seeds {seeds}: {len(seeds) - len(todo)} finished "
              f"earlier, {len(todo)} to {'re-analyse' if models else 'run'} on "
              f"{cfg.replicate.workers} worker(s) x {threads} thread(s)", file=sys.stderr)
        if todo:
            from memgen.sweeps.worker import run_parallel  # noqa: PLC0415

            base = plain(cfg)
            base["trainer"]["num_threads"] = threads
            jobs = [SeedJob(base, share, parent.run_id, name, worker=i, models=models or None)
                    for i, share in enumerate(split_seeds(todo, cfg.replicate.workers))]
            run_parallel(run_seeds, jobs, "memgen-replicate")
        finished = {s: r for s, r in _finished_seeds(client, cfg, parent.run_id).items()
                    if s in seeds}
        failed = [s for s in seeds if s not in finished]
        result = summarise(cfg, {s: dict(r.data.metrics) for s, r in finished.items()}, failed)
        result.metrics["replicate/wall_s"] = time.time() - started
        from memgen.reporting.replicate_report import log_replicate  # noqa: PLC0415

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
    table = aggregate(per_seed, float(cfg.claims.max_p_value)) if per_seed else None
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

