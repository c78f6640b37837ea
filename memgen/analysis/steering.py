"""Inference-time steering: shift selected neurons by +-alpha*NMD at the last position.

``h[:, -1, i] += alpha * NMD_i`` steers toward MEM and ``-=`` toward GEN, on every forward pass:
the prefill (under LEFT padding position -1 is every prompt's last token) and then each generated
token, whose forward pass has sequence length 1 with the KV cache. ``last_prompt_only`` restricts
the shift to the prefill pass. A pass is the prefill when the KV cache it receives is empty, which
holds for every ``generate`` call and every plain forward; it needs ``use_cache=True`` generation
(the default) and no chunked prefill.

The hooks build new tensors (no in-place writes on the hooked activation) and are always removed,
also when the body raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from memgen.analysis.neurons import NeuronSelection
from memgen.analysis.sites import hook_site, site_width, unwrap

DIRECTIONS: dict[str, float] = {"to_mem": 1.0, "to_gen": -1.0}


@dataclass
class _SiteShift:
    """The shift of one site: coordinates and per-coordinate delta (sign and alpha applied)."""

    indices: torch.Tensor  # [k] long
    delta: torch.Tensor  # [k] float32
    _cache: dict = field(default_factory=dict)

    def on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices and delta on the activation's device and dtype (converted once)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (self.indices.to(like.device),
                                self.delta.to(like.device, like.dtype))
        return self._cache[key]


def _check_alpha_direction(alpha: float, direction: str) -> float:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {sorted(DIRECTIONS)}, got {direction!r}")
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha: expected a finite number, got {alpha!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"alpha: expected a finite number, got {alpha!r}")
    return value


def plan_shifts(model: nn.Module, selection: NeuronSelection, alpha: float, direction: str,
                shifts: torch.Tensor | None = None) -> dict[str, _SiteShift]:
    """Validate the arguments and group ``sign * alpha * shift`` by site."""
    coef = DIRECTIONS.get(direction, 0.0) * _check_alpha_direction(alpha, direction)
    if len(selection) == 0:
        raise ValueError("selection: empty, nothing to steer (select at least one neuron)")
    if len(selection.sites) != len(selection):
        raise ValueError(f"selection: {len(selection.sites)} sites for {len(selection)} indices")
    base = selection.nmd if shifts is None else torch.as_tensor(shifts)
    if base.numel() != len(selection):
        raise ValueError(f"shifts: expected {len(selection)} values, got {base.numel()}")
    base = base.detach().reshape(-1).to(torch.float32).cpu()
    if not torch.isfinite(base).all():
        raise ValueError("shifts: non-finite value in the per-neuron shifts (NMD)")
    keys = selection.keys()
    if len(set(keys)) != len(keys):
        raise ValueError("selection: duplicate (site, index) neurons")
    indices = selection.indices.detach().reshape(-1).long().cpu()
    plan: dict[str, _SiteShift] = {}
    for site in dict.fromkeys(selection.sites):
        try:
            width = site_width(model, site)
        except ValueError as err:
            raise ValueError(f"selection: {err}") from None
        mask = torch.tensor([s == site for s in selection.sites])
        idx = indices[mask]
        if idx.numel() and (idx.min() < 0 or idx.max() >= width):
            raise ValueError(f"selection: index out of range for site '{site}' (width {width})")
        plan[site] = _SiteShift(indices=idx, delta=coef * base[mask])
    return plan


def _decoder(model: nn.Module) -> nn.Module:
    """The decoder stack (GPT-2 ``transformer``, Llama ``model``): it receives the KV cache."""
    base = unwrap(model)
    for name in ("transformer", "model"):
        inner = getattr(base, name, None)
        if isinstance(inner, nn.Module) and (hasattr(inner, "h") or hasattr(inner, "layers")):
            return inner
    raise ValueError(f"unsupported architecture {type(base).__name__}: no decoder stack found")


def _cache_is_empty(cache) -> bool:
    if cache is None:
        return True
    get_length = getattr(cache, "get_seq_length", None)
    if callable(get_length):
        return int(get_length()) == 0
    if isinstance(cache, (tuple, list)):  # legacy ((k, v), ...) format
        return len(cache) == 0 or cache[0][0].shape[-2] == 0
    return False


def _shift_last(shift: _SiteShift, state: dict | None):
    """Hook body: a copy of h with the shift added at position -1 (None = leave h)."""

    def fn(h: torch.Tensor) -> torch.Tensor | None:
        if state is not None and not state["prefill"]:
            return None
        idx, delta = shift.on(h)
        out = h.clone()
        out[:, -1, idx] = h[:, -1, idx] + delta
        return out

    return fn


@contextmanager
def steer(model: nn.Module, selection: NeuronSelection, alpha: float, direction: str,
          last_prompt_only: bool = False, shifts: torch.Tensor | None = None) -> Iterator[None]:
    """Within the block, every forward pass of ``model`` is steered (see the module docstring).

    ``shifts`` [K] replaces ``selection.nmd`` as the per-neuron shift (controls use it); the sign
    of ``direction`` and ``alpha`` multiply it the same way.
    """
    plan = plan_shifts(model, selection, alpha, direction, shifts)
    state = {"prefill": True}
    handles: list[RemovableHandle] = []

    def track_prefill(_module, _args, kwargs):
        state["prefill"] = _cache_is_empty(kwargs.get("past_key_values"))

    try:
        if last_prompt_only:
            handles.append(_decoder(model).register_forward_pre_hook(track_prefill,
                                                                     with_kwargs=True))
        for site, shift in plan.items():
            handles.append(hook_site(model, site,
                                     _shift_last(shift, state if last_prompt_only else None)))
        yield
    finally:
        for handle in handles:
            handle.remove()
