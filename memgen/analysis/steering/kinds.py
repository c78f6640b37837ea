"""Build each kind's intervention on a selection, and its matched controls.

The controls (the strongest one is the bar a kind is measured against):
- ``add``/``add_scaled``/``set_mean``: ``random``: the same kind on random coordinates with the
  shift's norm matched (each random neuron gets a selected neuron's abs(shift), a random sign;
  for set_mean the shift is target - source mean), ``low_r``: the lowest-abs(r) neurons with
  their own shift, ``shuffled``: the selected neurons with their shifts permuted;
- ``interchange``: ``random_source``: the same neurons take the values of a random item of the
  target behaviour (another example), not the counterpart;
- ``ablate``: ``random_direction``: a random unit direction over the same coordinates.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch

from memgen.analysis.neurons import NeuronSelection, SiteStats
from memgen.analysis.steering.controls import (
    low_r_control,
    matched_random_control,
    shuffled_control,
)
from memgen.analysis.steering.intervene import Intervention, present
from memgen.tasks.base import Behavior, Example

KIND_CONTROLS = {"add": ("random", "low_r", "shuffled"),
                 "add_scaled": ("random", "low_r", "shuffled"),
                 "set_mean": ("random", "low_r", "shuffled"),
                 "interchange": ("random_source",),
                 "ablate": ("random_direction",)}


def _per_neuron(stats: Mapping[str, SiteStats | torch.Tensor], sel: NeuronSelection,
                attr: str | None = None) -> torch.Tensor:
    """The selection's value of a per-site vector (a SiteStats attribute, or a tensor)."""
    out = torch.empty(len(sel))
    for j, (site, i) in enumerate(sel.keys()):
        value = stats[site]
        vector = getattr(value, attr) if attr else value
        assert isinstance(vector, torch.Tensor), (site, attr)  # a per-neuron vector
        out[j] = float(vector[i])
    return out


def scaled_shift(sel: NeuronSelection, sigma: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """sigma_i * sign(NMD_i): ITI's per-neuron spread as the shift's size."""
    return _per_neuron(sigma, sel) * torch.sign(sel.nmd.float())


def build(kind: str, sel: NeuronSelection, stats: Mapping[str, SiteStats],
          sigma: Mapping[str, torch.Tensor] | None = None,
          sources: dict[Example, Example] | None = None) -> Intervention:
    """The intervention of ``kind`` on ``sel`` (statistics of the selection split)."""
    if kind == "add":
        return Intervention(kind, sel, shift=sel.nmd.float())
    if kind == "add_scaled":
        if sigma is None:
            raise ValueError("add_scaled: needs the neurons' standard deviations (sigma)")
        return Intervention(kind, sel, shift=scaled_shift(sel, sigma))
    if kind == "set_mean":
        return Intervention(kind, sel, mem_value=_per_neuron(stats, sel, "mean_mem"),
                            gen_value=_per_neuron(stats, sel, "mean_gen"))
    if kind == "ablate":
        return Intervention(kind, sel, direction=sel.nmd.float())
    return Intervention(kind, sel, sources=dict(sources or {}))


def counterparts(groups: Sequence[Sequence[Example]], labels: Sequence[Sequence[Behavior]],
                 items: Sequence[tuple[int, int]]) -> dict[Example, Example]:
    """Each item's paired counterpart: the first variant of its group with the other behaviour
    (MEM <-> GEN); items without one are absent."""
    out = {}
    for g, k in items:
        mine = labels[g][k]
        other = {Behavior.MEM: Behavior.GEN, Behavior.GEN: Behavior.MEM}.get(mine)
        for j, lab in enumerate(labels[g]):
            if j != k and lab == other:
                out[groups[g][k]] = groups[g][j]
                break
    return out


def random_sources(groups: Sequence[Sequence[Example]], labels: Sequence[Sequence[Behavior]],
                   items: Sequence[tuple[int, int]], seed: int = 0) -> dict[Example, Example]:
    """Each item's source for the interchange control: a random item of the *other* behaviour
    (the steering target) from another example of ``items``."""
    rng = random.Random(seed)
    pools = {b: [(g, k) for g, k in items if labels[g][k] == b]
             for b in (Behavior.MEM, Behavior.GEN)}
    out = {}
    for g, k in items:
        target = {Behavior.MEM: Behavior.GEN, Behavior.GEN: Behavior.MEM}.get(labels[g][k])
        pool = [it for it in pools[target] if it[0] != g] if target is not None else []
        if pool:
            sg, sk = rng.choice(pool)
            out[groups[g][k]] = groups[sg][sk]
    return out


def _as_selection(sel: NeuronSelection, shift: torch.Tensor) -> NeuronSelection:
    return NeuronSelection(sites=list(sel.sites), indices=sel.indices, nmd=shift, r=sel.r)


def controls(kind: str, main: Intervention, stats: Mapping[str, SiteStats],
             sigma: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
             random_source_map: dict[Example, Example] | None = None,
             names: Sequence[str] | None = None) -> dict[str, Intervention]:
    """The matched controls of ``main`` (see the module docstring); ``names`` filters the add
    kinds' controls (``analysis.steering.controls``)."""
    sel = main.selection
    out: dict[str, Intervention] = {}
    if kind in ("add", "add_scaled", "set_mean"):
        wanted = [n for n in KIND_CONTROLS[kind] if names is None or n in names]
        # the shift toward MEM whose norm is matched: NMD (add, set_mean) or sigma*sign(NMD)
        shift = (present(main.shift, "shift") if kind != "set_mean"
                 else present(main.mem_value, "mem_value") - present(main.gen_value,
                                                                      "gen_value"))
        for name in wanted:
            if name == "random":
                rnd = matched_random_control(stats, _as_selection(sel, shift), seed)
            elif name == "low_r":
                rnd = low_r_control(stats, sel)
            else:
                rnd = shuffled_control(_as_selection(sel, shift), seed)
            if kind == "add":
                out[name] = Intervention(kind, rnd, shift=rnd.nmd.float())
            elif kind == "add_scaled":
                shifts = (scaled_shift(rnd, sigma) if name == "low_r" and sigma is not None
                          else rnd.nmd.float())
                out[name] = Intervention(kind, rnd, shift=shifts)
            elif name == "low_r":
                out[name] = build("set_mean", rnd, stats)
            else:  # set to the source behaviour's mean plus the matched shift
                mean_gen = _per_neuron(stats, rnd, "mean_gen")
                mean_mem = _per_neuron(stats, rnd, "mean_mem")
                out[name] = Intervention(kind, rnd, mem_value=mean_gen + rnd.nmd.float(),
                                         gen_value=mean_mem - rnd.nmd.float())
    elif kind == "interchange":
        out["random_source"] = Intervention(kind, sel, sources=dict(random_source_map or {}))
    elif kind == "ablate":
        gen = torch.Generator().manual_seed(int(seed))
        out["random_direction"] = Intervention(kind, sel,
                                               direction=torch.randn(len(sel), generator=gen))
    return out
