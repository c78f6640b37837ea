"""Lightning checkpoints that are written whole and loaded only when complete.

A checkpoint is written to a temporary file and renamed into place (a kill -9 mid-write leaves
the previous file intact), and a resume picks the newest checkpoint whose optimizer state covers
every parameter: an interrupt inside ``optimizer.step`` once saved Adam state for 29 of 52
parameters, and resuming from it raised ``KeyError: 'exp_avg_sq'``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO


def load_module_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load a LightningModule checkpoint's ``state_dict`` without unpickling arbitrary objects."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"], strict=getattr(module, "strict_loading", True))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file in the same folder, then ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _optimizer_state_complete(state: dict[str, Any]) -> bool:
    """Every parameter of every group has a state with the same keys (or none has one yet)."""
    per_param = state.get("state", {})
    if not per_param:
        return True
    ids = [i for group in state.get("param_groups", []) for i in group.get("params", [])]
    if set(per_param) != set(ids):
        return False
    keys = {frozenset(v) for v in per_param.values()}
    return len(keys) == 1


def at_epoch_end(checkpoint: dict[str, Any]) -> bool:
    """Saved after a whole training epoch (its last batch and ``on_train_epoch_end`` done).

    Lightning resumes a mid-epoch checkpoint with a restarted plain dataloader: it trained a
    batch twice or skipped a validation, so such a file is kept for inspection only.
    """
    fit_loop = checkpoint.get("loops", {}).get("fit_loop")
    if not fit_loop:
        return True
    epoch = fit_loop.get("epoch_progress", {}).get("current", {})
    batch = fit_loop.get("epoch_loop.batch_progress", {}).get("current", {})
    return (epoch.get("processed") == epoch.get("started")
            and batch.get("completed") == batch.get("ready"))


def whole_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint if it loads and its optimizer state covers every parameter, else None."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - truncated, garbage or not a checkpoint: unusable
        return None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return None
    states = checkpoint.get("optimizer_states", [])
    if not states or not all(_optimizer_state_complete(s) for s in states):
        return None
    return checkpoint


def checkpoint_step(path: str | Path) -> int | None:
    """The ``global_step`` of a whole checkpoint saved at an epoch end (a resume point)."""
    checkpoint = whole_checkpoint(path)
    if checkpoint is None or not at_epoch_end(checkpoint):
        return None
    return int(checkpoint.get("global_step", 0))


def resume_tags(path: str | Path) -> dict[str, str]:
    """Where a resume starts: tags that show no finished epoch is trained again."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {"memgen.resume.checkpoint": Path(path).name,
            "memgen.resume.epoch": str(checkpoint.get("epoch", 0)),
            "memgen.resume.step": str(checkpoint.get("global_step", 0))}


def newest_complete(paths: list[Path]) -> Path | None:
    """The complete checkpoint with the highest global step (the newest file breaks ties)."""
    scored = []
    for path in paths:
        step = checkpoint_step(path)
        if step is not None:
            scored.append((step, path.stat().st_mtime, path))
    return max(scored, key=lambda t: (t[0], t[1]))[2] if scored else None
