"""``memgen train`` and ``memgen run``: one tracked run, stages in order.

``train(cfg)`` and ``run(cfg)`` return ``(metrics, objects)`` so tests and notebooks call them
directly; the CLI only composes the config and prints the summary.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from omegaconf import DictConfig

from memgen.analysis.settings import Subject
from memgen.analysis.stages import analyse_model
from memgen.analysis.timing import StageTimer
from memgen.config.adapter import settings_from_config
from memgen.replicates.claims import format_scorecard, score_claims
from memgen.reporting.replicate_report import log_scorecard
from memgen.reporting.report import finish_run, log_analysis, log_summary, summary
from memgen.training import runner
from memgen.training.distributed import exported_checkpoint, is_rank_zero, job_run
from memgen.training.regime import NEVER_BOTH_TAG


def train(cfg: DictConfig, command: str = "train") -> tuple[dict[str, float], dict[str, Any]]:
    """Train one model in one tracked run (or continue ``resume``'s); returns (metrics, objects)."""
    return _execute(cfg, command, analyse=False)


def run(cfg: DictConfig, parent_run_id: str | None = None, run_name: str | None = None
        ) -> tuple[dict[str, float], dict[str, Any]]:
    """The main job: train, then analyse the kept checkpoint, all in one run (a child of
    ``parent_run_id`` when a replicate runs it)."""
    return _execute(cfg, "run", analyse=cfg.analysis.enabled, parent_run_id=parent_run_id,
                    run_name=run_name)


def _execute(cfg: DictConfig, command: str, analyse: bool, parent_run_id: str | None = None,
             run_name: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Validate, then in one run: fit, log the kept checkpoint's rates and model, analyse.

    Logs ``time/<stage>_s`` for its own stages (``task``: building and checking task and model;
    ``training``, ``kept_rates``, ``log_model``, ``analysis`` (the sum of the analysis' own
    stage times), ``logging``, ``report``, ``total``)."""
    timer, started = StageTimer(), time.perf_counter()
    ckpt_path = None
    if cfg.resume:  # rank 0 picks the checkpoint; the ranks it launches are told
        ckpt_path = (runner.resume_checkpoint(cfg, cfg.resume) if is_rank_zero()
                     else exported_checkpoint())
    task, tokenizer, model = runner.prepare(cfg)
    timer.lap("task")
    with job_run(cfg, command, run_id=cfg.resume, parent_run_id=parent_run_id,
                 run_name=run_name) as tracked:
        timer.restart()
        trained = runner.fit(cfg, tracked, task, tokenizer, model, ckpt_path=ckpt_path)
        timer.lap("training")
        if not is_rank_zero():  # training was their share: what follows runs once, on rank 0
            return trained.metrics, {"run_id": tracked.run_id}
        rates = runner.kept_checkpoint_rates(cfg, trained)
        timer.lap("kept_rates")
        if trained.never_both:  # said once, on stderr and on the run; the analysis is skipped
            print(f"memgen: {trained.never_both}", file=sys.stderr)
            tracked.set_tags({NEVER_BOTH_TAG: trained.never_both})
            analyse = False
        log_summary(tracked, rates, step=None)  # rounded, without a step
        trained.metrics |= rates
        if cfg.tracking.log_model:
            runner.log_model(tracked, trained)
            timer.lap("log_model")
        objects: dict[str, Any] = {"trained": trained, "run_id": tracked.run_id,
                                   "experiment_id": tracked.experiment_id}
        analysis, claims, figures = None, None, {}
        if analyse:
            analysis = analyse_model(Subject(trained.model, trained.tokenizer, trained.task),
                                     settings_from_config(cfg), allow_no_pairs=True)
            timer.lap("analysis")
            figures = log_analysis(tracked, analysis, step=trained.epochs_done)
            trained.metrics |= analysis.metrics
            claims = score_claims(trained.metrics, cfg.claims)
            log_scorecard(tracked, claims)
            objects |= {"analysis": analysis, "claims": claims,
                        "summary": summary(analysis) + "\n\nclaims\n" + format_scorecard(claims)}
            timer.lap("logging")
        if trained.never_both:
            objects["summary"] = trained.never_both
        trained.metrics |= timer.metrics()
        log_summary(tracked, timer.metrics(), step=None)
        objects["report_s"] = finish_run(tracked, trained.metrics, trained.best_checkpoint,
                                         analysis, claims, figures)
        ends = {"time/report_s": objects["report_s"],
                "time/total_s": time.perf_counter() - started}
        log_summary(tracked, ends, step=None)
        trained.metrics |= ends
    return trained.metrics, objects
