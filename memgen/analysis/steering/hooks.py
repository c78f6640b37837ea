"""Inference-time steering: shift selected neurons by +-alpha*NMD at the last position.

``h[:, -1, i] += alpha * NMD_i`` steers toward MEM and ``-=`` toward GEN, on every forward pass:
the prefill (under LEFT padding position -1 is every prompt's last token) and then each generated
token, whose forward pass has sequence length 1 with the KV cache. ``last_prompt_only`` restricts
the shift to the prefill pass.

What "prefill" rests on: only the public forward contract of Hugging Face causal LMs, read by a
pre-hook on the model's own ``forward`` call. ``attention_mask`` covers the cached positions plus
the new ones, so a pass is the prefill when its new tokens (``input_ids`` or ``inputs_embeds``)
span the whole mask, or when no mask is given (a plain forward). Nothing depends on how
``generate`` hands over its KV cache (that changed in transformers 5.24 and silently made every
generated token steered). Needs ``use_cache=True`` generation (the default: without a cache every
pass re-reads the whole sequence and is steered) and no chunked prefill.

Beam search (``num_beams`` k > 1) runs each prompt's k beams as consecutive rows of every pass
(prefill included) and reorders beams only within their prompt: a shift that is the same for
every row steers each beam like its prompt, and per-prompt values go through :func:`per_row`.

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

    def dense(self, like: torch.Tensor) -> torch.Tensor:
        """The shift as a [D] vector on the activation's device and dtype (zero off the selected
        coordinates), built once per device and dtype.

        Adding a dense vector is one fused op per pass instead of a gather, an add and an
        ``index_put``; adding 0.0 leaves the other coordinates bit-identical.
        """
        key = (like.device, like.dtype, like.shape[-1])
        if key not in self._cache:
            full = torch.zeros(like.shape[-1], dtype=torch.float32)
            full[self.indices] = self.delta
            self._cache[key] = full.to(like.device, like.dtype)
        return self._cache[key]


def per_row(values: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-prompt ``values`` [B, ...] for a pass over ``rows`` rows: under beam search prompt
    b's k beams are rows b*k .. b*k+k-1, so each beam gets its prompt's values."""
    if values.shape[0] == rows:
        return values
    if values.shape[0] == 0 or rows % values.shape[0]:
        raise ValueError(f"per_row: {rows} rows are not beams of {values.shape[0]} prompts")
    return values.repeat_interleave(rows // values.shape[0], dim=0)


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


def _new_tokens(args: tuple, kwargs: dict) -> int | None:
    """How many positions this forward call computes (``input_ids`` or ``inputs_embeds``)."""
    for value in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args[:1]):
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return int(value.shape[1])
    return None


def is_prefill(args: tuple, kwargs: dict) -> bool:
    """A forward call is the prefill when its new tokens cover its whole attention mask.

    Without a mask (``generate`` drops an all-ones mask: a batch without padding), a pass is
    the prefill when its positions (``cache_position`` or ``position_ids``) include 0: every
    sequence starts at 0, and a decoding step's new token never sits there. A pass with neither
    is a plain forward: the prefill.
    """
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
        mask = args[1]  # positional (input_ids, attention_mask)
    new = _new_tokens(args, kwargs)
    if isinstance(mask, torch.Tensor) and new is not None:
        return new >= int(mask.shape[-1])
    for key in ("cache_position", "position_ids"):
        positions = kwargs.get(key)
        if isinstance(positions, torch.Tensor) and positions.numel():
            return bool((positions == 0).any())
    return True


def _shift_last(shift: _SiteShift, state: dict | None):
    """Hook body: a new tensor equal to h with the shift added at position -1 (None = leave h).

    A decoding pass (sequence length 1) is a single ``h + shift``; the prefill copies h once and
    adds the shift in place on that fresh copy's last position. The hooked activation itself is
    never written.
    """

    def fn(h: torch.Tensor) -> torch.Tensor | None:
        if state is not None and not state["prefill"]:
            return None
        dense = shift.dense(h)
        if h.shape[1] == 1:
            return h + dense
        out = h.clone()
        out[:, -1].add_(dense)
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

    def track_prefill(_module, args, kwargs):
        state["prefill"] = is_prefill(args, kwargs)

    try:
        if last_prompt_only:
            # the wrapper's forward (a peft model called directly) and the transformers model's
            # (``generate`` calls it, and peft's forward reaches it without its hooks)
            for module in dict.fromkeys((model, unwrap(model))):
                handles.append(module.register_forward_pre_hook(track_prefill,
                                                                with_kwargs=True))
        for site, shift in plan.items():
            handles.append(hook_site(model, site,
                                     _shift_last(shift, state if last_prompt_only else None)))
        yield
    finally:
        for handle in handles:
            handle.remove()
