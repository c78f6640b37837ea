"""Where a study lives, and the sampler and pruner that drive it.

- default, one worker: ``sqlite:///<tracking root>/optuna.db`` next to MLflow's ``mlflow.db``;
- ``sweep.workers>1`` on one machine: a journal file, ``journal:<tracking root>/optuna.journal``
  (SQLite's file locking does not take parallel writers; Optuna's journal file does);
- many machines: ``sweep.storage=postgresql://user:pass@host/db`` (an RDB server).

Re-running a study name on the same storage resumes it (``load_if_exists``); the study records
its objectives, kind and model run in user attributes so that a mismatched resume fails clearly.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import optuna
from omegaconf import DictConfig

from memgen.errors import ConfigError
from memgen.tracking.store import default_root, tracking_uri

JOURNAL = "journal:"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
# Median pruning only after this many finished trials, and never on the first epochs, where
# val/behavior_balance is 0 for nearly every model and says nothing about the final balance.
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_EPOCHS = 2
PRUNERS = ("none", "median")


def tracking_root(cfg: DictConfig) -> Path:
    """The folder of the SQLite tracking store, else ``default_root()``."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return default_root()


def default_storage(cfg: DictConfig) -> str:
    """SQLite for one worker, a journal file for parallel workers; both under the store."""
    root = tracking_root(cfg)
    if cfg.sweep.workers > 1:
        return f"{JOURNAL}{root / 'optuna.journal'}"
    return f"sqlite:///{root / 'optuna.db'}"


def redact(url: str) -> str:
    """The URL without its password: it goes into MLflow tags."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def check_storage(url: str, workers: int) -> None:
    """A storage URL memgen can open, and one that takes ``workers`` parallel processes."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if url.startswith(JOURNAL):
        if not url[len(JOURNAL):]:
            raise ConfigError("sweep.storage: expected journal:<file path>")
        return
    if scheme not in RDB_SCHEMES or "://" not in url:
        raise ConfigError(f"sweep.storage: expected sqlite:///<file>, journal:<file>, or an RDB "
                          f"URL like postgresql://user@host/db, got {redact(url)!r}")
    if scheme == "sqlite" and workers > 1:
        raise ConfigError(f"sweep.storage: SQLite does not take {workers} parallel workers; "
                          f"use journal:<file> on one machine or postgresql://... across machines")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage for a URL; an unreachable server fails here with one line."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend  # noqa: PLC0415

        path = Path(url[len(JOURNAL):]).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().resolve().parent.mkdir(parents=True,
                                                                         exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
    try:  # a server: heartbeats let a surviving worker fail the trials of a crashed machine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except Exception as exc:  # noqa: BLE001 - drivers raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"sweep.storage: cannot open {redact(url)} ({first})") from None


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=MEDIAN_WARMUP_EPOCHS)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int, start: int, worker: int, workers: int) -> optuna.samplers.TPESampler:
    """TPE seeded from (seed, trials already run, worker index).

    A resumed study or a second worker with the very same seed would replay the same random
    start-up trials; mixing in the history and the worker keeps runs distinct yet repeatable.
    """
    mixed = int(np.random.SeedSequence([seed, start, worker]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=mixed, constant_liar=workers > 1)


def load_study(name: str, storage: optuna.storages.BaseStorage, directions: list[str],
               sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study or resume it; a resume with other directions fails clearly."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions,  # type: ignore[arg-type]  # checked below
                                load_if_exists=True)
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(f"sweep.objectives: study {name!r} exists with directions {found}, "
                          f"not {directions}; use another sweep.study_name")
    return study


def check_resume(study: optuna.Study, attrs: dict[str, str]) -> None:
    """Record what the study optimizes on first use; refuse to mix another kind or model in."""
    for key, value in attrs.items():
        found = study.user_attrs.get(key)
        if found is None:
            study.set_user_attr(key, value)
        elif found != value:
            raise ConfigError(f"sweep.study_name: study {study.study_name!r} has {key}={found!r}, "
                              f"this sweep has {value!r}; use another sweep.study_name")
