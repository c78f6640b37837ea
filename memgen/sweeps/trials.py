"""One Optuna trial = one MLflow child run: sample, build the config, evaluate, log.

Two evaluators:

- :class:`SteeringEvaluator` (``sweep=steering``): built once per worker process, it loads the
  trained model from its MLflow run and runs the analysis' first stages (``contrast``:
  behaviors, activations, neuron statistics) and the clean baseline a single time; a trial then
  only steers (``run_steering``) at its (k, alpha).
- :class:`TrainingEvaluator` (``sweep=training``): a trial retrains through the training runner's
  ``prepare`` / ``fit``, with :class:`~memgen.sweeps.pruning.OptunaPruning` on
  ``val/behavior_balance``, then analyses the kept checkpoint if an objective needs it.

Child runs end FINISHED (complete), KILLED with tag ``optuna.state=PRUNED`` (pruned) or FAILED.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from memgen.analysis.settings import Subject
from memgen.analysis.stages import contrast, run_steering, unsteered_clean
from memgen.analysis.steering.evaluation import summary_metrics
from memgen.config.adapter import settings_from_config
from memgen.errors import ConfigError
from memgen.reporting.report import finite
from memgen.sweeps.objectives import Objective, analysis_stages, objective_values
from memgen.sweeps.space import Param, trial_config
from memgen.tracking.run import TrackedRun, get_experiment_id, tracked_run
from memgen.tracking.store import tracking_uri
from memgen.training import reopen

TRIAL_COMMAND = "sweep.trial"
NEEDS_PAIRS = ("neurons/", "probe/", "steer/", "side/", "consistency/")
Evaluator = Callable[[DictConfig, optuna.Trial, TrackedRun], dict[str, float]]


class SteeringEvaluator:
    """The trained model and its neuron statistics, computed once; each call steers once."""

    def __init__(self, base: DictConfig, model_run_id: str) -> None:
        client = MlflowClient(tracking_uri(base))
        loaded = reopen.load_run(client, model_run_id, device=reopen.device_of(base))
        self.subject = Subject(loaded.model, loaded.tokenizer, loaded.task)
        settings = settings_from_config(base)
        self.behaviors, _, neurons = contrast(self.subject, settings, allow_no_pairs=True)
        if neurons is None:
            raise ConfigError(
                f"sweep.run_id: the model of run {model_run_id} shows no MEM/GEN pairs "
                f"({len(self.behaviors.pairs)} pairs), nothing to steer; set "
                f"analysis.use_pairs=false or pick another run")
        self.neurons = neurons
        self.clean = self.subject.task.clean_examples()
        self.baseline = unsteered_clean(self.subject, settings, self.clean)

    def __call__(self, cfg: DictConfig, trial: optuna.Trial, run: TrackedRun) -> dict[str, float]:
        result = run_steering(self.subject, settings_from_config(cfg), self.neurons,
                              self.behaviors.evaluation, self.clean, self.baseline)
        return summary_metrics(result) | {"steer/k": float(result.k)}


class TrainingEvaluator:
    """Retrain per trial, prune hopeless ones, analyse the kept checkpoint when needed."""

    def __init__(self, objectives: Sequence[Objective], pruning: bool) -> None:
        self.stages = analysis_stages(objectives)
        self.labels_only = not any(o.metric.startswith(NEEDS_PAIRS) for o in objectives)
        self.pruning = pruning

    def __call__(self, cfg: DictConfig, trial: optuna.Trial, run: TrackedRun) -> dict[str, float]:
        from memgen.analysis.stages import analyse_model  # noqa: PLC0415
        from memgen.sweeps.pruning import OptunaPruning  # noqa: PLC0415
        from memgen.training import runner  # noqa: PLC0415 - Lightning only for training sweeps

        task, tokenizer, model = runner.prepare(cfg)
        callbacks = [OptunaPruning(trial)] if self.pruning else []
        trained = runner.fit(cfg, run, task, tokenizer, model, extra_callbacks=callbacks)
        for callback in callbacks:
            callback.raise_if_pruned()
        rates = runner.kept_checkpoint_rates(cfg, trained)
        metrics = trained.metrics | rates
        if cfg.tracking.log_model:
            runner.log_model(run, trained)
        if self.stages is not None:
            subject = Subject(trained.model, trained.tokenizer, trained.task)
            analysis = analyse_model(subject, settings_from_config(cfg), stages=self.stages,
                                     allow_no_pairs=self.labels_only)
            metrics |= analysis.metrics
            if analysis.steering is not None:
                metrics["steer/k"] = float(analysis.steering.k)
        return metrics


def failed_child(base: DictConfig, parent_run_id: str, name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any], error: str, command: str = TRIAL_COMMAND) -> None:
    """A FAILED child for a trial (or replicate seed) that failed before its run existed:
    nothing ran, but the UI shows which values were tried and why they were refused."""
    client = MlflowClient(tracking_uri(base))
    experiment_id = get_experiment_id(client, base)
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, "mlflow.parentRunId": parent_run_id, "memgen.command": command,
        "optuna.state": "FAIL", "memgen.error": error[:5000]})
    tracked = TrackedRun(client, run.info.run_id, experiment_id, tracking_uri(base))
    tracked.log_params(params)
    client.set_terminated(run.info.run_id, status="FAILED")


class TrialObjective:
    """The callable given to ``study.optimize``: one trial, one child run."""

    def __init__(self, base: DictConfig, params: Sequence[Param],
                 objectives: Sequence[Objective], evaluate: Evaluator, parent_run_id: str,
                 study_name: str, worker: int = 0) -> None:
        self.base, self.params, self.objectives = base, list(params), list(objectives)
        self.evaluate, self.parent_run_id = evaluate, parent_run_id
        self.study_name, self.worker = study_name, worker

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        values = {p.key: p.suggest(trial) for p in self.params}
        name = f"{self.study_name}/trial-{trial.number}"  # unique across studies
        tags = {"memgen.sweep.study": self.study_name, "optuna.trial_number": str(trial.number),
                "memgen.sweep.worker": str(self.worker),
                "optuna.params": json.dumps(values, default=str)}
        try:
            cfg = trial_config(self.base, values)
        except ConfigError as exc:
            failed_child(self.base, self.parent_run_id, name, tags, values, str(exc))
            raise
        pruned: optuna.TrialPruned | None = None
        with tracked_run(cfg, TRIAL_COMMAND, parent_run_id=self.parent_run_id, run_name=name,
                         extra_tags=tags) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            try:
                metrics = self.evaluate(cfg, trial, run)
                run.log_metrics(finite(metrics))
                result = objective_values(metrics, self.objectives)
                run.set_tags({"optuna.state": "COMPLETE"})
            except optuna.TrialPruned as exc:
                run.set_tags({"optuna.state": "PRUNED", "optuna.pruned": str(exc)})
                pruned = exc
            except BaseException:
                run.set_tags({"optuna.state": "FAIL"})
                raise
        if pruned is not None:  # tracked_run saw a normal exit: a pruned trial ends KILLED
            run.client.set_terminated(run.run_id, status="KILLED")
            raise pruned
        return result[0] if len(result) == 1 else result
