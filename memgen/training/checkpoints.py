"""Loading Lightning checkpoints safely (``weights_only=True``) into a bare model."""

from __future__ import annotations

from pathlib import Path

import torch


def load_module_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load a LightningModule checkpoint's ``state_dict`` without unpickling arbitrary objects."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"], strict=getattr(module, "strict_loading", True))
