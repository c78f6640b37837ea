"""Worker processes: each loads the study, builds its evaluator once, and runs its share.

The trial budget is split up front (``n_trials`` = the sum of the shares), so N workers run
exactly ``n_trials`` trials: Optuna's ``MaxTrialsCallback`` stops only after a trial finishes,
and a racing worker may already have started one more. Workers are spawned, not forked: a
forked copy of a process that has started torch's thread pools can hang.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from memgen.config import to_schema
from memgen.errors import ConfigError
from memgen.sweeps.objectives import Objective
from memgen.sweeps.space import Param
from memgen.sweeps.storage import make_pruner, make_sampler, open_storage
from memgen.sweeps.trials import SteeringEvaluator, TrainingEvaluator, TrialObjective


@dataclass
class Job:
    """Everything one worker needs, picklable for ``spawn``."""

    kind: str
    study_name: str
    storage: str
    base: dict[str, Any]
    params: list[Param]
    objectives: list[Objective]
    parent_run_id: str
    pruner: str
    sampler_seed: int
    start: int  # trials in the study when this sweep began
    n_trials: int
    model_run_id: str | None = None
    deadline: float | None = None  # time.time() after which no new trial starts
    worker: int = 0
    workers: int = 1


def split_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` over ``workers`` as evenly as possible, the first ones taking the rest."""
    share, rest = divmod(n_trials, workers)
    return [share + (i < rest) for i in range(workers)]


def run_worker(job: Job) -> None:
    """Build the evaluator once, then run this worker's share of trials."""
    if job.n_trials <= 0:
        return
    base = to_schema(job.base)
    if base.trainer.num_threads:
        torch.set_num_threads(base.trainer.num_threads)
    pruning = job.kind == "training" and job.pruner != "none" and len(job.objectives) == 1
    study = optuna.load_study(
        study_name=job.study_name, storage=open_storage(job.storage),
        sampler=make_sampler(job.sampler_seed, job.start, job.worker, job.workers),
        pruner=make_pruner(job.pruner if pruning else "none"))
    evaluate: SteeringEvaluator | TrainingEvaluator
    if job.kind == "steering":
        assert job.model_run_id is not None  # the plan resolves a steering sweep's model run
        evaluate = SteeringEvaluator(base, job.model_run_id)
    else:
        evaluate = TrainingEvaluator(job.objectives, pruning)
    objective = TrialObjective(base, job.params, job.objectives, evaluate, job.parent_run_id,
                               job.study_name, job.worker)
    timeout = None if job.deadline is None else job.deadline - time.time()
    if timeout is not None and timeout <= 0:
        return
    study.optimize(objective, n_trials=job.n_trials, timeout=timeout, catch=(Exception,))


def _spawned(target: Callable[[Any], None], job: Any, errors) -> None:
    try:
        target(job)
    except KeyboardInterrupt:  # Ctrl-C reached the whole group: the parent says it once
        sys.exit(130)
    except BaseException as exc:
        errors.put((getattr(job, "worker", 0), type(exc).__name__, str(exc),
                    traceback.format_exc()))
        raise


def run_parallel(target: Callable[[Any], None], jobs: Sequence[Any], label: str) -> None:
    """``target(job)`` for each job: one in this process (so tests can spy on it), more in
    spawned processes. A ConfigError in a worker is re-raised as one; any other failure as a
    RuntimeError naming its last line. Ctrl-C terminates the workers (their runs end KILLED).
    """
    if len(jobs) == 1:
        target(jobs[0])
        return
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_spawned, args=(target, job, errors), name=f"{label}-{i}")
             for i, job in enumerate(jobs)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except BaseException:  # Ctrl-C: stop the workers; their runs end KILLED
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=30)
        raise
    reports = []
    while not errors.empty():
        reports.append(errors.get())
    for _, kind, message, _ in reports:
        if kind == "ConfigError":
            raise ConfigError(message)
    if any(p.exitcode == 130 for p in procs):  # a worker was interrupted: so is the sweep
        raise KeyboardInterrupt
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if reports or bad:
        detail = reports[0][3].strip().splitlines()[-1] if reports else f"exit codes {bad}"
        raise RuntimeError(f"{label} worker failed: {detail}")


def run_workers(jobs: list[Job]) -> None:
    """The sweep's workers, each running its share of trials."""
    run_parallel(run_worker, jobs, "memgen-sweep")
