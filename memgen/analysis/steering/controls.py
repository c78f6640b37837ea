"""Control selections: steering on neurons that should not matter.

If the selected neurons carry the behaviour, moving them must beat moving these:
- ``random``: as many random (site, index) coordinates as selected, each shifted by a selected
  neuron's abs(NMD) with a random sign (matched magnitudes; DESIGN.md's random control);
- ``low_r``: the neurons with the lowest abs(r) (and a non-zero NMD), with their own NMD;
- ``shuffled``: the selected neurons with their shifts permuted among them.

Random coordinates are drawn from all coordinates of the given sites, excluding the selected
neurons. Everything is deterministic from the seed. Each control has as many neurons as asked.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.stats import lowest_neurons

CONTROL_NAMES = ("random", "low_r", "shuffled")

SitesSpec = Mapping[str, SiteStats] | Mapping[str, int]


def _widths(stats_or_site_widths: SitesSpec) -> dict[str, int]:
    widths = {site: (v.width if isinstance(v, SiteStats) else int(v))
              for site, v in stats_or_site_widths.items()}
    if not widths or sum(widths.values()) == 0:
        raise ValueError("stats_or_site_widths: no sites (or only empty ones) to draw from")
    return widths


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _flat_to_neurons(widths: dict[str, int], flat: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Global flat coordinates (sites concatenated in dict order) -> (sites, indices)."""
    names = list(widths)
    offsets = torch.tensor([0] + [widths[s] for s in names]).cumsum(0)
    which = torch.searchsorted(offsets[1:], flat, right=True)
    return [names[i] for i in which.tolist()], flat - offsets[which]


def _r_of(stats_or_site_widths: SitesSpec, sites: list[str], indices: torch.Tensor) -> torch.Tensor:
    """The neurons' r where statistics are given, else NaN."""
    out = torch.full((len(sites),), float("nan"))
    for j, (site, i) in enumerate(zip(sites, indices.tolist(), strict=True)):
        value = stats_or_site_widths[site]
        if isinstance(value, SiteStats):
            out[j] = value.r[i].float()
    return out


def _random_neurons(stats_or_site_widths: SitesSpec, k: int, seed: int,
                    exclude: NeuronSelection | None,
                    ) -> tuple[list[str], torch.Tensor, torch.Generator]:
    widths = _widths(stats_or_site_widths)
    gen = _generator(seed)
    banned = set(exclude.keys()) if exclude is not None else set()
    order = torch.randperm(sum(widths.values()), generator=gen)[: k + len(banned)]
    sites, indices = _flat_to_neurons(widths, order)
    keep = [j for j, key in enumerate(zip(sites, indices.tolist(), strict=True))
            if key not in banned][:k]
    if len(keep) < k:
        raise ValueError(f"k: {k} random neurons requested, only {len(keep)} available")
    chosen = torch.tensor(keep, dtype=torch.long)
    return [sites[j] for j in keep], indices[chosen], gen


def matched_random_control(stats_or_site_widths: SitesSpec, selection: NeuronSelection,
                           seed: int = 0) -> NeuronSelection:
    """Random coordinates (not selected ones) with the selection's abs(NMD) and random signs."""
    k = len(selection)
    if k < 1:
        raise ValueError("selection: empty, nothing to match")
    sites, indices, gen = _random_neurons(stats_or_site_widths, k, seed, selection)
    signs = torch.randint(0, 2, (k,), generator=gen).float() * 2 - 1
    shifts = selection.nmd.detach().float().cpu().abs() * signs
    return NeuronSelection(sites=sites, indices=indices, nmd=shifts,
                           r=_r_of(stats_or_site_widths, sites, indices))


def low_r_control(stats: Mapping[str, SiteStats], k: int | NeuronSelection) -> NeuronSelection:
    """The k lowest-abs(r) neurons (non-zero NMD) with their own NMD as shift; k may be a
    selection, whose size is then matched."""
    return lowest_neurons(dict(stats), len(k) if isinstance(k, NeuronSelection) else int(k))


def shuffled_control(selection: NeuronSelection, seed: int = 0) -> NeuronSelection:
    """The same neurons with their shifts permuted (never the identity when k > 1)."""
    k = len(selection)
    perm = torch.randperm(k, generator=_generator(seed))
    if k > 1 and torch.equal(perm, torch.arange(k)):
        perm = perm.roll(1)
    return NeuronSelection(sites=list(selection.sites), indices=selection.indices.clone(),
                           nmd=selection.nmd[perm].clone(), r=selection.r.clone())


def build_controls(stats_or_site_widths: SitesSpec, selection: NeuronSelection, seed: int = 0,
                   names: tuple[str, ...] | list[str] = CONTROL_NAMES,
                   ) -> dict[str, NeuronSelection]:
    """The named controls for one selection; ``low_r`` needs ``SiteStats``, not widths."""
    out: dict[str, NeuronSelection] = {}
    for name in names:
        if name == "random":
            out[name] = matched_random_control(stats_or_site_widths, selection, seed)
        elif name == "low_r":
            if not all(isinstance(v, SiteStats) for v in stats_or_site_widths.values()):
                raise ValueError("names: control 'low_r' needs SiteStats, not site widths")
            out[name] = low_r_control(stats_or_site_widths, selection)  # type: ignore[arg-type]
        elif name == "shuffled":
            out[name] = shuffled_control(selection, seed)
        else:
            raise ValueError(f"names: unknown control {name!r} (expected one of {CONTROL_NAMES})")
    return out
