"""Data types shared by statistics, probes, steering and consistency.

A neuron is one coordinate of one site: ``(site, index)``. Statistics are per site; a selection
is a globally ranked list of neurons with the shift (NMD) each one receives when steered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SiteStats:
    """Per-neuron statistics of one site, computed on MEM (label 1) vs GEN (label 0) samples."""

    site: str
    n_mem: int
    n_gen: int
    mean_mem: torch.Tensor  # [D]
    mean_gen: torch.Tensor  # [D]
    nmd: torch.Tensor  # [D] mean_mem - mean_gen
    r: torch.Tensor  # [D] Pearson r of activation with the label (0 where undefined)
    # [D] steering's ranking score where it is not abs(r) (``steering/attribution.py``): the
    # highest are selected first; None ranks by abs(r)
    priority: torch.Tensor | None = None

    @property
    def width(self) -> int:
        return int(self.nmd.numel())


@dataclass
class NeuronSelection:
    """Selected neurons, best first, with their NMD shift and r."""

    sites: list[str]  # site of each neuron
    indices: torch.Tensor  # [K] long, coordinate within the site
    nmd: torch.Tensor  # [K] float, shift direction and size (toward MEM)
    r: torch.Tensor  # [K] float

    def __len__(self) -> int:
        return int(self.indices.numel())

    def keys(self) -> list[tuple[str, int]]:
        """Hashable ``(site, index)`` pairs, for overlap statistics."""
        return list(zip(self.sites, self.indices.tolist(), strict=True))
