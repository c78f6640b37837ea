"""memgen: neuron-level differentiation of memorization and generalization in language models.

The Python API analyses any Hugging Face causal LM on a memgen task, with no MLflow or Hydra::

    import memgen

    task = memgen.build_task("arithmetic", seed=0, n_conflict=100, n_clean=50)
    subject = memgen.Subject(model, tokenizer, task)     # e.g. from_pretrained(...)
    analysis = memgen.analyse_model(subject, memgen.AnalysisSettings(n_conflict=100))
    analysis.metrics["steer/to_gen/success"]

- :func:`build_task` / ``TASKS``: the tasks (``memgen.tasks``);
- :class:`AnalysisSettings` (with :class:`Decoding`, :class:`ProbeSettings`,
  :class:`SteeringSettings`) and :class:`Subject`: what to analyse and how
  (``memgen.analysis.settings``);
- :func:`analyse_model`: every stage, returning an :class:`Analysis`; the single stages
  (``contrast``, ``run_probes``, ``tune_steering``, ``run_steering``...) are in
  ``memgen.analysis.stages``.

Names load on first use, so ``import memgen`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "build_task": "memgen.tasks",
    "TASKS": "memgen.tasks",
    "AnalysisSettings": "memgen.analysis.settings",
    "Decoding": "memgen.analysis.settings",
    "ProbeSettings": "memgen.analysis.settings",
    "SteeringSettings": "memgen.analysis.settings",
    "Subject": "memgen.analysis.settings",
    "Analysis": "memgen.analysis.results",
    "analyse_model": "memgen.analysis.stages",
    "NoPairsError": "memgen.analysis.stages",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'memgen' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
