"""Hardware settings and the output folder, checked against Lightning and this machine.

``trainer.accelerator=gpu`` on a machine without one, or ``trainer.precision=bogus``, fails
before a run exists, with one line naming the key: never inside ``fit``, with a traceback and a
FAILED run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from memgen.errors import ConfigError
from memgen.runtime.interrupts import uninterrupted

GPU_NAMES = ("gpu", "cuda", "mps")


def _one_line(exc: BaseException) -> str:
    """Lightning's message on one line ("You requested gpu: [0, 1]  But your machine only
    has: [0]" spans two)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return " ".join(lines)[:300] if lines else type(exc).__name__


def check_accelerator(name: str) -> None:
    """A name Lightning knows, and hardware that is present."""
    from pytorch_lightning.accelerators import AcceleratorRegistry  # noqa: PLC0415
    from pytorch_lightning.accelerators.cuda import CUDAAccelerator  # noqa: PLC0415
    from pytorch_lightning.accelerators.mps import MPSAccelerator  # noqa: PLC0415

    known = sorted(set(AcceleratorRegistry.available_accelerators()) | {"auto", "gpu"})
    if name not in known:
        raise ConfigError(f"trainer.accelerator: expected one of {known}, got {name!r}")
    if name == "gpu":
        present = CUDAAccelerator.is_available() or MPSAccelerator.is_available()
    elif name == "auto":
        present = True
    else:
        present = AcceleratorRegistry[name]["accelerator"].is_available()
    if not present:
        raise ConfigError(f"trainer.accelerator: {name!r} asked for, but this machine has none "
                          f"(use trainer.accelerator=cpu or auto)")


def check_devices(cfg: DictConfig) -> int:
    """accelerator, devices, strategy and precision as Lightning's Trainer would take them;
    returns the number of processes the job would run (Lightning's ``world_size``)."""
    import pytorch_lightning as pl  # noqa: PLC0415
    from lightning_fabric.connector import _convert_precision_to_unified_args  # noqa: PLC0415
    from pytorch_lightning.strategies import StrategyRegistry  # noqa: PLC0415

    tr = cfg.trainer
    check_accelerator(str(tr.accelerator))
    try:
        _convert_precision_to_unified_args(str(tr.precision))  # type: ignore[arg-type]  # checks it
    except ValueError:
        raise ConfigError(f"trainer.precision: expected one of '32-true', 'bf16-mixed', "
                          f"'16-mixed', 'bf16-true', '64-true', ..., got {tr.precision!r}"
                          ) from None
    strategies = {"auto", *StrategyRegistry.available_strategies()}
    if tr.strategy not in strategies:
        raise ConfigError(f"trainer.strategy: expected 'auto', 'ddp', 'fsdp', 'deepspeed' or "
                          f"another Lightning strategy name, got {tr.strategy!r}")
    devices = tr.devices
    if OmegaConf.is_list(devices):
        devices = list(devices)
    ok = (devices == "auto" or (isinstance(devices, int) and (devices >= 1 or devices == -1))
          or (isinstance(devices, list) and devices and all(isinstance(d, int) for d in devices))
          or (isinstance(devices, str) and all(p.strip().lstrip("-").isdigit()
                                               for p in devices.split(",") if p.strip())
              and devices.strip(", ")))
    if not ok:
        raise ConfigError(f"trainer.devices: expected a count (1, 2, -1), a list of indices or "
                          f"'auto', got {devices!r}")
    quiet = logging.getLogger("pytorch_lightning")
    # held from Ctrl-C: setLevel takes logging's module lock without a finally (quiet.py)
    with uninterrupted():
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:  # what this machine has for these settings (e.g. 4 cuda devices on a 1-GPU box)
            trainer = pl.Trainer(accelerator=tr.accelerator, devices=devices,
                                 strategy=tr.strategy, precision=tr.precision, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False)
        except Exception as exc:  # noqa: BLE001 - Lightning's own verdict, in one line
            raise ConfigError(f"trainer.devices: {_one_line(exc)}") from None
        finally:
            quiet.setLevel(level)
    return int(trainer.world_size)


def check_output_dir(cfg: DictConfig) -> None:
    """``output_dir`` exists (or can be made) and is writable: checkpoints go there."""
    folder = Path(cfg.output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot create {folder} ({exc.strerror})") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir: {folder} is not a writable folder")
