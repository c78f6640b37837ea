"""Sweep machinery for ``memgen sweep`` (:mod:`memgen.commands.sweep`): an Optuna study over
config keys, one MLflow parent run, a child per trial.

- ``space``: ``sweep.space`` parsed and sampled; ``objectives``: which metrics, which direction;
- ``trials``: one trial = one child run, and the evaluators that score it (steer a trained
  model, or retrain and prune);
- ``worker`` / ``storage``: parallel workers over one Optuna storage; ``pruning``.
The study's report is :mod:`memgen.reporting.sweep_report`.
"""
