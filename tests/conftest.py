"""Shared fixtures: tiny configs that write only under pytest's tmp_path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def tiny_overrides(tmp_path, **extra: object) -> list[str]:
    """A seconds-long configuration: small task, 2-layer model, local store under tmp_path."""
    base = {
        "tracking.uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "output_dir": str(tmp_path / "outputs"),
        "task.n_train": 400,
        "task.n_conflict": 40,
        "task.n_val_conflict": 20,
        "task.n_clean": 20,
        "model.n_layer": 2,
        "model.n_embd": 32,
        "model.n_head": 2,
        "trainer.max_epochs": 2,
        "trainer.progress_bar": False,
        "trainer.warmup_steps": 5,
        "trainer.log_every_n_steps": 1,
        "analysis.n_shuffles": 2,
        "analysis.steering.grid_alpha": "[3.0]",
        "analysis.steering.grid_top_fraction": "[0.05]",
    }
    base.update(extra)
    return [f"{key}={value}" for key, value in base.items()]


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a tiny run, as a list for ``memgen.config.compose``."""
    return tiny_overrides(tmp_path)
