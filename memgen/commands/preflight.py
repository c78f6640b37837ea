"""Checks before a run exists: the store, hardware settings and the output folder."""

from __future__ import annotations

from omegaconf import DictConfig

from memgen.errors import ConfigError

TRAINING_COMMANDS = ("run", "train", "sweep", "pretrain", "replicate")
# Lightning's launcher re-executes the command line for every extra process: a sweep or a
# replicate would start whole copies of itself, so they run their children on one process each.
ONE_PROCESS_COMMANDS = ("sweep", "replicate")


def preflight(command: str, cfg: DictConfig) -> None:
    """The store (damaged, read-only, missing next to artifacts), hardware settings and the
    output folder: each a ConfigError before anything is written."""
    from memgen.tracking.store import check_store  # noqa: PLC0415

    check_store(cfg)
    if command in TRAINING_COMMANDS:
        from memgen.training.devices import check_devices, check_output_dir  # noqa: PLC0415

        processes = check_devices(cfg)
        if command in ONE_PROCESS_COMMANDS and processes > 1:
            raise ConfigError(f"trainer.devices: memgen {command} trains each child on one "
                              f"process; {cfg.trainer.devices!r} would start {processes} "
                              f"(several devices are for memgen run/train)")
        check_output_dir(cfg)
